"""``edgefree flash``: copy a build's artifacts to a Raspberry Pi / Jetson over SSH and run them there."""

from pathlib import Path

import click

from edgefree.cli.params import NON_EMPTY_TEXT, NonEmptyPath


def _opt(*names, **kw):
    if "type" not in kw and not kw.get("is_flag"):
        kw["type"] = NON_EMPTY_TEXT  # a text option: an empty value is refused, not read as the default
    return click.option(*names, show_envvar=True, **kw)


@click.command()
@click.argument("build_dir", type=NonEmptyPath(path_type=Path, exists=True, file_okay=False))
@_opt("--host", required=True, help="The device, user@host (e.g. pi@raspberrypi.local).")
@_opt("--target", help="Target profile; default: the one BUILD_DIR was built for (any other is refused).")
@_opt("--port", type=click.IntRange(1, 65535), default=22, help="SSH port.")
@_opt("--key", type=NonEmptyPath(path_type=Path, exists=True, dir_okay=False),
      help="Private key file. Default: your ssh agent and ~/.ssh/id_* keys.")
@_opt("--known-hosts", type=NonEmptyPath(path_type=Path, dir_okay=False),
      help="known_hosts file to check the device's host key against. Default: ~/.ssh/known_hosts.")
@_opt("--accept-new-host-key", is_flag=True,
      help="Trust a device missing from known_hosts and record its key (a changed key is always refused).")
@_opt("--remote-dir", default="~/edgefree", help="Folder on the device for releases/ and the current symlink.")
@_opt("--remote-python", default="python3", help="Python command on the device (it needs numpy and the runtimes).")
@_opt("--artifacts", help="Comma-separated artifact names to send (default: all the target runs).")
@_opt("--runs", type=click.IntRange(min=1), default=50, help="Timed inferences per artifact on the device.")
@_opt("--warmup", type=click.IntRange(min=0), default=5, help="Untimed inferences before them.")
@_opt("--keep-releases", type=click.IntRange(min=1), default=3,
      help="Releases kept on the device, the current one included; older ones are deleted after the switch.")
def flash(build_dir, host, target, port, key, known_hosts, accept_new_host_key, remote_dir, remote_python,
          artifacts, runs, warmup, keep_releases):
    """Copy BUILD_DIR's artifacts to a device over SSH, verify their sha256 there, switch `current`, run them.

    Writes BUILD_DIR/flash.json and a "Flashed to" section in BUILD_DIR/report.md.
    """
    from edgefree.deploy import flash as run_flash

    record = run_flash(build_dir, host, target=target, port=port, key=key, known_hosts=known_hosts,
                       accept_new_host_key=accept_new_host_key, remote_dir=remote_dir,
                       remote_python=remote_python, artifacts=artifacts.split(",") if artifacts else None,
                       runs=runs, warmup=warmup, keep_releases=keep_releases)
    sent = record["sent"]
    click.echo(f"{record['host']}: release {record['release']} is current ({record['current']}); sent "
               f"{sent['files']} file(s), {sent['bytes']:,} bytes in {record['seconds']['total']:.1f} s")
    for name, result in record["artifacts"].items():
        diff = result["max_abs_diff_vs_build_machine"]
        click.echo(f"  {name}: p50 {result['latency_ms']['p50']:.3f} ms on the device, top-1 {result['top1']}, "
                   f"max logit diff vs this machine {'-' if diff is None else f'{diff:.2g}'}")
    if record["releases_removed"]:
        click.echo(f"  deleted {len(record['releases_removed'])} older release(s) on the device: "
                   + ", ".join(record["releases_removed"]))
    if record["releases_prune_error"]:
        click.echo(f"Warning: deleting older releases failed (the new one is current): {record['releases_prune_error']}",
                   err=True)
    click.echo(f"wrote {build_dir / 'flash.json'}, {build_dir / 'report.md'}")
