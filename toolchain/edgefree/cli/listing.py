"""``edgefree models`` and ``edgefree targets``: what can be built, and for what."""

import click


@click.command()
def models():
    """List the architectures ``--arch`` accepts."""
    from edgefree.models import list_models

    for name, description in list_models().items():
        click.echo(f"{name:18} {description}")


@click.command()
def targets():
    """List the target profiles ``--target`` accepts."""
    from edgefree.targets import list_targets

    for name, t in list_targets().items():
        click.echo(f"{name:18} {t.isa:8} {','.join(t.formats):28} {t.description}")
