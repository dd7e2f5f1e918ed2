"""Candidate features for the data-free estimate, on fully recovered students of finished builds.

The shipped estimate (``edgefree.recover.estimate``) measures how often the student disagrees with
its teacher on held-out dreams; it under-estimates what fully distilled compact students lose
(``fidelity.md``). This probe asks whether either of two other measurements tracks the real drop
better, on the students of finished builds (their ``report.json``, evaluated on the test split):

- **second kind**: disagreement on 256 dreams of another kind than the training dreams: the same
  inversion at the BatchNorm weight ``auto`` (the teacher labels ~90% of them as their target)
  and a seed of their own;
- **adversarial**: disagreement after 5 signed-gradient steps that push the first 128 held-out
  dreams (L-inf radius 1/255 of the value range) towards the largest teacher-student KL divergence.

    python benchmarks/estimate_probes.py --builds /tmp/edgefree-levers/r20-ch2x-gradual-3 ...
    # -> results/estimate_probes.{json,md}: per student, and the Spearman correlation of each feature
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import describe, run_record  # noqa: E402

RESULTS = HERE / "results" / "estimate_probes"
FEATURES = {"held_out": "held-out dreams (shipped)", "second_kind": "dreams of a second kind",
            "adversarial": "adversarial, 1/255"}
ADVERSARIAL_IMAGES = 128


def _kl(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), log_target=True, reduction="none").sum(1)


def _disagree(teacher, student, x) -> float:
    """The shipped estimate's own measure (``edgefree.recover.estimate``), on any images."""
    from edgefree.recover.estimate import _disagree as disagree, _logits as logits

    return disagree(logits(teacher, x), logits(student, x))


def _adversarial(teacher, student, x0: torch.Tensor, radius: float, value_range, steps: int = 5) -> torch.Tensor:
    lo, hi = value_range
    eps = radius * (hi - lo)
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        grad, = torch.autograd.grad(_kl(teacher(x), student(x)).sum(), x)
        x = (x.detach() + eps / 2 * grad.sign()).clamp(x0 - eps, x0 + eps).clamp(lo, hi)
    return x


def probe(folders: list[Path], work: Path, quiet: bool) -> dict:
    from edgefree.config import BuildConfig
    from edgefree.models import load_teacher
    from edgefree.pipeline import held_out_dreams, synthesize_cached
    from edgefree.recover.saved import load_student, student_source

    teachers, rows = {}, {}
    for folder in folders:
        report_path = folder / "report.json"
        if not report_path.exists() or not (folder / "student.pt").exists():
            print(f"   {folder}: skipped (no finished build)", flush=True)
            continue
        report = json.loads(report_path.read_text())
        if report["accuracy"].get("teacher") is None:
            print(f"   {folder}: skipped (built without evaluation data)", flush=True)
            continue
        config = BuildConfig.from_dict(report["config"])
        key = str(config.model)
        if key not in teachers:
            teacher = load_teacher(config.arch, config.model, config.num_classes, config.input_changes())
            second = config.replace(seed=config.seed + 7919, cache=work / "cache",
                                    synthesis=config.synthesis.replace(images=256, bn_weight="auto", shards=1))
            teachers[key] = (teacher, synthesize_cached(teacher, second, None, not quiet).images,
                             held_out_dreams(teacher, config, not quiet).images)
        teacher, second_kind, held_out = teachers[key]
        t = teacher.module.eval()
        student = load_student(folder, student_source(report["config"]), config.num_classes).eval()
        a = report["accuracy"]
        rows[folder.name] = {
            "arch": config.arch, "build": str(folder), "measured_drop": round(a["teacher"] - a["recovered"], 2),
            "held_out": _disagree(t, student, held_out), "second_kind": _disagree(t, student, second_kind),
            "adversarial": _disagree(t, student, _adversarial(t, student, held_out[:ADVERSARIAL_IMAGES], 1 / 255,
                                                              teacher.spec.value_range))}
        print(f"{folder.name}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[folder.name].items()
                                             if isinstance(v, float)), flush=True)
    drops = [r["measured_drop"] for r in rows.values()]
    spearman = {f: float(spearmanr(drops, [r[f] for r in rows.values()])[0]) for f in FEATURES} if len(rows) > 2 else {}
    return {"rows": rows, "spearman": spearman}


def render(result: dict) -> str:
    rows = sorted(result["rows"].items(), key=lambda kv: (kv[1]["arch"], kv[1]["measured_drop"]))
    lines = ["# Estimate probes: which disagreement tracks the real drop of fully recovered students", "",
             "Disagreement (% of the images on which the student's top-1 differs from the teacher's) on the build's "
             "held-out dreams (what the shipped estimate reads), on dreams of a second kind (the same inversion at "
             "BatchNorm weight `auto`, a seed of their own), and on the held-out dreams pushed 5 signed-gradient "
             "steps towards the largest teacher-student KL (the first 128, L-inf radius 1/255). Measured drop: the build's "
             "own top-1 on the 10,000 CIFAR-10 test images.", "",
             "| student | teacher | measured drop | " + " | ".join(FEATURES.values()) + " |",
             "|---|---|---|" + "---|" * len(FEATURES)]
    for name, r in rows:
        lines.append(f"| {name} | {r['arch']} | {r['measured_drop']:.2f} | "
                     + " | ".join(f"{r[f]:.1f}" for f in FEATURES) + " |")
    lines += ["", "Spearman correlation with the measured drop, over these students: "
              + ", ".join(f"{FEATURES[f]} **{v:.2f}**" for f, v in result["spearman"].items()) + ".", ""]
    for arch in sorted({r["arch"] for _, r in rows}):  # within one teacher, where it has four students or more
        mine = [r for _, r in rows if r["arch"] == arch]
        if len(mine) >= 4:
            drops = [r["measured_drop"] for r in mine]
            lines.append(f"- {arch} alone ({len(mine)} students): " + ", ".join(
                f"{FEATURES[f]} {spearmanr(drops, [r[f] for r in mine])[0]:.2f}" for f in FEATURES) + ".")
    lines += ["",
              f"Command: `{result['record']['command']}`. {describe(result['record'])}", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--builds", type=Path, nargs="+", default=[], help="finished build folders (report.json, student.pt)")
    p.add_argument("--work", type=Path, default=Path("/tmp/edgefree-estimate-probes"), help="dream cache")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render", action="store_true", help="only render results/estimate_probes.md from its .json")
    return p


def written(args) -> list[str]:
    """The results files a command writes (``reproduce.py --check``)."""
    return ["estimate_probes.json"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.render:
        RESULTS.with_suffix(".md").write_text(render(json.loads(RESULTS.with_suffix(".json").read_text())))
        return
    if not args.builds:
        raise SystemExit("--builds: name at least one finished build folder (report.json with --eval-data, student.pt)")
    torch.set_num_threads(args.threads)
    result = probe(args.builds, args.work, args.quiet)
    result["record"] = run_record(__file__, argv)
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    RESULTS.with_suffix(".md").write_text(render(result))
    print(f"wrote {RESULTS}.json and .md", flush=True)


if __name__ == "__main__":
    main()
