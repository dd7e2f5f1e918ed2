"""``edgefree export``: export a finished build's student again (other formats, precisions, folder)."""

from pathlib import Path

import click

from edgefree.cli.output import build_folder_logs, progress_bars, quiet_option, verbose_option
from edgefree.cli.params import NonEmptyPath


def _opt(*names, **kw):
    return click.option(*names, show_envvar=True, **kw)


def comma_list(_ctx, _param, value: str | None) -> tuple[str, ...] | None:
    """Click callback: ``"onnx,openvino"`` -> ``("onnx", "openvino")``; unset stays None (the target's)."""
    if value is None:
        return None
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


FORMATS_HELP = ("Formats to export, comma-separated: onnx, openvino, executorch, among those the target runs "
                "(default: the target's).")
PRECISIONS_HELP = ("Precisions, comma-separated: fp32, int8, among those the target runs (INT8 is calibrated on "
                   "synthetic images; default: the target's).")


def report_export(manifest: dict) -> None:
    """Print one line per built artifact and per failure."""
    for a in manifest["artifacts"]:
        click.echo(f"  {a['name']:16s} {a['bytes']:>12,} bytes, packed {a['packed_bytes']:>11,} "
                   f"({a['bytes'] / a['packed_bytes']:.1f}x)  max abs diff {a['parity']['max_abs_diff']:.2g}  "
                   f"top-1 agreement {a['parity']['top1_agreement']:.3f}")
    for failure in manifest["failed"]:
        click.echo(f"Warning: {failure['error']}", err=True)


@click.command()
@click.argument("build_dir", type=NonEmptyPath(path_type=Path, file_okay=False))
@_opt("--formats", callback=comma_list, help=FORMATS_HELP.replace("the target's", "the build's"))
@_opt("--precisions", callback=comma_list, help=PRECISIONS_HELP.replace("the target's", "the build's"))
@_opt("--eval-data", help="Evaluation set for parity and accuracy (default: the build's).")
@_opt("--model", type=NonEmptyPath(path_type=Path), help="Where the build's teacher checkpoint is now, if it moved: "
      "checked by sha256 and recorded in BUILD_DIR's report, so later commands find it.")
@_opt("--out", type=NonEmptyPath(path_type=Path, file_okay=False), help="Output folder (default: BUILD_DIR/artifacts).")
@quiet_option
@verbose_option
def export(build_dir, formats, precisions, eval_data, model, out, quiet, verbose):
    """Export BUILD_DIR's student to ONNX / OpenVINO / ExecuTorch, check it against PyTorch, pack it.

    The artifacts replace all those in the output folder once all are built and checked (a failure
    leaves it as it was): unset, --formats and --precisions are the build's, so nothing is lost;
    exporting into BUILD_DIR/artifacts also updates BUILD_DIR's report (re-run `edgefree bench`
    for latencies of the new artifacts).
    """
    from edgefree.config import ExportConfig
    from edgefree.export.rebuild import reexport

    folder = out or build_dir / "artifacts"
    before = _artifact_names(folder / "manifest.json")
    with build_folder_logs(verbose, build_dir):
        manifest = reexport(build_dir, ExportConfig(formats=formats, precisions=precisions), out, eval_data, model,
                            progress=progress_bars(quiet))
    report_export(manifest)
    gone = sorted(before - {a["name"] for a in manifest["artifacts"]})
    if gone:
        click.echo(f"replaced {folder}: {', '.join(gone)} no longer in it (name their formats and precisions to "
                   "export them too)")
    click.echo(f"wrote {folder / 'manifest.json'}")


def _artifact_names(manifest: Path) -> set[str]:
    """The artifacts a manifest lists (none where it is missing or unreadable: the export checks it itself)."""
    import json

    try:
        return {a["name"] for a in json.loads(manifest.read_text())["artifacts"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
