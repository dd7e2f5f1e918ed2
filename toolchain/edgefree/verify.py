"""Verify before trusting: a build folder's files against the sha256 its report and manifest record.

``build`` records in ``report.json`` the sha256 of each of ``RECORDED`` it wrote (the student's
weights, plan and program, the dreams, ``artifacts/manifest.json``) and of the teacher checkpoint;
the manifest records every artifact file's. ``bench``, ``export`` and ``flash`` call ``read_build`` and
``verify_artifacts`` before they use any of them: a file altered or cut short is refused
with its name.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefree.errors import EdgefreeError, IntegrityError
from edgefree.export.unpack import sha256_file as sha256
from edgefree.outfolder import MARKER, is_complete

RECORDED = ("student.pt", "student-plan.json", "student.pt2", "synthetic.pt", "artifacts/manifest.json")


def record_files(folder: Path) -> dict[str, str]:
    """sha256 of the recorded files present in ``folder`` (paths relative to it)."""
    return {name: sha256(folder / name) for name in RECORDED if (folder / name).is_file()}


def verify_file(path: Path, expected: str | None, fix: str) -> None:
    """Raise IntegrityError naming ``path`` when it is missing or its sha256 is not ``expected``."""
    if expected is None:
        return
    if not path.is_file():
        raise IntegrityError(f"{path} is missing: {fix}")
    if sha256(path) != expected:
        raise IntegrityError(f"{path} was changed after it was written (its sha256 differs from the one "
                             f"recorded): {fix}")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EdgefreeError(f"{path} cannot be read as JSON ({exc}): rebuild the folder") from exc
    if not isinstance(value, dict):
        raise EdgefreeError(f"{path} holds a JSON {type(value).__name__}, not an object: rebuild the folder")
    return value


def _require_keys(value: dict, kinds: dict[str, type], path: Path, fix: str) -> None:
    """Raise EdgefreeError naming ``path`` when ``value`` lacks one of ``kinds`` or holds another kind there."""
    wrong = [key for key, kind in kinds.items() if not isinstance(value.get(key), kind)]
    if wrong:
        raise EdgefreeError(f"{path} lacks {', '.join(repr(k) for k in wrong)} as edgefree writes it (not a file "
                            f"edgefree wrote, or edited since): {fix}")


def read_manifest(path: Path) -> dict:
    """The artifacts manifest at ``path``, each artifact with its name, format, precision, runtime and files."""
    manifest = read_json(path)
    fix = "export again (`edgefree export`) or rebuild"
    _require_keys(manifest, {"artifacts": list}, path, fix)
    for artifact in manifest["artifacts"]:
        _require_keys(artifact if isinstance(artifact, dict) else {}, {"name": str, "format": str, "precision": str,
                                                                       "runtime": str, "files": list}, path, fix)
        for f in artifact["files"]:
            _require_keys(f if isinstance(f, dict) else {}, {"path": str, "sha256": str}, path, fix)
    return manifest


def read_build(build_dir: Path, uses: tuple[str, ...] = RECORDED) -> dict:
    """The report of the complete build in ``build_dir``, after checking the files in ``uses``.

    Raises EdgefreeError when the folder holds no complete build, IntegrityError when one of
    ``uses`` differs from the sha256 the report recorded for it.
    """
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise EdgefreeError(f"{build_dir} is not a folder: pass the --out folder of an `edgefree build`")
    if not (build_dir / "report.json").is_file():
        raise EdgefreeError(f"{build_dir} holds no finished build (no report.json): pass the --out folder of an "
                            "`edgefree build` (`edgefree build --out DIR` makes one)")
    if not is_complete(build_dir):
        raise EdgefreeError(f"{build_dir} holds no complete build (no {MARKER}: it was cut short, or made by an "
                            f"older edgefree): run `edgefree build --out {build_dir}` again")
    report = read_json(build_dir / "report.json")
    _require_keys(report, {"config": dict, "model": dict, "target": dict}, build_dir / "report.json", f"rebuild {build_dir}")
    _require_keys(report["target"], {"name": str}, build_dir / "report.json", f"rebuild {build_dir}")
    recorded = report.get("files") or {}
    for name in uses:
        if name not in recorded and (name != "artifacts/manifest.json" or report.get("export")):
            raise IntegrityError(f"{build_dir / 'report.json'} records no sha256 for {name}: rebuild {build_dir}")
        fix = f"rebuild {build_dir}" if not name.startswith("artifacts/") else \
            f"export it again (edgefree export {build_dir}) or rebuild {build_dir}"
        verify_file(build_dir / name, recorded.get(name), fix)
    return report


def verify_artifacts(manifest: dict, folder: Path, artifacts: list[dict] | None = None) -> None:
    """Check every file of ``artifacts`` (default: all the manifest lists) against its sha256.

    Packed twins (``.efpk``) are checked too where present; they are what flash sends.
    """
    for artifact in manifest["artifacts"] if artifacts is None else artifacts:
        for f in artifact["files"]:
            verify_file(folder / f["path"], f["sha256"], "export again (`edgefree export`) or rebuild")
            packed = f.get("packed_path") and folder / f["packed_path"]
            if packed and packed.exists():
                verify_file(packed, f["packed_sha256"], "export again (`edgefree export`) or rebuild")


def teacher_checkpoint(report: dict, model: str | Path | None = None) -> Path | None:
    """The teacher checkpoint of the build ``report`` describes (None: the built-in default), checked.

    ``model`` names where the teacher is now, when it moved; it must be the same file (sha256).
    """
    from edgefree.outfolder import absolute

    recorded = report["config"].get("model")
    if recorded is None:
        if model is not None:
            raise EdgefreeError("this build used the built-in default teacher, which has no checkpoint: "
                                "leave out --model")
        return None
    path = absolute(model) if model is not None else Path(recorded)
    if not path.is_file():
        raise EdgefreeError(f"the build's teacher {path} is not there{' (or is a folder)' if path.exists() else ''}: "
                            "if it moved, pass --model with its new path")
    expected = report["model"].get("sha256")
    if expected is not None and sha256(path) != expected:
        raise IntegrityError(f"{path} is not the teacher this build was made from (its sha256 differs from the "
                             f"one the report recorded for {recorded}): pass --model with the build's teacher")
    return path


def relocate_teacher(report: dict, path: Path | None) -> dict:
    """``report`` with the teacher's checkpoint recorded at ``path`` (where it is now)."""
    if path is None or str(path) == report["config"].get("model"):
        return report
    return {**report, "config": {**report["config"], "model": str(path)},
            "model": {**report["model"], "source": str(path)}}
