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
never as a stale success. ``locked(out)`` holds a folder for one build (a lock file beside it),
and ``check_inputs_outside`` refuses an input the publishing would remove.
"""

from __future__ import annotations

import fcntl
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


def refuse_a_build(out: Path, option: str, command: str, fix: str) -> None:
    """Refuse an output folder that holds a build (its ``report.json``): ``command``'s outputs there would
    replace or mix with that build's. ``fix``: where its outputs go instead."""
    if (Path(out) / "report.json").is_file():
        raise EdgefreeError(f"{option} {out} holds a build (report.json), which {command} would replace or mix "
                            f"its outputs into: {fix}")
    real = Path(os.path.realpath(out))
    inside = next((f for f in (real, *real.parents) if f.name == "artifacts" and "artifacts" in written_entries(f.parent)
                   and (f.parent / "report.json").is_file()), None)
    if inside is not None:  # a build's artifacts hold only what its export writes (``refuse_foreign_files``)
        raise EdgefreeError(f"{option} {out} lies in the artifacts of the build in {inside.parent}, which hold only "
                            f"what its export writes ({command} would leave that build unusable): {fix}")


def check_out_folder(out: str | Path, names: tuple[str, ...] = (), option: str = "--out") -> Path:
    """Check, before any work, that ``out`` can take the entries ``names``; returns it absolute.

    Raises EdgefreeError when ``out`` is a file, cannot be created or written, or holds one of
    ``names`` that edgefree did not write there.
    """
    out = absolute(out)
    if out.exists() and not out.is_dir():
        raise EdgefreeError(f"{option} {out} is a file, not a folder: pass a folder (it is created if missing)")
    if out.parent == out:
        raise EdgefreeError(f"{option} {out} is the file system's root: the build writes beside --out, so pass a "
                            "folder inside another (e.g. /tmp/edgefree-out)")
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


def check_inputs_outside(out: str | Path, inputs: dict[str, str | Path | None], names: tuple[str, ...]) -> None:
    """Refuse, before any work, an input file (``inputs``: option -> path) that lies in an entry of ``out``
    the command replaces (``names``, and every entry an earlier command wrote there): publishing would
    remove the very file the command read."""
    out = absolute(out)
    replaced = set(names) | set(written_entries(out))
    real_out = Path(os.path.realpath(out))
    for option, path in inputs.items():
        if path is None or not os.path.lexists(absolute(path)):
            continue
        try:
            entry = Path(os.path.realpath(absolute(path))).relative_to(real_out).parts[0]
        except (ValueError, IndexError):  # outside out, or out itself
            continue
        if entry in replaced:
            raise EdgefreeError(f"{option} {path} lies in {out}, and this command replaces its {entry}: copy the "
                                "file out of that folder first, or pass another --out")


@contextmanager
def locked(out: str | Path, command: str = "build"):
    """Hold ``out`` for one command: an exclusive lock (``fcntl.flock``) on ``.NAME.edgefree-lock`` beside it.

    A second command on the same folder stops at once with one line naming the first (its pid).
    The lock file is removed when the command ends (success, failure, Ctrl-C); a killed process's
    lock is released by the system, and its file, left behind, is taken over by the next command.
    Folders above ``out`` created to hold the lock are removed again if the command leaves them empty.
    """
    out = absolute(out)
    created = [p for p in reversed(out.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    path = _lock_path(out)
    try:
        fd = _lock(path, out, command)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield
    finally:
        os.unlink(path)  # before the lock is released: a command waiting on this file finds it gone and retries
        os.close(fd)
        _remove_empty(created)


def _lock_path(out: Path) -> Path:
    """The lock beside the folder ``out`` names, its links followed (two names of one folder share one lock),
    or beside ``out`` as named where the folder holding the real one cannot be written to."""
    real = Path(os.path.realpath(out))
    where = real if os.access(real.parent, os.W_OK | os.X_OK) else out
    return where.parent / f".{where.name}.edgefree-lock"


def _lock(path: Path, out: Path, command: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock, with this process named in the file."""
    from datetime import datetime

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a process"
            os.close(fd)
            raise EdgefreeError(f"{out} is being written by another edgefree command ({holder}): wait until it "
                                "ends, or pass another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the holder removed it between our open and lock
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"edgefree {command}, pid {os.getpid()}, since {datetime.now().strftime('%H:%M:%S')}".encode())
    return fd


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (the command's outputs are in it), or already gone
            return


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


def remove_leftovers(out: str | Path) -> None:
    """Remove what killed processes left beside ``out``: their staging folders, and a lock file no process
    holds. For a launcher whose processes were stopped before they could clean up."""
    out = absolute(out)
    remove_stale(out)
    path = _lock_path(out)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:  # none left
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)  # held now by nobody else: a leftover
    except OSError:  # a live command holds it
        pass
    finally:
        os.close(fd)


def _scratch(out: Path, tag: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f".{out.name}.edgefree-{tag}-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the output folder's mode
    return path


def claim(folder: Path, name: str) -> None:
    """List ``name`` (an entry edgefree just published inside ``folder``, e.g. a build's ``bench-<target>/``)
    among ``folder``'s own entries, so the next build into ``folder`` replaces it with the rest; not where
    ``name`` also holds entries its own marker does not list (the user's)."""
    inside = set(os.listdir(folder / name)) - {MARKER}
    if inside <= set(written_entries(folder / name)):  # a folder holding files of the user's stays theirs
        add_entry(folder, name)


def add_entry(folder: Path, name: str) -> None:
    """List ``name``, which edgefree moved into the complete ``folder`` after publishing it, among its entries."""
    entries = written_entries(folder)
    if is_complete(folder) and name not in entries:
        _write_marker(folder, [*entries, name])


def _write_marker(folder: Path, entries: list[str]) -> None:
    from edgefree import __version__

    tmp = folder / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"complete": True, "written_by": f"edgefree {__version__}",
                               "entries": sorted(entries)}, indent=2))
    tmp.replace(folder / MARKER)


def publish(staging: Path, out: Path, replace: bool, retire: tuple[str, ...] = ()) -> None:
    """Move ``staging``'s entries into ``out``.

    ``replace=True``: the entries edgefree wrote into ``out`` before and did not stage now are
    removed (a build's outputs replace the previous build's, all of them); ``False``: they stay
    (``bench`` adds bench.json to a build), but those named in ``retire`` (what the new entries make
    stale). The user's own entries stay in every case.
    """
    new = sorted(p.name for p in staging.iterdir() if p.name != MARKER)
    if not os.path.lexists(out) or (out.is_dir() and not any(out.iterdir())):
        _write_marker(staging, new)
        os.rename(staging, out)  # one rename: the folder appears complete or not at all
        return
    _refuse_foreign(out, new, "the output folder")
    ours = written_entries(out)
    old = [n for n in ours if (replace or n in new or n in retire) and os.path.lexists(out / n)]
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
            _write_marker(out, new if replace else sorted((set(ours) - set(retire)) | set(new)))
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
def staged(out: str | Path, replace: bool = True, retire: tuple[str, ...] = ()):
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
        publish(staging, out, replace, retire)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
