"""The dense teacher's artifacts and bench rows, for a fair comparison, computed once per teacher.

The teacher is exported by the same export as the student (same formats, precisions,
settings; INT8 calibrated on synthetic images), into ``cache_dir("teacher-artifacts", KEY)``.
KEY is the teacher's weights, the export settings, the evaluation set's identity (name and
a hash of its images and labels), the runtime versions and edgefree's version: everything
the artifacts, their parity and their top-1 depend on. It leaves out the recipe: a second
build of the same teacher with another recipe reuses the export, whose INT8 artifacts stay
calibrated on the synthetic images of the build that first exported them (any dreams of
this teacher are its own images; the manifest names the calibration set by its sha256).

Beside the manifest, ``bench-rows.json`` keeps the teacher's bench rows (latency and
top-1 per runtime), keyed by everything that shapes them: the bench settings, the thread
count, the artifacts benched, the teacher's export (its KEY), its PyTorch top-1 and this
machine's CPU and cores. Only rows whose timing settled are kept. A second build pays for neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import edgefree
from edgefree.cache import cache_dir, read_entry, write_entry
from edgefree.config import ExportConfig
from edgefree.data import EvalData
from edgefree.digests import state_sha256, tensor_bytes
from edgefree.errors import EdgefreeError, warn
from edgefree.machine import versions
from edgefree.models import Teacher
from edgefree.recover import SyntheticSet

ROWS = "bench-rows.json"


@dataclass(frozen=True)
class TeacherArtifacts:
    """Where the teacher's export is, under which key, and what this call paid for it."""

    manifest: Path
    key: str
    cached: bool  # True: found in the cache, nothing exported by this call
    seconds: float

    def to_dict(self) -> dict:
        return {"manifest": str(self.manifest), "key": self.key, "cached": self.cached, "seconds": self.seconds}


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def eval_identity(eval_data: EvalData | None) -> dict | None:
    """The evaluation set's name, size and a hash of its pixels (or raw values) and labels (None without one)."""
    if eval_data is None:
        return None
    digest = hashlib.sha256(tensor_bytes(eval_data.stored))
    digest.update(tensor_bytes(eval_data.labels))
    return {"name": eval_data.name, "images": len(eval_data), "sha256": digest.hexdigest()}


def teacher_key(teacher: Teacher, config: ExportConfig, eval_data: EvalData | None) -> str:
    """The cache key of the teacher's export (see the module's docstring for what it holds)."""
    weights = state_sha256(teacher.module.state_dict())
    return _digest(weights.digest(), teacher.spec.to_dict(), config.to_dict(), eval_identity(eval_data), versions(),
                   edgefree.__version__)


def _intact(folder: Path) -> bool:
    """Whether the cached export in ``folder`` still holds every file its manifest lists, as it wrote them; a
    damaged one is named in one line and removed (exported again)."""
    from edgefree.verify import read_manifest, verify_artifacts

    try:
        verify_artifacts(read_manifest(folder / "manifest.json"), folder)
        return True
    except EdgefreeError as exc:
        reason = str(exc).split(":", 1)[0]  # the file and what is wrong with it, without the fix for a build
        warn(f"the teacher's cached export is damaged ({reason}): removed, exporting it again")
        shutil.rmtree(folder, ignore_errors=True)
        return False


def export_teacher(teacher: Teacher, config: ExportConfig, calibration: SyntheticSet,
                   eval_data: EvalData | None = None, reference_accuracy: float | None = None,
                   progress: bool = False) -> TeacherArtifacts:
    """Export the dense teacher like the student, or reuse the cached export of the same key.

    ``reference_accuracy``: the PyTorch teacher's top-1 on ``eval_data`` when the caller has it.

    Usage, on a finished build::

        found = export_teacher(teacher, ExportConfig().for_target(target),
                               SyntheticSet.load("edgefree-out/synthetic.pt"))
        found.manifest.name, found.cached  # ('manifest.json', True)
    """
    from edgefree.export import export_student

    started = time.perf_counter()
    key = teacher_key(teacher, config, eval_data)
    folder = cache_dir("teacher-artifacts") / key
    cached = (folder / "manifest.json").is_file() and _intact(folder)
    if not cached:  # exported into a folder of this process's own: two builds may export one teacher at once
        partial = folder.with_name(f"{key}.{os.getpid()}.partial")
        try:
            export_student(teacher.module, teacher.spec, config, partial, calibration, eval_data, reference_accuracy,
                           progress, label="teacher", arch=teacher.name)
            try:
                partial.rename(folder)  # complete or absent: never a half export under the final name
            except OSError:  # the folder is there: another build's complete export of the same key came first
                if not (folder / "manifest.json").is_file() or not _intact(folder):
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return TeacherArtifacts(folder / "manifest.json", key, cached, round(time.perf_counter() - started, 2))


def rows_key(settings: dict) -> str:
    """The key of one set of bench rows: a hash of everything that shaped them."""
    return _digest(settings)


def cached_rows(manifest: Path, key: str) -> dict | None:
    """``{"rows", "measured_at", "load_average_1min"}`` stored beside ``manifest`` under ``key``, or None
    (none stored, or a damaged file)."""
    return (read_entry(Path(manifest).with_name(ROWS)) or {}).get(key)


def store_rows(manifest: Path, key: str, entry: dict) -> None:
    """Keep ``entry`` beside ``manifest`` under ``key`` (written atomically; a damaged file is started anew)."""
    path = Path(manifest).with_name(ROWS)
    write_entry(path, {**(read_entry(path) or {}), key: entry}, indent=2)
