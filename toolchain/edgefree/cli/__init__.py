"""The ``edgefree`` command: a thin click group; one module per command.

Heavy libraries are imported inside each command, so ``edgefree --help`` is instant.
Every option can also be set by an environment variable named in its help
(``EDGEFREE_<COMMAND>_<OPTION>``).
"""

import click

from edgefree.cli.bench import bench
from edgefree.cli.build import build
from edgefree.cli.emulator import emulator
from edgefree.cli.export import export
from edgefree.cli.flash import flash
from edgefree.cli.listing import models, targets
from edgefree.errors import EdgefreeError


def rank_prefix() -> str:
    """``"rank R: "`` in a process launched by torchrun among several (its errors name it), else empty."""
    import os

    return f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""

CONTEXT = {"auto_envvar_prefix": "EDGEFREE", "show_default": True, "help_option_names": ["-h", "--help"]}


class UserError(click.ClickException):
    """An EdgefreeError shown as one line, ``Error: ...``, exit status 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgefreeError as exc:
            raise UserError(rank_prefix() + str(exc)) from exc


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="edgefree")
def cli():
    """edgefree: compress an image classifier for edge devices without its training data."""


for command in (bench, build, emulator, export, flash, models, targets):
    cli.add_command(command)

main = cli
