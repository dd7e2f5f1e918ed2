"""``manifest.json``: what was built, where, how big (dense and packed), and how well it matches PyTorch.

The schema is shared with ``bench/runner.py`` and the flash stage: paths are relative to
the manifest; every file has a packed ``.efpk`` twin that ``unpack.py`` rebuilds bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefree.export.packing import pack_file
from edgefree.export.unpack import sha256_file

SCHEMA = 1
MANIFEST = "manifest.json"


def describe_files(files: list[Path], folder: Path) -> list[dict]:
    """Pack each file and describe both forms (path relative to ``folder``, bytes, sha256)."""
    described = []
    for path in files:
        packed = pack_file(path)
        described.append({"path": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size,
                          "sha256": sha256_file(path), "packed_path": packed.relative_to(folder).as_posix(),
                          "packed_bytes": packed.stat().st_size, "packed_sha256": sha256_file(packed)})
    return described


def artifact_entry(name: str, fmt: str, precision: str, runtime: str, files: list[dict], **figures) -> dict:
    """One manifest artifact: the contract's keys, then ``figures`` (parity, accuracy, versions, ...)."""
    return {"name": name, "format": fmt, "precision": precision, "runtime": runtime, "batch": 1,
            "files": files, "entry": files[0]["path"], "bytes": sum(f["bytes"] for f in files),
            "packed_bytes": sum(f["packed_bytes"] for f in files), **figures}


def write_manifest(manifest: dict, folder: Path) -> Path:
    """Write ``folder/manifest.json`` atomically: a manifest present is a manifest complete."""
    path = folder / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(path)
    return path
