"""Quiet commands: runtime log lines and library warnings go to a log file, not the console.

ExecuTorch, XNNPACK, onnxruntime and OpenVINO write their log lines from C++ straight to
file descriptors 1 and 2, past Python's ``sys.stdout``; exporters print to ``sys.stdout``;
torch warns through ``warnings`` and ``logging``; the runtimes' Python bindings forward C++
streams to ``sys.stderr``. ``runtime_output_to`` points both descriptors at a log file for as
long as it is open, sends Python warnings and log records there too, and replaces
``sys.stderr`` by a stream that shows progress bars on the console and writes everything else
to the log. What edgefree prints after it closes reaches the console as usual.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO


class _ProgressSplitter(io.TextIOBase):
    """``sys.stderr`` while capturing: tqdm's updates (each starts with a carriage return, and the
    newline that may follow one) go to ``console``; every other write goes to ``log``."""

    def __init__(self, console: TextIO, log: TextIO):
        self.console, self.log, self._last = console, log, log

    def write(self, text: str) -> int:
        self._last = self.console if text.startswith("\r") else self._last if text == "\n" else self.log
        return self._last.write(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def fileno(self) -> int:  # tqdm asks the console's width
        return self.console.fileno()

    def isatty(self) -> bool:
        return self.console.isatty()

    @property
    def encoding(self) -> str:
        return self.console.encoding


_capturing: Path | None = None  # the log runtime_output_to is writing now


def adopt_log(folder: Path) -> None:
    """Move the log being written now (if any) into ``folder`` as ``build.log``; writing goes on there.

    A build moves it into its staging folder, so the log is published with the outputs it explains.
    """
    global _capturing
    if _capturing is not None and _capturing.is_file():
        target = Path(folder) / "build.log"
        os.replace(_capturing, target)  # the open file follows the rename
        _capturing = target


def publish_log(folder: Path) -> list[str]:
    """Move the log being written now into the published ``folder`` as its ``build.log`` (listed among its
    entries), for a build that other processes published; returns the log's ``Warning:`` lines, which
    reached only the log there. It holds the folder's lock while it moves the log in, as a build does."""
    from edgefree.errors import EdgefreeError
    from edgefree.outfolder import add_entry, is_complete, locked

    if _capturing is None or not _capturing.is_file():
        return []
    text = _capturing.read_text(encoding="utf-8", errors="replace")
    try:
        with locked(folder, "build"):
            if not is_complete(folder):
                return []
            adopt_log(folder)
            add_entry(folder, "build.log")
    except EdgefreeError:  # another build took the folder in the instant since rank 0 released it: it writes its own
        pass
    return [line for line in text.splitlines() if line.startswith("Warning: ")]


@contextmanager
def runtime_output_to(log_path: str | Path) -> Iterator[TextIO]:
    """Write everything sent to fd 1 and 2 (native code, ``print``, warnings, logging) to ``log_path``.

    Appends to ``log_path`` (its folder is created). Inside, progress bars written to
    ``sys.stderr`` still reach the console; the context yields a stream on the console.

    Example:
        >>> import os, tempfile
        >>> log = os.path.join(tempfile.mkdtemp(), "build.log")
        >>> with runtime_output_to(log):
        ...     _ = os.write(1, b"[threadpool.cpp:66] Resetting threadpool to 1 threads.\\n")
        >>> open(log).read()
        '[threadpool.cpp:66] Resetting threadpool to 1 threads.\\n'
    """
    global _capturing
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with open(log_path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        console = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root, old_stderr = logging.getLogger(), sys.stderr
        try:
            for fd in saved:
                os.dup2(log.fileno(), fd)
            root.addHandler(handler)
            sys.stderr = _ProgressSplitter(console, log)
            with warnings.catch_warnings():
                warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
                    warnings.formatwarning(message, category, filename, lineno, line))
                _capturing = log_path
                yield console
        finally:
            _capturing = None
            for stream in (sys.stdout, old_stderr, log):
                stream.flush()
            sys.stderr = old_stderr
            root.removeHandler(handler)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            console.close()
