"""The ``edgefree`` command: a thin click group; one module per command.

Heavy libraries are imported inside each command, so ``edgefree --help`` is instant.
Every option can also be set by an environment variable named in its help
(``EDGEFREE_<COMMAND>_<OPTION>``).
"""

import sys

import click

from edgefree.cli.build import build
from edgefree.cli.listing import models, targets

CONTEXT = {"auto_envvar_prefix": "EDGEFREE", "show_default": True, "help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="edgefree")
def cli():
    """edgefree: compress an image classifier for edge devices without its training data."""


for command in (build, models, targets):
    cli.add_command(command)


def main() -> None:
    from edgefree.errors import EdgefreeError

    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgefreeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
