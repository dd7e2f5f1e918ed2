"""Accuracy-budget benchmark: `--max-drop D`, the estimate's choice against the measured drop.

One ``edgefree.pipeline.build`` (the code behind ``edgefree build``) per row, recipe ``fast``,
without export: the budget search picks the sparsity (magnitude rows) or MACs target (channel
rows) from the data-free estimate alone; the test split then measures what the user would have
got. Records the candidates the search tried, the choice, the estimated and measured drop of the
recovered student, and the search's seconds against the rest of the build (its overhead), with
the exact command, the git commit and the sha256 of teacher and data.

    python benchmarks/max_drop.py --shared ../shared --rows r56-mag
    python benchmarks/max_drop.py --shared ../shared --mobilenet T.pt --rows mbv3-mag

Results go to ``results/max_drop.json`` (one entry per row and budget, merged) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import describe, run_record  # noqa: E402

from edgefree.config import BuildConfig, ChannelPruning, MagnitudePruning, recipe  # noqa: E402
from edgefree.machine import machine_info  # noqa: E402

CIFAR = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}
MOBILENET = "torchvision:mobilenet_v3_small"
ROWS = {  # teacher, pruning (its knob is what the search sets)
    "r20-mag": ("resnet20-cifar", MagnitudePruning()),
    "r56-mag": ("resnet56-cifar", MagnitudePruning()),
    "r56-ch": ("resnet56-cifar", ChannelPruning()),
    "mbv3-mag": (MOBILENET, MagnitudePruning(scope="layer")),
}
# the goals of the accuracy budget: the most a measured drop may be, and the choice to avoid
GOALS = {"r56-mag": "measured drop <= 1.5", "mbv3-mag": "not 75% sparsity, measured drop <= 3"}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(row: str, args) -> dict:
    from edgefree.pipeline import build

    arch, stage = ROWS[row]
    if arch == MOBILENET:
        if args.mobilenet is None:
            raise SystemExit(f"row {row} needs --mobilenet (the teacher's weights)")
        model, shape = args.mobilenet.resolve(), (3, 32, 32)
    else:
        model, shape = (args.shared / "models" / CIFAR[arch]).resolve(), None
    data = (args.shared / "data" / "cifar10-jpeg" / "test.zip").resolve()
    fast = recipe("fast")
    config = BuildConfig(model=model, arch=arch, input_shape=shape, recipe="fast", prune=(stage,), seed=args.seed,
                         max_drop=args.max_drop, eval_data=str(data), synthesis=fast.synthesis,
                         reconstruct=fast.reconstruct, distill=fast.distill, out=args.work / f"{row}-{args.max_drop}",
                         cache=args.cache, export=None, threads=args.threads)
    load_before, started = _uptime(), time.perf_counter()
    report = build(config, progress=not args.quiet)
    seconds = report["seconds"]
    rest = sum(v for k, v in seconds.items() if k != "budget")
    synth = report["synthesis"]
    return {"row": row, "arch": arch, "max_drop": args.max_drop, "budget": report["budget"],
            "accuracy": report["accuracy"], "estimate": {k: report["estimate"]["recovered"][k]
                                                         for k in ("drop", "features")},
            "measured_drop": report["estimate"]["measured_drop"], "warnings": report["estimate"]["warnings"],
            "macs_ratio": report["cost"]["macs_ratio"], "sparsity": report["sparsity"], "seconds": seconds,
            "search_over_rest": round(seconds.get("budget", 0) / rest, 3),
            "dreams_cached": synth["cached"], "dream_seconds": synth["seconds"],
            "wall_s": round(time.perf_counter() - started, 1), "uptime_before": load_before, "uptime_after": _uptime(),
            "eval_images": report["eval_data"]["images"], "record": run_record(__file__, files=[model, data]),
            "machine": machine_info()}


def render(results: dict) -> str:
    lines = ["# Accuracy budget: what `--max-drop` chose, and what it cost", "",
             "Each entry is one `edgefree.pipeline.build` with `max_drop=D` (`--max-drop D`), recipe `fast`, seed 0, "
             "no export. The search sees only dreams: each candidate is pruned, refit on 512 dreams (distilled one "
             "epoch instead only for a recipe without a refit) and estimated on the held-out dreams "
             "(`edgefree/budget.py`); the chosen one is then recovered fully. Measured drop: the teacher's top-1 "
             "minus the student's on the 10,000 CIFAR-10 test images, "
             "which the build never used to choose. Search overhead: the search's seconds over the rest of the "
             "build's stage seconds (synthesis included; where the dreams came from the cache, the seconds they "
             "took when dreamed are added to the rest).", "",
             "| row | max drop | goal | candidates (knob: estimated drop) | chosen | MACs kept | teacher | recovered | "
             "measured drop | estimated drop | search s | rest s | search / rest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in results["entries"].values():
        b, a = e["budget"], e["accuracy"]
        tried = ", ".join(f"{c['value']:g}: " + ("unreachable" if c["estimated_drop"] is None else
                                                  f"{c['estimated_drop']:.1f}") for c in b["candidates"])
        rest = _rest(e)
        lines.append(f"| {e['row']} | {e['max_drop']:g} | {GOALS.get(e['row'], '-')} | {tried} | {b['knob']} "
                     f"{b['chosen']:g} | {e['macs_ratio']:.2f} | {a['teacher']:.2f} | **{a['recovered']:.2f}** | "
                     f"**{e['measured_drop']:.2f}** | {e['estimate']['drop']:.2f} | {e['seconds'].get('budget', 0):.0f} "
                     f"| {rest:.0f} | {e['seconds'].get('budget', 0) / rest:.2f} |")
    lines += ["", "## Runs", ""]
    for e in results["entries"].values():
        lines.append(f"- {e['row']} at {e['max_drop']:g}: `{e['record']['command']}`. {describe(e['record'])} "
                     f"Load `{e['uptime_before']}` before, `{e['uptime_after']}` after. Stage seconds: "
                     + ", ".join(f"{k} {v}" for k, v in e["seconds"].items())
                     + (f" (dreams from the cache; dreamed in {e['dream_seconds']:.0f} s)" if e["dreams_cached"] else "")
                     + "." + "".join(f" Warned: \"{w}\"" for w in e["warnings"]))
    return "\n".join(lines) + "\n"


def _rest(entry: dict) -> float:
    """The build's stage seconds without the search, with the dreams' own seconds where they were cached."""
    seconds = entry["seconds"]
    rest = sum(v for k, v in seconds.items() if k != "budget")
    return rest + (entry["dream_seconds"] or 0) if entry["dreams_cached"] else rest


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, required=True, help="folder holding data/ and models/")
    p.add_argument("--mobilenet", type=Path, help="the MobileNetV3-small teacher (train_mobilenet_teacher.py)")
    p.add_argument("--rows", default="r56-mag", help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--max-drop", type=float, default=1.0, help="the accuracy budget, points of top-1")
    p.add_argument("--work", type=Path, default=Path("/tmp/edgefree-max-drop"), help="build folders")
    p.add_argument("--cache", type=Path, default=Path("/tmp/edgefree-max-drop/cache"), help="dream cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="threads of the build (1: steady under other load)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render", action="store_true", help="only render results/max_drop.md from its .json")
    return p


def written(args) -> list[str]:
    """The results files a command writes (``reproduce.py --check``)."""
    return ["max_drop.json"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    path = HERE / "results" / "max_drop.json"
    results = json.loads(path.read_text()) if path.is_file() else {"entries": {}}
    rows = [r for r in args.rows.split(",") if r] if not args.render else []
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    for row in rows:
        entry = run(row, args)
        results["entries"][f"{row}@{args.max_drop:g}"] = entry
        path.write_text(json.dumps(results, indent=2))
        print(f"{row}: chose {entry['budget']['knob']} {entry['budget']['chosen']:g}, measured drop "
              f"{entry['measured_drop']:.2f}, estimated {entry['estimate']['drop']:.2f}", flush=True)
    path.with_suffix(".md").write_text(render(results))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
