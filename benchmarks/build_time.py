"""End-to-end wall time of ``edgefree build`` on a shared CIFAR-10 teacher with the default recipe.

Runs the real command line (a fresh process, an empty synthesis cache, the user's own
emulator set-up if there is one) and times it from outside, then keeps what the build
reported: accuracy, sparsity and seconds per stage.

    python benchmarks/build_time.py --shared ../shared                       # ResNet-20, android-arm64
    python benchmarks/build_time.py --shared ../shared --arch resnet56-cifar --target x86-64

Writes ``results/build_time-<arch>-<target>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgefree.machine import machine_info

HERE = Path(__file__).resolve().parent
CHECKPOINTS = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}
GOAL_S = 600


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--arch", default="resnet20-cifar", choices=sorted(CHECKPOINTS))
    parser.add_argument("--target", default="android-arm64")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if not (args.shared / "models").is_dir():
        sys.exit(f"needs the shared teachers and data: {args.shared}/models not found (pass --shared)")
    shared = args.shared.resolve()  # the build runs in a fresh folder
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
        "command": shown, "benchmark_command": "python benchmarks/build_time.py " + " ".join(argv or sys.argv[1:]),
        "wall_seconds": round(wall, 1), "goal_seconds": GOAL_S, "met": wall <= GOAL_S,
        "stage_seconds": report["seconds"], "accuracy": report["accuracy"], "sparsity": report["sparsity"],
        "recipe": report["synthesis"]["recipe"], "synthesis": report["synthesis"],
        "emulated": bool(report["bench"] and (report["bench"].get("emulated") or {}).get("cpu")), "machine": machine_info(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"build_time-{args.arch}-{args.target}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    a = result["accuracy"]
    lines = [f"# `edgefree build` end to end: {args.arch} -> {args.target}", "",
             f"Produced by `{result['benchmark_command']}`, which ran `{shown}` in a fresh process with an empty "
             "synthesis cache.", "",
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


if __name__ == "__main__":
    main()
