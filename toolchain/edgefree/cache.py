"""Where edgefree keeps things it derives once (decoded data sets, exported teachers, the arm64 root)."""

import json
import os
from pathlib import Path


def cache_root() -> tuple[Path, str]:
    """The cache's folder, ``$EDGEFREE_CACHE`` or ``~/.cache/edgefree``, and what set it (for an error line)."""
    chosen = os.environ.get("EDGEFREE_CACHE")
    return (Path(chosen), "$EDGEFREE_CACHE") if chosen else (Path.home() / ".cache" / "edgefree", "the cache")


def cache_dir(*parts: str) -> Path:
    """``$EDGEFREE_CACHE`` or ``~/.cache/edgefree``, with ``parts`` appended and created."""
    path = cache_root()[0].joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def writable_folder(folder: str | Path, name: str) -> Path:
    """``folder``, created if missing, or one line naming it (as ``name``: the variable or option that set it)
    when it is a file or cannot be created or written to. Commands check their caches with it before any work.

    Example:
        >>> import tempfile
        >>> writable_folder(tempfile.mkdtemp(), "$EDGEFREE_CACHE").is_dir()
        True
    """
    from edgefree.errors import EdgefreeError

    path = Path(folder)
    try:
        if path.exists() and not path.is_dir():
            raise EdgefreeError(f"{name} {path} is a file, not a folder: point it at a folder (it is created if "
                                "missing)")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgefreeError(f"{name} {path} cannot be created ({exc.strerror or exc}): point it at a folder you can "
                            "write to") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise EdgefreeError(f"{name} {path} is not writable: point it at a folder you can write to")
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
