"""CIFAR-10 recovery benchmark: teacher -> pruned -> recovered, baselines, sparsity sweep, cost.

Every row runs ``edgefree.pipeline.build`` (the code behind ``edgefree build``) on a shared
CIFAR-10 teacher, then the baselines on the same pruned student and budget:

* ``noise``: reconstruction and distillation on clipped Gaussian noise in place of the dreams
  (does synthesis matter?)
* ``bn-recal``: BatchNorm re-estimation of the pruned student on the dreams, no gradient steps
* ``real-data``: reconstruction and distillation on as many *real training* images, same
  settings -- an upper bound, NOT data-free: the only place in edgefree that reads the train split.

Results are merged row by row into ``results/cifar10_recovery.json`` (so rows can be run
separately on a busy machine) and rendered to ``.md`` and ``.png``.

    python benchmarks/cifar10_recovery.py --shared ../shared            # every row
    python benchmarks/cifar10_recovery.py --shared ../shared --rows r20-75-fast,r56-75-fast
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgefree.config import BuildConfig, MagnitudePruning, recipe
from edgefree.data import load_eval_data
from edgefree.evaluate import accuracy
from edgefree.machine import machine_info
from edgefree.models import load_teacher
from edgefree.pipeline import build, synthesize_cached
from edgefree.recover import SyntheticSet, distill, prune, reconstruct

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by the tests
from baselines import gaussian_noise_set, recalibrate_batchnorm  # noqa: E402
from edgefree.markdown import percent
from provenance import run_record  # noqa: E402

HERE = Path(__file__).resolve().parent
TEACHERS = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}


@dataclass(frozen=True)
class Row:
    """One build: a teacher, a sparsity, the recipe whose synthesis and distillation it uses."""

    arch: str
    sparsity: float
    synthesis: str  # recipe whose synthesis settings make the dreams
    distill: str | None = None  # recipe whose distillation settings are used (None: the same)
    images: float = 1.0  # synthesis images x this (the budget sweep)
    baselines: bool = False
    bn_weight: float | None = None  # the BatchNorm weight of synthesis, over the recipe's


    @property
    def label(self) -> str:
        kd = f" + {self.distill} KD" if self.distill and self.distill != self.synthesis else ""
        scale = f" x{self.images:g} images" if self.images != 1 else ""
        weight = f" at BatchNorm weight {self.bn_weight:g}" if self.bn_weight is not None else ""
        return f"{self.synthesis}{weight}{scale}{kd}"


ROWS = {
    "r20-75-fast": Row("resnet20-cifar", 0.75, "fast", baselines=True),
    "r20-75-paper": Row("resnet20-cifar", 0.75, "paper"),
    "r20-75-paper-fastkd": Row("resnet20-cifar", 0.75, "paper", distill="fast"),
    "r20-75-fast-x0.5": Row("resnet20-cifar", 0.75, "fast", images=0.5),
    "r20-75-fast-x2": Row("resnet20-cifar", 0.75, "fast", images=2.0),
    "r20-75-thorough": Row("resnet20-cifar", 0.75, "thorough"),
    "r20-75-fast-thorough": Row("resnet20-cifar", 0.75, "fast", distill="thorough"),
    "r20-75-generator": Row("resnet20-cifar", 0.75, "generator", bn_weight=10.0),
    "r20-75-generator-thorough": Row("resnet20-cifar", 0.75, "generator", distill="thorough", bn_weight=10.0),
    "r20-50-fast": Row("resnet20-cifar", 0.50, "fast"),
    "r20-90-fast": Row("resnet20-cifar", 0.90, "fast"),
    "r56-75-fast": Row("resnet56-cifar", 0.75, "fast", baselines=True),
    "r56-75-paper": Row("resnet56-cifar", 0.75, "paper"),
    "r56-75-thorough": Row("resnet56-cifar", 0.75, "thorough"),
    "r56-75-fast-thorough": Row("resnet56-cifar", 0.75, "fast", distill="thorough"),
    "r56-75-generator": Row("resnet56-cifar", 0.75, "generator", bn_weight=10.0),
}


def real_train_subset(train_zip: Path, n: int, spec, seed: int) -> SyntheticSet:
    """``n`` random real training images (class-balanced). Upper bound only: not data-free."""
    with zipfile.ZipFile(train_zip) as archive:
        names = sorted(x for x in archive.namelist() if x.endswith(".jpg"))
        classes = list(spec.class_names)
        rng = np.random.default_rng(seed)
        picked = []
        for c in classes:
            of_class = [x for x in names if x.split("/")[-2] == c]
            picked += list(rng.choice(of_class, n // len(classes), replace=False))
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(x))).convert("RGB")) for x in picked])
    images = spec.normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)
    labels = torch.tensor([classes.index(x.split("/")[-2]) for x in picked])
    return SyntheticSet(images, labels, {"kind": "real-train-subset"})


def row_config(row_id: str, shared: Path, work: Path, seed: int) -> BuildConfig:
    """The build of one row. Rows with the same teacher and synthesis settings share one synthetic set."""
    row = ROWS[row_id]
    synthesis = recipe(row.synthesis).synthesis
    synthesis = synthesis.replace(images=round(synthesis.images * row.images),
                                  **({} if row.bn_weight is None else {"bn_weight": row.bn_weight}))
    after_synthesis = recipe(row.distill or row.synthesis)  # refit and KD settings
    return BuildConfig(
        target="x86-64", out=work / row_id, model=shared / "models" / TEACHERS[row.arch], arch=row.arch,
        eval_data=str(shared / "data" / "cifar10-jpeg" / "test.zip"), seed=seed, recipe=row.synthesis,
        cache=work / "cache", prune=MagnitudePruning(sparsity=row.sparsity), synthesis=synthesis,
        reconstruct=after_synthesis.reconstruct, distill=after_synthesis.distill, export=None, bench=None,
    )


def _finished_build(config: BuildConfig) -> dict | None:
    """The report of an earlier build of exactly this config in its folder, if there is one."""
    path = Path(config.out) / "report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    same = report["config"] == json.loads(json.dumps(config.to_dict(), default=str))
    return report if same else None


def run_row(row_id: str, shared: Path, work: Path, seed: int, progress: bool,
            reuse: bool = False, baselines: bool = True) -> dict:
    spec = ROWS[row_id]
    config = row_config(row_id, shared, work, seed)
    report = (reuse and _finished_build(config)) or build(config, progress=progress)
    row = {
        "row": row_id, "model": spec.arch, "recipe": spec.label, "seed": seed,
        "sparsity_target": spec.sparsity, "sparsity_achieved": report["sparsity"],
        "accuracy": report["accuracy"], "synthesis": report["synthesis"],
        "synthesis_config": config.synthesis.to_dict(), "distill_config": config.distill.to_dict(),
        # synthesis seconds as measured when the set was made (a later row may reuse it)
        "seconds": {**report["seconds"], "synthesize": report["synthesis"]["seconds"]}, "eval_images": report["eval_data"]["images"],
        "machine": machine_info(),
    }
    if spec.baselines and baselines:
        row["baselines"] = run_baselines(config, shared, report, progress)
    return row


def run_baselines(config: BuildConfig, shared: Path, report: dict, progress: bool) -> dict:
    teacher = load_teacher(config.arch, config.model)
    spec = teacher.spec
    eval_data = load_eval_data(config.eval_data, spec)
    pruned = prune(teacher, config.prune)
    dreams = SyntheticSet.load(Path(config.out) / "synthetic.pt")
    n = len(dreams)
    results = {}
    started = time.perf_counter()
    recal = recalibrate_batchnorm(pruned.model, dreams.images)
    results["bn-recal"] = {"accuracy": accuracy(recal, eval_data, spec), "seconds": time.perf_counter() - started}
    for name, images in (("noise", gaussian_noise_set(spec, n, 10, config.seed)),
                         ("real-data (not data-free)", real_train_subset(shared / "data" / "cifar10-jpeg" / "train.zip", n, spec, config.seed))):
        started = time.perf_counter()
        refit = reconstruct(teacher, pruned, images, config.reconstruct, progress=progress)
        student = distill(teacher, refit, images, config.distill, seed=config.seed, progress=progress).model
        results[name] = {"accuracy": accuracy(student, eval_data, spec), "seconds": time.perf_counter() - started}
    return results


def recovery_seconds(row: dict) -> float:
    """Wall seconds from pruned student to recovered one: synthesis, refit (if any) and distillation."""
    return row["seconds"]["synthesize"] + row["seconds"].get("reconstruct", 0.0) + row["seconds"]["distill"]


def render(rows: dict) -> str:
    commands = sorted({r["command"] for r in rows.values()} | {r["repeat"]["command"] for r in rows.values() if "repeat" in r}
                      | {s["command"] for r in rows.values() for s in r.get("seeds", {}).values()})
    seeds = sorted({r["seed"] for r in rows.values()})
    out = ["# CIFAR-10 (JPEG q75 copy) data-free recovery", "",
           "Produced by " + "; ".join(f"`{c}`" for c in commands)
           + " (edgefree's own `pipeline.build`; evaluation on all 10,000 test images).",
           f"Accuracies are top-1 %. Seconds are wall time on the machine below. Seed: {', '.join(map(str, seeds))}.", "",
           "| row | model | recipe | sparsity target / achieved | teacher | pruned | refit | recovered | gap | synthesis images (steps, all batches) | synth s | refit s | distill s | BN re-est. | KD on noise | KD on real (upper bound, not data-free) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows.values():
        a, s, b = r["accuracy"], r["synthesis"], r.get("baselines", {})
        base = [f"{b[k]['accuracy']:.2f}" if k in b else "-" for k in ("bn-recal", "noise", "real-data (not data-free)")]
        out.append(f"| {r['row']} | {r['model']} | {r['recipe']} | {r['sparsity_target']:.2f} / {r['sparsity_achieved']:.4f} | "
                   f"{a['teacher']:.2f} | {a['pruned']:.2f} | {percent(a.get('reconstructed'))} | **{a['recovered']:.2f}** | "
                   f"{a['teacher'] - a['recovered']:.2f} | {s['images']} ({s.get('steps') or '?'}) | {r['seconds']['synthesize']:.0f} | "
                   f"{r['seconds'].get('reconstruct', 0):.0f} | {r['seconds']['distill']:.0f} | "
                   + " | ".join(base) + " |")
    renamed = [r for r in rows.values() if r.get("measured_as")]
    if renamed:
        out += ["", "Measured under another row name, same settings: " + "; ".join(
            f"`{r['row']}` as `{r['measured_as']['row']}` ({r['measured_as']['why']})" for r in renamed) + "."]
    out += _goal_lines(rows) + _cost_lines(rows) + _repeat_lines(rows) + _spread_lines(rows)
    machines = {}
    for r in rows.values():
        m = r["machine"]
        machines.setdefault((m["cpu"], m["cores"], tuple(m["versions"].items())), []).append(r["row"])
    for (cpu, cores, versions), names in machines.items():
        which = "" if len(machines) == 1 else f" ({', '.join(names)})"
        out += ["", f"Machine{which}: {cpu}, {cores} cores; " + ", ".join(f"{k} {v}" for k, v in versions)]
    out += ["", "![accuracy per model and recovered accuracy against recovery cost](cifar10_recovery.png)", ""]
    return "\n".join(out)


def _goal_lines(rows: dict, sparsity: float = 0.75) -> list[str]:
    """Per model, the best recovered accuracy at ``sparsity`` (a row's mean over its seeds, where it has
    several) against the teacher: the issue's accuracy goal."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows.values()):
        at = [r for r in rows.values() if r["model"] == model and r["sparsity_target"] == sparsity]
        if not at:
            continue
        best = max(at, key=_mean_recovered)  # rows built with several seeds count by their mean
        mean, seeds = _mean_recovered(best), 1 + len(best.get("seeds", {}))
        gap = best["accuracy"]["teacher"] - mean
        verdict = "met (stretch 0.5 met too)" if gap <= 0.5 else "met" if gap <= 1.0 else "NOT met"
        recovers = f"{mean:.2f} on the mean of {seeds} seeds" if seeds > 1 else f"{mean:.2f}"
        out.append(f"- {model}: best `{best['recipe']}` ({best['row']}) recovers {recovers} "
                   f"against the teacher's {best['accuracy']['teacher']:.2f}, **{gap:.2f}** points short, in "
                   f"{recovery_seconds(best):.0f} s of synthesis, refit and "
                   f"distillation: goal (<= 1.0) {verdict}.")
        for r in (r for r in at if r.get("seeds")):  # and on how many of its seeds each row meets the goal
            gaps = [r["accuracy"]["teacher"] - v for v in _recovered_by_seed(r).values()]
            out.append(f"  - across seeds, `{r['recipe']}` ({r['row']}) is within 1 point on {sum(g <= 1.0 for g in gaps)} "
                       f"of {len(gaps)} seeds; its mean is **{np.mean(gaps):.2f}** points short.")
    return ["", f"## Accuracy goal: within 1 point of the teacher at {sparsity:.0%}", ""] + out if out else []


