"""``edgefree bench BUILD_DIR``: latency and accuracy per runtime, teacher vs student; arm64 under QEMU."""

from pathlib import Path

import click

from edgefree.cli.output import build_folder_logs, progress_bars, quiet_option, verbose_option
from edgefree.cli.params import NonEmptyPath
from edgefree.config import BenchConfig


_BENCH = BenchConfig()  # the defaults the options show are the config's


def _opt(*names, **kw):
    return click.option(*names, show_envvar=True, **kw)


@click.command()
@click.argument("build_dir", type=NonEmptyPath(path_type=Path, exists=True, file_okay=False))
@_opt("--target", help="Target profile (default: the build's). An aarch64 target also runs under qemu-aarch64.")
@_opt("--runs", type=int, help="A fixed count of timed runs per runtime (batch 1) [default: runs until the p50's "
      "95% interval is within --p50-tolerance, between --min-runs and --max-runs].")
@_opt("--min-runs", type=int, default=_BENCH.min_runs, help="Fewest timed runs per runtime.")
@_opt("--max-runs", type=int, default=_BENCH.max_runs, help="Most timed runs per runtime.")
@_opt("--p50-tolerance", type=float, default=_BENCH.p50_tolerance, help="Stop timing once the p50's 95% interval is within this "
      "fraction of it.")
@_opt("--warmup", type=int, default=_BENCH.warmup, help="Untimed runs before them.")
@_opt("--threads", type=int, help="Threads per runtime (default: the target's; 1 for an emulated target).")
@_opt("--eval-limit", type=int, help="Top-1 on the first N evaluation images only, measured again (default: all, "
      "from the export's manifest).")
@_opt("--remeasure-accuracy", is_flag=True, help="Measure top-1 again through every runtime (batch 1) instead of "
      "reading the export's figures.")
@_opt("--emulate/--no-emulate", default=_BENCH.emulate, help="Run an aarch64 target's artifacts under qemu-aarch64.")
@_opt("--native/--no-native", default=_BENCH.native, help="Also measure on this machine (--no-native: an aarch64 target "
      "is only emulated; this machine's outputs still serve as the parity reference).")
@_opt("--emulated-runs", type=int, default=_BENCH.emulated_runs, help="Timed runs under emulation (instruction counts repeat).")
@_opt("--emulated-inputs", type=int, default=_BENCH.emulated_inputs, help="Evaluation images compared with x86 under emulation.")
@_opt("--model", type=NonEmptyPath(path_type=Path), help="Where the build's teacher checkpoint is now, if it moved "
      "(it must be the same file; checked by sha256).")
@_opt("--out", type=NonEmptyPath(path_type=Path), help="Output folder (default: BUILD_DIR, or BUILD_DIR/bench-TARGET "
      "for another target than the build's).")
@quiet_option
@verbose_option
def bench(build_dir, target, runs, min_runs, max_runs, p50_tolerance, warmup, threads, eval_limit, remeasure_accuracy,
          emulate, native, emulated_runs, emulated_inputs, model, out, quiet, verbose):
    """Measure teacher and student per runtime and precision; write bench.json, bench.md and bench.png."""
    from edgefree.bench.build_dir import bench_build

    config = BenchConfig(runs=runs, min_runs=min_runs, max_runs=max_runs, p50_tolerance=p50_tolerance, warmup=warmup,
                         threads=threads, eval_limit=eval_limit, remeasure_accuracy=remeasure_accuracy,
                         emulate=emulate, native=native, emulated_runs=emulated_runs, emulated_inputs=emulated_inputs)
    with build_folder_logs(verbose, build_dir):
        result = bench_build(build_dir, target, config, out, model, progress=progress_bars(quiet))
    report_bench(result)


def report_bench(result: dict, wrote: bool = True) -> None:
    """One line per row: p50 and top-1 measured here, instructions per inference under emulation; then
    the files written (``wrote`` False: the caller names them)."""
    for row in (result["native"] or {}).get("rows", []):
        shown = f"error: {row['error']}" if row["error"] else (
            f"p50 {row['latency_ms']['p50']:.3f} ms" + (f"  top-1 {row['accuracy']:.2f}%" if row["accuracy"] is not None else "")
            + ("  (cached)" if row.get("cached") else ""))
        click.echo(f"{row['model']:8} {row['runtime']:12} {row['precision']:5} {shown}")
    emulated = result["emulated"] or {}
    for row in emulated.get("rows") or []:
        count = row["instructions"]
        shown = f"error: {row['error']}" if row["error"] or not count else (
            f"{count['per_inference'] / 1e6:,.3f} M instructions/inference ({emulated['cpu']}, emulated)")
        click.echo(f"{row['model']:8} {row['runtime']:12} {row['precision']:5} {shown}")
    if emulated.get("rows") is None and emulated.get("skipped"):
        click.echo(f"arm64 emulation not run: {emulated['skipped']}")
    if wrote:
        click.echo(f"wrote bench.json, bench.md, bench.png in {result['out']}")
