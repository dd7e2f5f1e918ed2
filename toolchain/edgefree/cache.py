"""Where edgefree keeps things it derives once (decoded data sets, exported teachers, the arm64 root)."""

import json
import os
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


@dataclass(frozen=True)
class CacheFolder:
    """One of the cache's folders: ``files`` files of ``size`` bytes in all (0 and 0 where it is missing)."""

    name: str
    path: Path
    holds: str
    files: int
    size: int


def _arm64_home() -> Path:
    """Where the arm64 root is (``$EDGEFREE_ARM64_HOME``, else the cache's arm64 folder), created by nothing."""
    chosen = os.environ.get("EDGEFREE_ARM64_HOME")
    return Path(chosen) if chosen else cache_root()[0] / "arm64"


def _usage(path: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(path):  # links are counted, never followed
        for name in names:
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
                files += 1
            except OSError:  # removed while counted
                pass
    return files, size


def cache_folders() -> list[CacheFolder]:
    """Each of the cache's folders, with how many files it holds and their size.

    Example:
        >>> [folder.name for folder in cache_folders()]
        ['dreams', 'data', 'teacher-artifacts', 'latency', 'arm64']
    """
    root = cache_root()[0]
    found = []
    for name, holds in FOLDERS.items():
        path = _arm64_home() if name == "arm64" else root / name
        found.append(CacheFolder(name, path, holds, *_usage(path)))
    return found


def clear_cache(names=DERIVED) -> list[CacheFolder]:
    """Remove the cache's folders ``names`` (default: all a build derives again, not the arm64 root); returns
    what each held. A build running meanwhile may fail on a file removed under it: clear between builds.
    The arm64 root of ``$EDGEFREE_ARM64_HOME`` is a folder of the user's choosing and is never removed here."""
    from edgefree.errors import EdgefreeError

    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in FOLDERS]
    if unknown:
        raise EdgefreeError(f"the cache has no folder {', '.join(map(repr, unknown))}: name any of "
                            f"{', '.join(FOLDERS)}")
    if "arm64" in names and os.environ.get("EDGEFREE_ARM64_HOME"):
        raise EdgefreeError(f"the arm64 root is $EDGEFREE_ARM64_HOME ({_arm64_home()}), a folder of your own: "
                            "remove it yourself, or unset the variable to clear the cache's")
    cleared = [folder for folder in cache_folders() if folder.name in names]
    for folder in cleared:
        if folder.path.is_symlink():
            folder.path.unlink()  # the link only, never what it points to
        elif folder.path.exists():
            shutil.rmtree(folder.path, onerror=_writable_then_again)
    return cleared


def _writable_then_again(function, path, _) -> None:
    """Remove ``path`` once more after making its folder writable (the arm64 root has read-only folders)."""
    os.chmod(os.path.dirname(path), 0o700)
    function(path)
