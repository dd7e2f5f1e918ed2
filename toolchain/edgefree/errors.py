"""Errors a user can act on. Each message names the problem and the fix."""

import sys
from contextlib import contextmanager

_muted = 0  # > 0 inside ``muted_warnings``


@contextmanager
def muted_warnings():
    """No ``warn`` lines inside: for work whose results are candidates, not what the user gets (a search's
    trial students)."""
    global _muted
    _muted += 1
    try:
        yield
    finally:
        _muted -= 1


def warn(message: str) -> None:
    """One ``Warning: ...`` line on stderr: something edgefree did for the user that they should know.
    While a command sends its runtime output to a log (``edgefree.logs``), the line goes to the
    console and to the log. Nothing inside ``muted_warnings``."""
    if not _muted:
        say(f"Warning: {message}")


def say(line: str) -> None:
    """``line`` on stderr, reaching the console (and the log) while a command sends its runtime output to a
    log: what a long step tells the user before it starts."""
    console = getattr(sys.stderr, "console", None)
    for stream in (console, sys.stderr) if console is not None else (sys.stderr,):
        print(line, file=stream)


def first_line(exc: BaseException, limit: int | None = 200) -> str:
    """The first non-empty line of ``exc``'s message (at most ``limit`` characters; "" where it has none):
    what a one-line error quotes of another library's exception."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:limit]


class Interrupted(KeyboardInterrupt):
    """A command stopped by ``signal`` (a ``signal.Signals``) other than Ctrl-C's own KeyboardInterrupt: SIGTERM
    (``raise_interrupted``), or under ``--workers`` the signal torch's launcher caught. Handled as Ctrl-C is,
    with that signal's exit status."""

    def __init__(self, signal):
        super().__init__(signal.name)
        self.signal = signal


def raise_interrupted(signum, _frame):
    """A signal handler (SIGTERM's, in a command or a ``--workers`` rank): end through the cleanup Ctrl-C runs."""
    import signal

    raise Interrupted(signal.Signals(signum))


class EdgefreeError(Exception):
    """Base class: the CLI prints these as one clear line, without a traceback."""


class CheckpointError(EdgefreeError):
    """A checkpoint cannot be read or does not fit the chosen architecture."""


class NoBatchNormError(EdgefreeError):
    """DeepInversion needs BatchNorm running statistics and the model has none."""


class UnreachableTargetError(EdgefreeError):
    """A MACs target the channel search cannot reach on this model."""


class MildTargetError(UnreachableTargetError):
    """A MACs target so close to the teacher's that the channel search removes nothing (channels go in steps)."""


class DivergenceError(EdgefreeError):
    """An optimisation produced a non-finite loss."""


class DataError(EdgefreeError):
    """An evaluation data set cannot be read or does not fit the model."""


class TargetError(EdgefreeError):
    """An unknown or invalid target profile."""


class MissingRuntimeError(EdgefreeError):
    """A runtime or tool the requested stage needs is not installed."""


class DeployError(EdgefreeError):
    """Copying artifacts to a device or running them there failed (host, key, copy, runtime)."""


class EmulationError(EdgefreeError):
    """The arm64 emulation environment (QEMU user-mode) cannot be prepared or run."""


class ExportError(EdgefreeError):
    """A model cannot be exported to a format (an operator it cannot take), or its export failed."""


class ParityError(EdgefreeError):
    """An exported artifact's outputs differ from the PyTorch student's beyond the tolerance."""


class IntegrityError(EdgefreeError):
    """A file of a build differs from the sha256 its report or manifest recorded for it."""
