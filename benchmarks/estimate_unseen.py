"""The shipped accuracy estimate on finished builds it was not fitted on: estimated against measured drop.

``benchmarks/fidelity.py`` fits the mapping (``estimate_fit.json``) and scores it by leaving each
architecture out of the fit in turn. This asks the plainer question a user has: for builds made
after the fit, by the recipes users run, how far is the estimate the package ships from the drop
measured on the test split? Each build folder (its ``report.json`` with evaluation data, and its
saved student, teacher and dreams) is measured again on the held-out dreams a build uses
(``fidelity.py --rescore held-out``), the shipped fit turns its features into points, and a build
already among the fit's students (``results/fidelity.json``, whose rows the shipped fit was fitted
on) is refused, so none is scored on its own fit.

    python benchmarks/estimate_unseen.py BUILD_FOLDER [BUILD_FOLDER ...]
    # -> results/estimate_unseen.{json,md}; --merge keeps the builds scored before
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fidelity import build_rows, teacher_class  # noqa: E402
from provenance import run_record  # noqa: E402

from edgefree.machine import machine_info  # noqa: E402
from edgefree.recover.estimate import FIT, chance_drop, load_fit, predict  # noqa: E402

FITTED = HERE / "results" / "fidelity.json"  # the students the shipped fit was fitted on
BIG_DROP, LOW_ESTIMATE = 5.0, 2.5  # fidelity.py's goal: no drop above 5 points estimated below 2.5


def score(rows: dict, fit: dict, key: str = "estimated_drop") -> dict:
    """Each row's estimate by ``fit`` (under ``key``), and the summary: MAE, Spearman, big drops estimated low,
    per recipe."""
    for row in rows.values():
        classes = teacher_class(row["teacher"]).num_classes
        row[key] = round(predict(fit, row["features"], classes), 2)
        if key == "estimated_drop":
            row["miss"] = round(row["estimated_drop"] - max(row["measured_drop"], 0.0), 2)
        row["chance_drop"] = chance_drop(classes)

    def summary(group: list[dict]) -> dict:
        measured = np.array([r["measured_drop"] for r in group])
        estimated = np.array([r[key] for r in group])
        return {"students": len(group), "mae": float(np.abs(estimated - np.maximum(measured, 0)).mean()),
                "spearman": float(spearmanr(measured, estimated)[0]) if len(group) > 2 else None,
                "mean_miss": float((estimated - np.maximum(measured, 0)).mean()),
                "big_drops_estimated_low": [r["student"] for r in group
                                            if r["measured_drop"] > BIG_DROP and r[key] < LOW_ESTIMATE]}

    everyone = list(rows.values())
    kinds = sorted({(r["arch"], r["full_recipe"]) for r in everyone})
    return {"all": summary(everyone),
            "by_kind": {f"{arch} / {recipe}": summary([r for r in everyone
                                                       if (r["arch"], r["full_recipe"]) == (arch, recipe)])
                        for arch, recipe in kinds}}


def render(result: dict) -> str:
    s, fit = result["summary"]["all"], result["fit"]
    low = s["big_drops_estimated_low"]
    lines = ["# The shipped accuracy estimate on builds it was not fitted on", "",
             "Produced by " + ", then ".join(
                 f"`{run['command']}` at commit `{run['commit']}`" + (" with uncommitted changes" if run.get("dirty") else "")
                 for run in result.get("runs") or [{**result["run"], "command": result["command"]}])
             + ". The fit is the package's "
             f"`estimate_fit.json` (form `{fit['form']}`, fitted on {fit['students']} students by "
             f"`{fit['command']}`); none of these builds is among its students. Each build's features are measured "
             "again on the held-out dreams a build uses; its measured drop is its teacher's top-1 minus its own on "
             "its evaluation set (the images or windows counted in the table).", "",
             f"- {s['students']} builds: mean absolute error **{s['mae']:.2f}** points, Spearman "
             f"**{s['spearman']:.3f}**, mean of estimate minus measured {s['mean_miss']:+.2f}.",
             f"- Drops above {BIG_DROP:g} points estimated below {LOW_ESTIMATE:g}: "
             + (", ".join(low) if low else "none") + "."]
    before = result.get("before")
    if before:
        b = before["summary"]["all"]
        lines.append(f"- The fit `{before['fit']['form']}` of `{before['path']}` (fitted on {before['fit']['students']} "
                     f"students), on the same builds: mean absolute error {b['mae']:.2f}, Spearman {b['spearman']:.3f}, "
                     f"mean of estimate minus measured {b['mean_miss']:+.2f}; drops above {BIG_DROP:g} points estimated "
                     f"below {LOW_ESTIMATE:g}: " + (", ".join(b["big_drops_estimated_low"]) or "none") + ".")
    lines += ["",
             "| architecture / recipe | builds | MAE | estimate minus measured, mean |", "|---|---|---|---|"]
    for kind, k in result["summary"]["by_kind"].items():
        lines.append(f"| {kind} | {k['students']} | {k['mae']:.2f} | {k['mean_miss']:+.2f} |")
    lines += ["", "| build | recipe | pruning | evaluated on | teacher top-1 | student top-1 | measured drop | "
              "estimated drop | miss |" + (" estimated by the other fit |" if before else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if before else "")]
    for r in sorted(result["rows"].values(), key=lambda r: (r["arch"], r["student"])):
        pruning = " + ".join(p["kind"] + (f" {p['sparsity']:g}" if p["kind"] == "magnitude" else
                                          f" macs {p.get('macs_target')}") for p in r["pruning"])
        lines.append(f"| {r['student'].removeprefix('build:')} | {r['full_recipe']} | {pruning} | {r['eval_images']} | "
                     f"{r['teacher_top1']:.2f} | {r['student_top1']:.2f} | {r['measured_drop']:.2f} | "
                     f"{r['estimated_drop']:.2f} | {r['miss']:+.2f} |"
                     + (f" {r['estimated_before']:.2f} |" if before else ""))
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['versions'].get('torch')}.", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", type=Path, nargs="+", help="finished build folders (report.json with --eval-data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--before", type=Path, help="another fit (an estimate_fit.json, e.g. the one shipped "
                        "before: git show REV:toolchain/edgefree/recover/estimate_fit.json > FILE) scored on the "
                        "same builds, beside the shipped one")
    parser.add_argument("--merge", action="store_true", help="keep the builds already in the results (their "
                        "features as measured then), all scored again by the shipped fit")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["estimate_unseen.json", "estimate_unseen.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    fit = load_fit()
    run = run_record(__file__, argv, [FITTED, FIT] + ([args.before] if args.before else []))
    fitted = json.loads(FITTED.read_text())["rows"]
    if len(fitted) != fit["students"]:
        sys.exit(f"{FITTED} holds {len(fitted)} students and the shipped fit {fit['students']}: fit and results "
                 "differ, run `python benchmarks/fidelity.py --fit-only` first")
    rows = build_rows(args.builds, "held-out")
    seen = sorted(set(rows) & set(fitted))
    if seen:
        sys.exit(f"{', '.join(seen)}: among the fit's own students; name builds made after the fit")
    if not rows:
        sys.exit("no build with evaluation data and an estimate among the folders given")
    runs = [run]
    stored = args.results / "estimate_unseen.json"
    if args.merge and stored.exists():
        earlier = json.loads(stored.read_text())
        rows = {**earlier["rows"], **rows}
        runs = [r for r in earlier.get("runs") or [earlier["run"]] if r["command"] != run["command"]] + runs
    keep = ("form", "students", "command", "commit")
    result = {"command": run["command"], "run": run, "runs": runs, "fit": {k: fit.get(k) for k in keep},
              "rows": rows, "summary": score(rows, fit), "machine": machine_info()}
    if args.before:
        other = load_fit(args.before)
        result["before"] = {"path": str(args.before), "fit": {k: other.get(k) for k in keep},
                            "summary": score(rows, other, "estimated_before")}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "estimate_unseen.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.results / "estimate_unseen.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
