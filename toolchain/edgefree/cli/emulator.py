"""``edgefree emulator``: prepare and inspect the arm64 environment that runs artifacts under QEMU."""

import click

from edgefree.targets import RUNTIMES


@click.group()
def emulator():
    """The arm64 environment (QEMU user-mode) for aarch64 targets."""


@emulator.command()
@click.option("--runtimes", default="onnxruntime,openvino", show_envvar=True,
              help=f"Comma-separated runtimes to install for aarch64: {', '.join(RUNTIMES)} "
                   "(executorch brings aarch64 torch: ~600 MB more).")
@click.option("--mirror", show_envvar=True,
              help="Debian mirror for the arm64 root and qemu's source (default: http://deb.debian.org/debian).")
def setup(runtimes, mirror):
    """Prepare (or complete) the arm64 root, runtimes and instruction-count plugin (cached)."""
    from edgefree.bench.emulator_setup import DEFAULT_MIRROR, default_home
    from edgefree.bench.emulator_setup import setup as run_setup

    record = run_setup([r.strip() for r in runtimes.split(",") if r.strip()], mirror=mirror or DEFAULT_MIRROR,
                       log=lambda line: click.echo(f"- {line}"))
    click.echo(f"ready in {default_home()}: {record['qemu']}; "
               + ", ".join(f"{k} {v}" for k, v in record["runtimes"].items()))


@emulator.command()
@click.pass_context
def status(ctx):
    """Say whether the arm64 environment is prepared, and with what."""
    from edgefree.bench.emulator_setup import default_home, not_prepared, prepared

    record = prepared(default_home())
    if record is None:
        click.echo(not_prepared(default_home()))
        ctx.exit(1)
    click.echo(f"prepared in {default_home()}: {record['qemu']}; Debian {record['suite']} python {record['python']}; "
               + ", ".join(f"{k} {v}" for k, v in record["runtimes"].items()) + f"; CPU models {', '.join(record['cpus'])}")
