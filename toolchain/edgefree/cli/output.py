"""The ``--verbose`` and ``--quiet`` switches shared by the commands that run the runtimes, and where their
logs go."""

import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import click


def verbose_option(command):
    return click.option("--verbose", is_flag=True, show_envvar=True,
                        help="Show runtime log lines and library warnings here, instead of writing them to "
                             "build.log in the output folder.")(command)


def quiet_option(command):
    return click.option("--quiet", is_flag=True, show_envvar=True,
                        help="No progress bars. They are drawn only where standard error is a terminal: a log "
                             "file or a pipe would fill with their redraws.")(command)


def progress_bars(quiet: bool) -> bool:
    """Whether long stages draw progress bars: not with ``--quiet``, nor where standard error is no
    terminal (each redraw of a bar would be a line of a log file)."""
    return not quiet and sys.stderr.isatty()


def runtime_logs(verbose: bool, log: Path):
    """A context that keeps runtime logs out of the console, in the file ``log``, unless ``verbose``
    (or ``log``'s folder does not exist: the command is about to say so)."""
    from edgefree.logs import runtime_output_to

    return nullcontext() if verbose or not Path(log).parent.is_dir() else runtime_output_to(log)


def build_folder_logs(verbose: bool, build_dir: Path):
    """``runtime_logs`` for a command on a finished build (bench, export): appended to its build.log.

    A folder that holds no complete build gets no log (the command refuses it before any work).
    """
    from edgefree.outfolder import is_complete

    return runtime_logs(verbose or not is_complete(Path(build_dir)), Path(build_dir) / "build.log")


@contextmanager
def failure_kept_log(verbose: bool, log: Path):
    """``runtime_logs`` into ``log``, a file beside the output folder, for a command that publishes it
    with its outputs (``edgefree.logs.adopt_log``) when it succeeds.

    When the command fails with an ``EdgefreeError`` after writing log lines, the log stays and the
    error names it; in every other case (no lines: a refusal before any work; an interrupt; any other
    error) it is removed, so no hidden log piles up beside the output folder.
    """
    from edgefree.errors import EdgefreeError

    log = Path(log)
    _remove(log)  # a previous run's
    try:
        with runtime_logs(verbose, log):
            yield
    except EdgefreeError as exc:
        if log.is_file() and log.stat().st_size:
            raise EdgefreeError(f"{exc} (runtime log lines: {log})") from exc
        _remove(log)
        raise
    except BaseException:
        _remove(log)
        raise


def _remove(log: Path) -> None:
    if log.is_file():  # False too where its folder is missing or a file: the command names that problem
        log.unlink()
