"""Output folders that change only when the work that fills them succeeded.

Every command that writes into a folder (``build --out``, ``export``, ``bench``, ``flash``)
writes into a fresh staging folder beside it, ``.<name>.edgefree-stage-<pid>-<random>``
(same parent, so moving its entries in is a rename on one file system), and publishes
the staged entries only once everything succeeded::

    with staged(out, replace=True) as folder:
        ...write report.json, student.pt, artifacts/ into folder...
    # here, and only here, out holds the new entries

A failure or an interrupt (exception, Ctrl-C) removes the staging folder and leaves ``out``
as it was; a killed process leaves its staging folder behind, and the next command on the
same folder removes it. ``out/.edgefree-complete`` lists the entries edgefree wrote: a
folder with it is complete, and entries it does not list (the user's own files) are never
moved, replaced or removed: a command that would have to replace one refuses at the door.
Publishing holds Ctrl-C and SIGTERM back during the swap, puts the previous entries back if a
rename fails, removes the marker first and writes it last: only SIGKILL in the moment of the
swap (a few renames) can leave a folder without its marker, which then reads incomplete,
never as a stale success.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from edgefree.errors import EdgefreeError

MARKER = ".edgefree-complete"
_TAGS = ("stage", "old")


def absolute(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, made absolute (symlinks kept: the path the user named)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def written_entries(folder: Path) -> list[str]:
    """The entries edgefree wrote into ``folder`` (from its marker; [] when it has none)."""
    try:
        return list(json.loads((folder / MARKER).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def is_complete(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def check_out_folder(out: str | Path, names: tuple[str, ...] = (), option: str = "--out") -> Path:
    """Check, before any work, that ``out`` can take the entries ``names``; returns it absolute.

    Raises EdgefreeError when ``out`` is a file, cannot be created or written, or holds one of
    ``names`` that edgefree did not write there.
    """
    out = absolute(out)
    if out.exists() and not out.is_dir():
        raise EdgefreeError(f"{option} {out} is a file, not a folder: pass a folder (it is created if missing)")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise EdgefreeError(f"{option} {out} cannot be created: {parent} is not a folder")
    writable = out.parent if out.parent.exists() else parent
    if not os.access(writable, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK | os.X_OK)):
        raise EdgefreeError(f"{option} {out} is not writable (edgefree writes beside it, in {writable}, then "
                            "moves its outputs in): pass a folder you can write to")
    _refuse_foreign(out, names, option)
    return out


def _refuse_foreign(out: Path, names, option: str) -> None:
    if not out.is_dir():
        return
    ours = set(written_entries(out))
    foreign = sorted(n for n in names if n not in ours and os.path.lexists(out / n))
    if foreign:
        raise EdgefreeError(f"{option} {out} already holds {', '.join(foreign)}, which no {MARKER} there lists "
                            "as edgefree's (a file of yours, or a build by an older edgefree): move it away, or "
                            f"pass another {option}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove staging folders beside ``out`` left by processes that are gone (killed); returns them."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for tag in _TAGS:
        for path in out.parent.glob(f".{out.name}.edgefree-{tag}-*"):
            pid = path.name.removeprefix(f".{out.name}.edgefree-{tag}-").split("-")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _scratch(out: Path, tag: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f".{out.name}.edgefree-{tag}-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the output folder's mode
    return path


def _write_marker(folder: Path, entries: list[str]) -> None:
    from edgefree import __version__

    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"complete": True, "written_by": f"edgefree {__version__}",
                               "entries": sorted(entries)}, indent=2))
    tmp.replace(folder / MARKER)


def publish(staging: Path, out: Path, replace: bool) -> None:
    """Move ``staging``'s entries into ``out``.

    ``replace=True``: the entries edgefree wrote into ``out`` before and did not stage now are
    removed (a build's outputs replace the previous build's, all of them); ``False``: they stay
    (``bench`` adds bench.json to a build). The user's own entries stay in both cases.
    """
    new = sorted(p.name for p in staging.iterdir() if p.name != MARKER)
    if not os.path.lexists(out) or (out.is_dir() and not any(out.iterdir())):
        _write_marker(staging, new)
        os.rename(staging, out)  # one rename: the folder appears complete or not at all
        return
    _refuse_foreign(out, new, "the output folder")
    ours = written_entries(out)
    old = [n for n in ours if (replace or n in new) and os.path.lexists(out / n)]
    marker = (out / MARKER).read_bytes() if (out / MARKER).is_file() else None
    trash = _scratch(out, "old")
    moved_old, moved_new = [], []
    with _signals_deferred():  # Ctrl-C during the swap arrives after it: the folder is old or new, never mixed
        try:
            (out / MARKER).unlink(missing_ok=True)
            for name in old:
                os.rename(out / name, trash / name)
                moved_old.append(name)
            for name in new:
                os.rename(staging / name, out / name)
                moved_new.append(name)
            _write_marker(out, new if replace else sorted(set(ours) | set(new)))
        except BaseException:  # put the previous outputs back, then fail
            for name in reversed(moved_new):
                os.rename(out / name, staging / name)
            for name in reversed(moved_old):
                os.rename(trash / name, out / name)
            if marker is not None:
                (out / MARKER).write_bytes(marker)
            raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM held back (delivered on exit) where the platform and thread allow it."""
    held = {signal.SIGINT, signal.SIGTERM}
    can = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if can:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        if can:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


@contextmanager
def staged(out: str | Path, replace: bool = True):
    """A fresh folder beside ``out`` to write into; published into ``out`` when the block succeeds.

    Example:
        >>> with staged(Path("/tmp/ef-out")) as folder:  # doctest: +SKIP
        ...     (folder / "report.json").write_text("{}")
    """
    out = absolute(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    try:
        staging = _scratch(out, "stage")
    except OSError as exc:
        raise EdgefreeError(f"cannot write beside {out} ({exc.strerror}): pass a folder you can write to") from exc
    try:
        yield staging
        publish(staging, out, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