def _cost_lines(rows: dict) -> list[str]:
    """Our default recipe against the paper's, same teacher and machine: the issue's cost goal."""
    out = []
    for arch, short in (("resnet20-cifar", "r20"), ("resnet56-cifar", "r56")):
        ours, paper = rows.get(f"{short}-75-fast"), rows.get(f"{short}-75-paper")
        if not (ours and paper):
            continue
        ratio = paper["seconds"]["synthesize"] / ours["seconds"]["synthesize"]
        total = recovery_seconds(paper) / recovery_seconds(ours)
        delta = ours["accuracy"]["recovered"] - paper["accuracy"]["recovered"]
        verdict = "met" if ratio >= 5 and delta >= 0 else "NOT met"
        out.append(f"- {arch} at 75%: `fast` synthesis is **{ratio:.1f}x** cheaper than `paper` "
                   f"({ours['seconds']['synthesize']:.0f} s vs {paper['seconds']['synthesize']:.0f} s; synthesis, refit and "
                   f"distillation together {total:.1f}x) at **{delta:+.2f}** points recovered accuracy: goal (>= 5x at >= 0) {verdict}.")
        same_kd = rows.get(f"{short}-75-paper-fastkd")
        if same_kd:
            out.append(f"- {arch}, synthesis alone (both sets distilled with `fast`'s settings): the paper's dreams "
                       f"give {same_kd['accuracy']['recovered']:.2f}, ours {ours['accuracy']['recovered']:.2f} "
                       f"(**{ours['accuracy']['recovered'] - same_kd['accuracy']['recovered']:+.2f}**).")
    return ["", "## Cost: `fast` against `paper`", ""] + out if out else []


