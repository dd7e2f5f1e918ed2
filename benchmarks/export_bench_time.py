"""Share of a build's wall time spent on export, export-teacher and bench, per build scenario.

Runs the real command line three times, in fresh processes:

* ``cold``: a ResNet-20 CIFAR-10 build for x86-64 with a small recovery budget and an empty
  cache (every artifact exported, parity-checked and benched from scratch);
* ``second-recipe``: the same teacher again with another recipe, the cache of ``cold`` kept
  (what a user pays for the teacher's side on the second build);
* ``default``: ``edgefree build --target android-arm64`` on the built-in model, empty cache.

    python benchmarks/export_bench_time.py --shared ../shared --label after
    python benchmarks/export_bench_time.py --shared ../shared --label before --toolchain OTHER/toolchain

``--toolchain`` runs another copy of edgefree's package (e.g. an older commit's) for a
side-by-side figure. Each label's results are merged into
``results/export_bench_time.{json,md}``; the Markdown shows every label found there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgefree.machine import machine_info
from edgefree.report import sub_steps
from provenance import describe, digits_files, run_record

HERE = Path(__file__).resolve().parent
REPORTING = ("export", "export-teacher", "bench")


def _scenarios(shared: Path) -> dict[str, list[str]]:
    resnet = ["--model", str(shared / "models" / "resnet20_cifar10jpeg.pt"), "--arch", "resnet20-cifar",
              "--eval-data", str(shared / "data" / "cifar10-jpeg" / "test.zip"), "--target", "x86-64"]
    return {
        "cold": [*resnet, "--images", "256", "--epochs", "2", "--reconstruct-images", "256"],
        "second-recipe": [*resnet, "--recipe", "paper", "--images", "256", "--iterations", "20", "--epochs", "1"],
        "default": ["--target", "android-arm64"],
    }


def _run(arguments: list[str], work: Path, cache: Path, toolchain: Path | None) -> dict:
    env = {**os.environ, "EDGEFREE_CACHE": str(cache)}
    if toolchain:
        env["PYTHONPATH"] = str(toolchain)
    out = work / "out"
    command = [sys.executable, "-c", "from edgefree.cli import cli; cli()", "build", *arguments, "--out", str(out), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the build failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    seconds = report["seconds"]
    reporting = sum(seconds.get(stage, 0.0) for stage in REPORTING)
    return {"wall_seconds": round(wall, 1), "stage_seconds": seconds, "reporting_seconds": round(reporting, 1),
            "reporting_share": round(reporting / wall, 3), "accuracy": report["accuracy"],
            "sub_steps": sub_steps(report),
            "load_average_1min": os.getloadavg()[0]}


def _shown(arguments: list[str], shared: Path) -> str:
    return "edgefree build " + " ".join(arguments).replace(str(shared), "../shared")


def _markdown(results: dict) -> str:
    lines = ["# Export and bench: share of a build's wall time", "",
             "Produced by " + ", then ".join(f"`{r['benchmark_command']}`" for r in results.values())
             + " (one per label): each scenario is a fresh `edgefree build` "
             "process; `cold` and `default` start from an empty cache, `second-recipe` keeps `cold`'s. "
             "The machine's cores are shared with other jobs: wall times are noisy (load average after each "
             "build in the last column).", ""]
    for name, command in next(iter(results.values()))["commands"].items():
        lines.append(f"- `{name}`: `{command}`")
    lines += ["", "| label | scenario | wall s | export s | export-teacher s | bench s | share | load |",
              "|---|---|---|---|---|---|---|---|"]
    for label, result in results.items():
        for name, run in result["scenarios"].items():
            s = run["stage_seconds"]
            lines.append(f"| {label} | {name} | {run['wall_seconds']:.1f} | "
                         + " | ".join(f"{s.get(stage, 0.0):.1f}" for stage in REPORTING)
                         + f" | {100 * run['reporting_share']:.0f}% | {run['load_average_1min']:.1f} |")
    for label, result in results.items():
        m = result["machine"]
        lines += ["", f"`{label}`: {result['revision']} on {m['cpu']} ({m['cores']} cores)."
                  + (" " + describe(result["run"]) if "run" in result else f" {result['run_note']}.")]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--label", default="current", help="name of this measurement in the results")
    parser.add_argument("--toolchain", type=Path, help="run this copy of the package instead of the installed one")
    parser.add_argument("--revision", default=None, help="what --toolchain holds (default: this checkout's commit)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return ["export_bench_time.json", "export_bench_time.md"] if args.results.resolve() == (HERE / "results").resolve() else []


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if not (args.shared / "models").is_dir():
        sys.exit(f"needs the shared teachers and data: {args.shared}/models not found (pass --shared)")
    shared = args.shared.resolve()
    revision = args.revision or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                                               capture_output=True).stdout.strip()
    scenarios, runs = _scenarios(shared), {}
    run = run_record(__file__, argv, [shared / "models" / "resnet20_cifar10jpeg.pt",
                                      shared / "data" / "cifar10-jpeg" / "test.zip", *digits_files()])
    with tempfile.TemporaryDirectory(prefix="edgefree-export-bench-") as tmp:
        caches = {"cold": Path(tmp) / "cache", "second-recipe": Path(tmp) / "cache", "default": Path(tmp) / "cache2"}
        for name, arguments in scenarios.items():
            work = Path(tmp) / name
            work.mkdir()
            print(f"[{args.label}] {name}: {_shown(arguments, shared)}", flush=True)
            runs[name] = _run(arguments, work, caches[name], args.toolchain)
            print(f"  wall {runs[name]['wall_seconds']} s, export+bench {runs[name]['reporting_seconds']} s "
                  f"({100 * runs[name]['reporting_share']:.0f}%)", flush=True)
            _write(args.results / "export_bench_time.json", args.label, revision, scenarios, runs, shared, run)


def _write(path: Path, label: str, revision: str, scenarios: dict, runs: dict, shared: Path, run: dict) -> None:
    """Merge this label's scenarios so far into the results (written after each, so a long run keeps its figures)."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[label] = {"benchmark_command": run["command"], "run": run, "revision": revision, "commands": {n: _shown(a, shared) for n, a in scenarios.items()},
                      "scenarios": dict(runs), "machine": machine_info()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    path.with_suffix(".md").write_text(_markdown(results))
    print(f"wrote {path} and {path.with_suffix('.md')}", flush=True)


if __name__ == "__main__":
    main()
