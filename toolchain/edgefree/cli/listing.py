"""``edgefree models`` and ``edgefree targets``: what can be built, and for what."""

import click


@click.command()
def models():
    """List the zoo's architectures; --arch also takes torchvision:<name> and path/to/file.py:factory."""
    from edgefree.models import list_models

    for name, description in list_models().items():
        click.echo(f"{name:18} {description}")
    click.echo("--arch also takes torchvision:<name> (any torchvision classifier), your own path/to/file.py:factory "
               "or package.module:factory (runs your code); a .pt2 program needs no --arch (docs/models.md)")


@click.command()
@click.argument("name", required=False)
def targets(name):
    """List the target profiles --target accepts; with NAME, show that profile in full.

    Profiles of your own: TOML files in the folders EDGEFREE_TARGETS names (docs/targets-and-bench.md).
    """
    from edgefree.targets import list_targets, load_target

    if name:
        for key, value in load_target(name).to_dict().items():
            value = ", ".join(value) if isinstance(value, tuple) else value
            if value not in ("", None):  # a profile leaves its optional fields out
                click.echo(f"{key:14} {value}")
        return
    found = list_targets()  # a bad profile stops before the table starts
    click.echo(f"{'name':18} {'isa':8} {'cpu (emulated as)':28} {'threads':7} {'formats':25} precisions")
    for t in found.values():
        cpu = t.cpu if not t.emulated or t.cpu == t.emulation_cpu else f"{t.cpu} ({t.emulation_cpu})"
        click.echo(f"{t.name:18} {t.isa:8} {cpu:28} {t.threads:<7} {','.join(t.formats):25} {','.join(t.precisions)}")
