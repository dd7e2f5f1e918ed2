"""Where edgefree keeps things it derives once (decoded data sets, exported teachers, the arm64 root)."""

import json
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$EDGEFREE_CACHE`` or ``~/.cache/edgefree``, with ``parts`` appended and created."""
    root = Path(os.environ.get("EDGEFREE_CACHE") or Path.home() / ".cache" / "edgefree")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_entry(path: Path) -> dict | None:
    """The JSON object cached in ``path``; None where it is missing or damaged (a cache entry is derived
    again, never trusted half-written)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_entry(path: Path, value: dict, indent: int | None = None) -> None:
    """Write ``value`` to ``path`` whole or not at all, through a file of this process's own (two builds
    may store the same entry at once; the last one to finish stays)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=indent, default=str))
    tmp.replace(path)
