"""Kill ``edgefree build`` at random moments: --out must stay byte for byte as it was, and a rerun succeed.

A complete build of the built-in default (tiny budgets, ONNX fp32) plus a file of the user's
fill --out; the same build is then started again and stopped with SIGINT or SIGKILL (in turn)
after a random delay drawn in [0.05, LATEST] x the time an uninterrupted build takes to publish its
outputs (the moment its ``.edgefree-complete`` is replaced; the process then still spends seconds
shutting its runtimes down). After each stop, --out is hashed (every path, hidden ones too, and
its bytes); at the end one more build runs to completion and must find the staging folders of
the killed ones gone. A kill that comes after the build published anyway (build times vary on a
shared machine) is recorded as such, and the next kills are compared with its outputs.

    python benchmarks/kill_build.py --kills 10 --seed 1      # writes results/kill_build.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import digits_files, run_record

ROOT = Path(__file__).resolve().parents[1]
BUILD = ["build", "--images", "32", "--synth-batch", "32", "--iterations", "5", "--epochs", "1", "--formats", "onnx",
         "--precisions", "fp32", "--bench-runs", "2", "--quiet"]


def folder_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(b"d" if path.is_dir() else path.read_bytes())
    return h.hexdigest()


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "toolchain")}
    return subprocess.Popen([sys.executable, "-c", "from edgefree.cli import main; main()", *BUILD, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _marker(out: Path):
    try:
        return (out / ".edgefree-complete").stat().st_ino
    except FileNotFoundError:
        return None


def _timed_build(out: Path) -> float:
    """Run a build to its end; returns the seconds until it published its outputs."""
    started, before, published = time.monotonic(), _marker(out), None
    process = _start(out)
    while process.poll() is None:
        if published is None and _marker(out) not in (before, None):
            published = time.monotonic() - started
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"the build failed: {process.stderr.read().decode()[-2000:]}")
    return published if published is not None else time.monotonic() - started


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latest", type=float, default=0.8, help="latest kill, as a fraction of the time to publish")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "kill_build.json")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return [args.results.name] if args.results.parent.resolve() == (ROOT / "benchmarks" / "results").resolve() else []


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    run = run_record(__file__, argv, digits_files())
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="edgefree-kill-") as tmp:
        out = Path(tmp) / "out"
        first = _timed_build(out)  # also fills the caches: teacher, dreams
        (out / "notes.txt").write_text("the user's own file")
        duration = _timed_build(out)
        before = folder_hash(out)
        kills = []
        for i in range(args.kills):
            sig = (signal.SIGINT, signal.SIGKILL)[i % 2]
            delay = round(rng.uniform(0.05, args.latest) * duration, 2)
            marker = _marker(out)
            process = _start(out)
            time.sleep(delay)
            published = _marker(out) != marker
            if process.poll() is None:
                process.send_signal(sig)
            code = process.wait()
            staging = sorted(p.name for p in Path(tmp).glob(".out.edgefree-*"))
            kills.append({"signal": sig.name, "after_s": delay, "published_before_the_signal": published,
                          "exit_code": code, "out_unchanged": folder_hash(out) == before,
                          "staging_folders_left": len(staging)})
            print(kills[-1], flush=True)
            if published:  # not an interrupted build: compare the next kills with its outputs
                before = folder_hash(out)
        rerun_s = _timed_build(out)
        result = {
            "benchmark_command": run["command"], "run": run, "build": BUILD, "first_build_s_to_publish": round(first, 1),
            "build_s_to_publish": round(duration, 1), "latest": args.latest, "seed": args.seed,
            "kills": kills,
            "interrupted_before_publishing": sum(not k["published_before_the_signal"] for k in kills),
            "all_unchanged": all(k["out_unchanged"] for k in kills if not k["published_before_the_signal"]),
            "rerun": {"seconds_to_publish": round(rerun_s, 1), "succeeded": True,
                      "user_file_kept": (out / "notes.txt").read_text() == "the user's own file",
                      "staging_folders_left": len(list(Path(tmp).glob(".out.edgefree-*")))},
        }
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "kills"}, indent=2))


if __name__ == "__main__":
    main()
