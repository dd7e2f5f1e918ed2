"""Where edgefree keeps things it derives once (decoded data sets, exported teachers, the arm64 root)."""

import json
import os
import re
import shutil
from dataclasses import dataclass
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


def arm64_home(create: bool = False) -> Path:
    """Where the arm64 root is: ``$EDGEFREE_ARM64_HOME``, else the cache's ``arm64`` folder (created where
    ``create``)."""
    chosen = os.environ.get("EDGEFREE_ARM64_HOME")
    if chosen:
        return Path(chosen)
    return cache_dir("arm64") if create else cache_root()[0] / "arm64"


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


# What each of the cache's folders holds, and how it comes back once removed.
FOLDERS = {
    "dreams": "synthetic image sets (dreamed again by the next build)",
    "data": "decoded evaluation sets (decoded again)",
    "teacher-artifacts": "teachers exported for bench (exported again)",
    "latency": "per-layer latency tables (measured again)",
    "arm64": "the arm64 root for emulated runs (only `edgefree emulator setup` prepares it again)",
}
DERIVED = tuple(name for name in FOLDERS if name != "arm64")  # what a build derives again by itself
# The names edgefree gives what it writes in each folder (with the temporary names they are written under):
# pipeline's dream sets, data's decoded sets, bench.teacher's exports, latency_tables' runtime folders.
# Anything else found there is the user's, and stays; the arm64 root is edgefree's whole.
_ENTRIES = {
    "dreams": re.compile(r"synthetic-[0-9a-f]{16}\.pt(\.\d+\.part)?"),
    "data": re.compile(r".+-[0-9a-f]{16}\.npz(\.\d+\.part)?"),
    "teacher-artifacts": re.compile(r"[0-9a-f]{16}(\.\d+\.partial)?"),
    "latency": re.compile(r"(onnxruntime|openvino|executorch)-[^/]+"),
    "arm64": re.compile(r".*", re.S),
}


@dataclass(frozen=True)
class CacheFolder:
    """One of the cache's folders: edgefree's ``files`` in it, of ``size`` bytes in all (0 and 0 where it is
    missing); files of the user's there are not counted."""

    name: str
    path: Path
    holds: str
    files: int
    size: int


def _entries(name: str, path: Path) -> list[Path]:
    """What edgefree wrote in the cache folder ``name`` at ``path`` (a link to a folder: in the folder)."""
    try:
        return sorted(path / e for e in os.listdir(path) if _ENTRIES[name].fullmatch(e))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _usage(entries: list[Path]) -> tuple[int, int]:
    files = size = 0
    for entry in entries:
        walked = [(str(entry.parent), [], [entry.name])] if not entry.is_dir() or entry.is_symlink() else os.walk(entry)
        for folder, _, names in walked:  # links inside are counted, never followed
            for name in names:
                try:
                    size += os.lstat(os.path.join(folder, name)).st_size
                    files += 1
                except OSError:  # removed while counted
                    pass
    return files, size


def cache_folders() -> list[CacheFolder]:
    """Each of the cache's folders, with how many files edgefree keeps there and their size.

    Example:
        >>> [folder.name for folder in cache_folders()]
        ['dreams', 'data', 'teacher-artifacts', 'latency', 'arm64']
    """
    root = cache_root()[0]
    found = []
    for name, holds in FOLDERS.items():
        path = arm64_home() if name == "arm64" else root / name
        found.append(CacheFolder(name, path, holds, *_usage(_entries(name, path))))
    return found


def clear_cache(names=DERIVED) -> list[CacheFolder]:
    """Remove what edgefree keeps in the cache's folders ``names`` (default: all a build derives again, not the
    arm64 root); files of the user's there stay. Returns what was removed. A build running meanwhile may fail
    on a file removed under it: clear between builds. The arm64 root of ``$EDGEFREE_ARM64_HOME`` is a folder
    of the user's choosing and is never removed here."""
    from edgefree.errors import EdgefreeError

    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in FOLDERS]
    if unknown:
        raise EdgefreeError(f"the cache has no folder {', '.join(map(repr, unknown))}: name any of "
                            f"{', '.join(FOLDERS)}")
    if "arm64" in names and os.environ.get("EDGEFREE_ARM64_HOME"):
        raise EdgefreeError(f"the arm64 root is $EDGEFREE_ARM64_HOME ({os.environ['EDGEFREE_ARM64_HOME']}), a "
                            "folder of your own: remove it yourself, or unset the variable to clear the cache's")
    cleared = [folder for folder in cache_folders() if folder.name in names]
    for folder in cleared:
        for entry in _entries(folder.name, folder.path):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, onerror=_writable_then_again)
            else:
                entry.unlink(missing_ok=True)
    return cleared


def _writable_then_again(function, path, _) -> None:
    """Remove ``path`` once more after making its folder writable (the arm64 root has read-only folders)."""
    os.chmod(os.path.dirname(path), 0o700)
    function(path)
