"""The ``--verbose`` switch shared by the commands that run the runtimes."""

from contextlib import nullcontext
from pathlib import Path

import click


def verbose_option(command):
    return click.option("--verbose", is_flag=True, show_envvar=True,
                        help="Show runtime log lines and library warnings here, instead of writing them to "
                             "build.log in the output folder.")(command)


def runtime_logs(verbose: bool, log: Path):
    """A context that keeps runtime logs out of the console, in the file ``log``, unless ``verbose``
    (or ``log``'s folder does not exist: the command is about to say so)."""
    from edgefree.logs import runtime_output_to

    return nullcontext() if verbose or not Path(log).parent.is_dir() else runtime_output_to(log)
