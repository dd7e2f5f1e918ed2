"""End-to-end wall time of ``edgefree build``: on a shared CIFAR-10 teacher, or on the built-in default.

Runs the real command line (a fresh process, an empty synthesis cache, the user's own
emulator set-up if there is one) and times it from outside, then keeps what the build
reported (accuracy, sparsity, seconds per stage) and what it printed.

    python benchmarks/build_time.py --shared ../shared                       # ResNet-20, android-arm64
    python benchmarks/build_time.py --shared ../shared --arch resnet56-cifar --target x86-64
    python benchmarks/build_time.py --default                                # `edgefree build --target android-arm64`
    python benchmarks/build_time.py --default --pruning channel              # ... --pruning channel

Writes ``results/build_time-<arch>-<target>.{json,md}``; ``--default`` writes
``results/default_build[-PRUNING].{json,md}``, its build run with an empty ``EDGEFREE_CACHE`` too
(the teacher's export included) and with progress bars, as a user sees it. ``--output NAME``
writes ``results/NAME.{json,md}`` instead, to keep machines apart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgefree.machine import machine_info
from provenance import describe, digits_files, run_record

HERE = Path(__file__).resolve().parent
CHECKPOINTS = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}
GOAL_S = 600


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    p.add_argument("--arch", default="resnet20-cifar", choices=sorted(CHECKPOINTS))
    p.add_argument("--target", default="android-arm64")
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--default", action="store_true", help="the built-in default model (no --model, no shared files)")
    p.add_argument("--pruning", help="with --default: pass `--pruning PRUNING` (results/default_build-PRUNING.*)")
    p.add_argument("--output", type=_file_name,
                   help="file name without suffix under --results (default: default_build[-PRUNING] with --default, "
                        "build_time-ARCH-TARGET without), to keep machines or settings apart")
    return p


def _file_name(name: str) -> str:
    if not name or Path(name).name != name or name.endswith((".json", ".md")):
        raise argparse.ArgumentTypeError(f"{name!r}: give a file name without folder or suffix, e.g. default_build-amd")
    return name


def _stem(args) -> str:
    if args.output:
        return args.output
    if args.default:
        return "default_build" + (f"-{args.pruning.replace(',', '-')}" if args.pruning else "")
    return f"build_time-{args.arch}-{args.target}"


def written(args) -> list[str]:
    """The files under --results that this command writes."""
    return [f"{_stem(args)}.json", f"{_stem(args)}.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.default:
        return default_build(args, argv)
    if not (args.shared / "models").is_dir():
        sys.exit(f"needs the shared teachers and data: {args.shared}/models not found (pass --shared)")
    shared = args.shared.resolve()  # the build runs in a fresh folder
    run = run_record(__file__, argv, [shared / "models" / CHECKPOINTS[args.arch],
                                      shared / "data" / "cifar10-jpeg" / "test.zip"])
    edgefree = Path(sys.executable).with_name("edgefree")
    work = Path(tempfile.mkdtemp(prefix="edgefree-build-time-"))
    command = [str(edgefree), "build", "--model", str(shared / "models" / CHECKPOINTS[args.arch]),
               "--arch", args.arch, "--eval-data", str(shared / "data" / "cifar10-jpeg" / "test.zip"),
               "--target", args.target, "--out", str(work / "out"), "--quiet"]
    shown = (f"edgefree build --model ../shared/models/{CHECKPOINTS[args.arch]} --arch {args.arch} "
             f"--eval-data ../shared/data/cifar10-jpeg/test.zip --target {args.target} --out OUT --quiet")
    print("$", shown, flush=True)
    started = time.perf_counter()
    # synthesis cache in the fresh folder: nothing reused from an earlier build
    done = subprocess.run(command, cwd=work, text=True, capture_output=True)
    wall = time.perf_counter() - started
    print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    if done.returncode != 0:
        sys.exit(f"the build failed (exit {done.returncode}); nothing written")
    report = json.loads((work / "out" / "report.json").read_text())
    result = {
        "command": shown, "benchmark_command": run["command"], "run": run,
        "wall_seconds": round(wall, 1), "goal_seconds": GOAL_S, "met": wall <= GOAL_S,
        "stage_seconds": report["seconds"], "accuracy": report["accuracy"], "sparsity": report["sparsity"],
        "recipe": report["synthesis"]["recipe"], "synthesis": report["synthesis"],
        "emulated": bool(report["bench"] and (report["bench"].get("emulated") or {}).get("cpu")), "machine": machine_info(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / _stem(args)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    a = result["accuracy"]
    lines = [f"# `edgefree build` end to end: {args.arch} -> {args.target}", "",
             f"Produced by `{result['benchmark_command']}`, which ran `{shown}` in a fresh process with an empty "
             "synthesis cache. " + describe(run), "",
             f"- wall: **{wall:.0f} s** (goal <= {GOAL_S} s: {'met' if result['met'] else 'NOT met'})",
             f"- top-1 on the 10,000 test images: teacher {a['teacher']:.2f} -> pruned {a['pruned']:.2f} -> "
             f"recovered **{a['recovered']:.2f}**; sparsity {report['sparsity']:.4f}; recipe `{result['recipe']}`",
             "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["seconds"].items()]
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {stem}.json and .md: {wall:.0f} s")


# tqdm's bars, as split on carriage returns and newlines: not lines a user reads afterwards
_PROGRESS = re.compile(r"[^|]*: +\d+%\|.*")  # "<what>: NN%|<bar>| ...", any stage's bar


def default_build(args, argv) -> None:
    """``edgefree build --target TARGET`` on the built-in default, in a fresh folder and cache."""
    edgefree = Path(sys.executable).with_name("edgefree")
    run = run_record(__file__, argv, digits_files())
    work = Path(tempfile.mkdtemp(prefix="edgefree-default-build-"))
    extra = ["--pruning", args.pruning] if args.pruning else []
    shown = " ".join(["edgefree build --target", args.target, *extra])
    print("$", shown, flush=True)
    load = os.getloadavg()[0]  # other work on the machine stretches the wall time
    started = time.perf_counter()
    done = subprocess.run([str(edgefree), "build", "--target", args.target, *extra], cwd=work, text=True, capture_output=True,
                          env={**os.environ, "EDGEFREE_CACHE": str(work / "cache")})
    wall = time.perf_counter() - started
    print(done.stdout, flush=True)
    if done.returncode != 0:
        sys.exit(f"the build failed (exit {done.returncode}): {done.stderr[-3000:]}")
    report = json.loads((work / "edgefree-out" / "report.json").read_text())
    stderr = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    others = [line for line in stderr if not _PROGRESS.fullmatch(line.rstrip())]
    bench_rows = [{k: row[k] for k in ("model", "runtime", "precision")} | {"p50_ms": row["latency_ms"]["p50"]}
                  for row in (report["bench"] or {}).get("native", {}).get("rows", []) if not row["error"]]
    result = {
        "command": shown, "benchmark_command": run["command"], "run": run,
        "wall_seconds": round(wall, 1), "load_average_at_start": round(load, 2), "stage_seconds": report["seconds"],
        "accuracy": report["accuracy"], "eval_images": report["eval_data"]["images"], "sparsity": report["sparsity"],
        "recipe": report["synthesis"]["recipe"], "synthesis": report["synthesis"],
        "artifacts": [{k: a[k] for k in ("name", "bytes", "packed_bytes")} for a in report["export"]["artifacts"]],
        "bench_native": bench_rows, "console_stdout": done.stdout.splitlines(),
        "console_stderr_other_than_progress_bars": others, "build_log_lines": len(
            (work / "edgefree-out" / "build.log").read_text().splitlines()), "machine": machine_info(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / _stem(args)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    a, m = result["accuracy"], result["machine"]
    lines = [f"# `{shown}` on the built-in default", "",
             f"Produced by `{result['benchmark_command']}`, which ran `{shown}` in a fresh folder with an empty "
             "`EDGEFREE_CACHE`. " + describe(run), "",
             f"- wall: **{wall:.0f} s** (1-minute load average when it started: {load:.1f} on {m['cores']} cores)",
             f"- top-1 on the {result['eval_images']} held-out digits: teacher {a['teacher']:.2f} -> pruned {a['pruned']:.2f}"
             f" -> refit {a['reconstructed']:.2f} -> recovered **{a['recovered']:.2f}**; sparsity {report['sparsity']:.4f}; "
             f"recipe `{result['recipe']}`; {report['cost']['macs_ratio']:.2f}x the teacher's multiply-adds",
             f"- console: {len(result['console_stdout'])} lines on stdout (below), "
             f"{len(others)} lines on stderr besides progress bars; {result['build_log_lines']} runtime log lines went "
             "to `edgefree-out/build.log`", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["seconds"].items()]
    lines += ["", "What it printed (stdout):", "", "```", *result["console_stdout"], "```"]
    if others:
        lines += ["", "On stderr, besides progress bars:", "", "```", *others, "```"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {stem}.json and .md: {wall:.0f} s")


if __name__ == "__main__":
    main()
