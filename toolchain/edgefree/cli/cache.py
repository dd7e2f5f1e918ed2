"""``edgefree cache``: what the cache holds, and clearing it."""

import click

from edgefree.cache import DERIVED, FOLDERS


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


@click.group(invoke_without_command=True)
@click.pass_context
def cache(ctx):
    """Show or clear the cache: dreams, decoded data, exported teachers, latency tables, the arm64 root.

    It lives in EDGEFREE_CACHE, else ~/.cache/edgefree, and has no size bound. Alone: `edgefree cache show`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(show)


@cache.command()
def show():
    """Each cache folder: where it is, what it holds, its files and size."""
    from edgefree.cache import cache_folders, cache_root

    root, what = cache_root()
    click.echo(f"cache: {root}" + (f" (set by {what})" if what.startswith("$") else ""))
    folders = cache_folders()
    click.echo(f"{'folder':18} {'files':>6} {'size':>9}  holds")
    for f in folders:
        click.echo(f"{f.name:18} {f.files:>6} {_size(f.size):>9}  {f.holds}"
                   + (f" in {f.path}" if f.path.parent != root else ""))
    click.echo(f"{'total':18} {sum(f.files for f in folders):>6} {_size(sum(f.size for f in folders)):>9}")


@cache.command()
@click.argument("folders", nargs=-1, type=click.Choice(list(FOLDERS)), metavar="[FOLDER]...")
def clear(folders):
    """Remove the cache's FOLDERs (default: all but arm64, which only `edgefree emulator setup` prepares
    again). Clear between builds: a build running meanwhile may fail on a file removed under it. Dreams cached
    in a folder of your own (BuildConfig.cache) are not touched."""
    from edgefree.cache import clear_cache

    cleared = clear_cache(folders or DERIVED)
    click.echo(f"freed {_size(sum(f.size for f in cleared))}: "
               + ", ".join(f"{f.name} ({f.files} file{'s' * (f.files != 1)})" for f in cleared))