def _repeat_lines(rows: dict) -> list[str]:
    out = []
    for r in rows.values():
        rep = r.get("repeat")
        if rep:
            diffs = ", ".join(f"{k} {r['accuracy'][k]:.2f} / {rep['accuracy'][k]:.2f}" for k in ("teacher", "pruned", "recovered"))
            out.append(f"- {r['row']}: first / repeat top-1: {diffs}; synthetic images bit-identical: "
                       f"{'yes' if rep['identical_images'] else 'no'}; synthesis {r['seconds']['synthesize']:.0f} s / "
                       f"{rep['seconds']['synthesize']:.0f} s.")
    if not out:
        return []
    return ["", "## Reproducibility", "",
            "Rows built a second time from scratch (own work folder and synthesis cache, same seed) with `--repeat`:", ""] + out


def _recovered_by_seed(row: dict) -> dict[int, float]:
    return {row["seed"]: row["accuracy"]["recovered"]} | {int(k): v["accuracy"]["recovered"] for k, v in row["seeds"].items()}


def _mean_recovered(row: dict) -> float:
    return float(np.mean(list(_recovered_by_seed(row).values()))) if row.get("seeds") else row["accuracy"]["recovered"]


def _spread_lines(rows: dict) -> list[str]:
    out = []
    for r in rows.values():
        if not r.get("seeds"):
            continue
        by_seed = _recovered_by_seed(r)
        values = np.array(list(by_seed.values()))
        out.append(f"- {r['row']}: recovered " + ", ".join(f"{v:.2f} (seed {k})" for k, v in sorted(by_seed.items()))
                   + f": mean **{values.mean():.2f}**, sample std {values.std(ddof=1):.2f}, range {np.ptp(values):.2f}.")
    if not out:
        return []
    return ["", "## Spread across seeds", "",
            "Rows built again with other seeds (`--spread`): the seed changes the dreams and the distillation order;"
            " the teacher and the pruned student are the same. Differences between rows smaller than this spread are noise.",
            ""] + out


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    names = list(rows)
    x = np.arange(len(names))
    for i, key in enumerate(("teacher", "pruned", "recovered")):
        left.bar(x + (i - 1) * 0.27, [rows[n]["accuracy"][key] for n in names], 0.27, label=key)
    left.set_xticks(x, names, rotation=30, ha="right")
    left.set_ylabel("top-1 %")
    left.set_ylim(0, 115)  # room for the legend above the bars
    left.legend(loc="upper center", ncol=3, fontsize=8)
    left.set_title("teacher / pruned / recovered")
    at_75 = [n for n in names if rows[n]["sparsity_target"] == 0.75]  # the budget axis at one sparsity
    for model in dict.fromkeys(rows[n]["model"] for n in at_75):
        teacher = next(rows[n]["accuracy"]["teacher"] for n in at_75 if rows[n]["model"] == model)
        right.axhline(teacher - 1, color="grey", linestyle="--", linewidth=0.8)
        right.annotate(f"{model}: teacher - 1", (0.01, teacher - 1), xycoords=("axes fraction", "data"),
                       fontsize=7, color="grey", va="bottom")
    for n in at_75:
        r = rows[n]
        cost = recovery_seconds(r)
        dots = right.scatter(cost, r["accuracy"]["recovered"])
        right.annotate(n, (cost, r["accuracy"]["recovered"]), fontsize=8)
        if r.get("seeds"):  # every seed's result, on the line of the row's own
            right.scatter([cost] * len(r["seeds"]), [v["accuracy"]["recovered"] for v in r["seeds"].values()], marker="_", s=120,
                          color=dots.get_facecolor()[0])
    right.set_xscale("log")
    right.set_xlabel("synthesis + refit + distillation wall seconds (log)")
    right.set_ylabel("recovered top-1 %")
    right.set_title("recovered accuracy vs recovery cost (75% sparsity; dashes: other seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _load_rows(store: Path) -> dict:
    """The rows stored so far (re-read before every write: rows may be run by separate processes)."""
    return json.loads(store.read_text())["rows"] if store.exists() else {}


def _save_rows(store: Path, rows: dict) -> None:
    store.write_text(json.dumps({"rows": rows}, indent=2, default=str))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)} ('': none, e.g. with --repeat or --spread)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--reuse-builds", action="store_true",
                        help="take a row's finished build (same config) from --work instead of building again")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines (noise, BN re-est., real)")
    parser.add_argument("--repeat", default="", help="rows to build again from scratch (own folder and cache, same "
                        "seed) after the others, recording whether the figures reproduce")
    parser.add_argument("--spread", default="", help="rows to build again with other seeds (--spread-seeds; own "
                        "folders), recording the spread of the recovered accuracy")
    parser.add_argument("--spread-seeds", default="1,2", help="the other seeds for --spread")
    parser.add_argument("--render-only", action="store_true", help="only render the .md and .png from the .json")
    parser.add_argument("--synthesize-only", action="store_true",
                        help="only make (and cache) the rows' synthetic sets, e.g. while the machine is busy")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return ["cifar10_recovery.json", "cifar10_recovery.md", "cifar10_recovery.png"] if args.results.resolve() == (HERE / "results").resolve() else []


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if not (args.shared / "models").is_dir():
        sys.exit(f"needs the shared teachers and data: {args.shared}/models not found (pass --shared)")
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    store = args.results / "cifar10_recovery.json"
    data = args.shared / "data" / "cifar10-jpeg"
    run = None if args.render_only else run_record(__file__, argv, [
        *(args.shared / "models" / n for n in TEACHERS.values()), data / "test.zip",
        *([] if args.no_baselines else [data / "train.zip"])])
    command = run["command"] if run else None
    for row_id in [] if args.render_only else filter(None, args.rows.split(",")):
        if row_id not in ROWS:
            sys.exit(f"unknown row {row_id!r}; known: {list(ROWS)}")
        if args.synthesize_only:
            config = row_config(row_id, args.shared, args.work, args.seed)
            dreams = synthesize_cached(load_teacher(config.arch, config.model), config, Path(config.out), not args.quiet)
            print(f"== {row_id}: {len(dreams)} dreams, {dreams.stats['seconds']:.0f} s", flush=True)
            continue
        print(f"== {row_id}", flush=True)
        row = run_row(row_id, args.shared, args.work, args.seed, not args.quiet, args.reuse_builds,
                      not args.no_baselines)
        row["command"], row["run"] = command, run
        rows = _load_rows(store)
        rows[row_id] = row
        _save_rows(store, rows)
        print(json.dumps({k: row[k] for k in ("accuracy", "seconds")}), flush=True)
    for row_id in [] if args.render_only else filter(None, args.repeat.split(",")):
        print(f"== repeat {row_id}", flush=True)
        rows = _load_rows(store)
        if row_id not in rows:
            sys.exit(f"--repeat {row_id}: run the row first (not in {store})")
        repeat_work = args.work / "repeat"
        shutil.rmtree(repeat_work, ignore_errors=True)  # from scratch: no dreams or build left by an earlier repeat
        report = build(row_config(row_id, args.shared, repeat_work, args.seed), progress=not args.quiet)
        first = SyntheticSet.load(args.work / row_id / "synthetic.pt").images
        again = SyntheticSet.load(repeat_work / row_id / "synthetic.pt").images
        rows = _load_rows(store)
        rows[row_id]["repeat"] = {"accuracy": report["accuracy"], "identical_images": bool(torch.equal(first, again)),
                                  "seconds": {**report["seconds"], "synthesize": report["synthesis"]["seconds"]},
                                  "command": command, "run": run}
        _save_rows(store, rows)
    for row_id in [] if args.render_only else filter(None, args.spread.split(",")):
        for seed in (int(x) for x in filter(None, args.spread_seeds.split(","))):
            print(f"== {row_id}, seed {seed}", flush=True)
            if row_id not in ROWS or row_id not in _load_rows(store):
                sys.exit(f"--spread {row_id}: run the row first (not in {store})")
            if seed == args.seed:
                sys.exit(f"--spread-seeds: {seed} is the rows' own seed (--seed); choose other seeds")
            report = build(row_config(row_id, args.shared, args.work / f"seed{seed}", seed), progress=not args.quiet)
            rows = _load_rows(store)
            rows[row_id].setdefault("seeds", {})[str(seed)] = {
                "accuracy": report["accuracy"], "command": command, "run": run,
                "seconds": {**report["seconds"], "synthesize": report["synthesis"]["seconds"]}}
            _save_rows(store, rows)
    if args.synthesize_only or not store.exists():
        return
    rows = _load_rows(store)
    ordered = {k: rows[k] for k in ROWS if k in rows}
    (args.results / "cifar10_recovery.md").write_text(render(ordered))
    plot(ordered, args.results / "cifar10_recovery.png")


if __name__ == "__main__":
    main()
