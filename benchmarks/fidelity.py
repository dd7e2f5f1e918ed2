"""Fidelity of the data-free accuracy estimate: estimated against measured top-1 drop, and the fit itself.

For every teacher (CIFAR-10 ResNet-20 and ResNet-56, MobileNetV3-small at 32x32, the Blink EEG
CNN, the built-in digits CNN; a teacher whose weights are absent is skipped and named) one set of
dreams (``pipeline.synthesize_cached``) and the held-out dreams a build would use
(``pipeline.held_out_dreams``) are made once. Each student is pruned, refit on the dreams
(or not: the deliberately weak ones), distilled for a few epochs, then measured twice: its
real top-1 drop on the test split (CIFAR: a seeded random subset), and the features of
``edgefree.recover.estimate`` on the held-out dreams.

The mapping from features to drop is fitted here, on every student, in each of a few simple
forms; of the forms that estimate the fewest large drops low, the one with the smallest
leave-one-architecture-out error (fitted on the other architectures, tested on the held-out one,
for each in turn) is written to
``toolchain/edgefree/recover/estimate_fit.json`` with this command, the git commit and the students.

    nice -n 10 python benchmarks/fidelity.py --shared ../shared            # every student, then the fit
    python benchmarks/fidelity.py --fit-only                               # refit and render the stored rows
    # -> results/fidelity.{json,md,png} and the package's estimate_fit.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.stats import spearmanr

from edgefree.config import BuildConfig, ChannelPruning, MagnitudePruning, ReconstructConfig, recipe
from edgefree.data import load_eval_data
from edgefree.demo import default_teacher
from edgefree.evaluate import accuracy
from edgefree.machine import machine_info
from edgefree.models import load_teacher
from edgefree.pipeline import held_out_config, held_out_dreams, synthesize_cached
from edgefree.recover import distill, prune, reconstruct
from edgefree.recover.estimate import FIT, chance_drop, features, predict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TEACHER_DIR = Path("/work/teachers")


@dataclasses.dataclass(frozen=True)
class Teacher:
    arch: str
    weights: str | None  # "shared:<file>" (the shared models folder), a path, or None (built-in digits)
    recipe: str
    num_classes: int = 10
    input_shape: tuple | None = None


TEACHERS = {
    "resnet20": Teacher("resnet20-cifar", "shared:resnet20_cifar10jpeg.pt", "fast"),
    "resnet56": Teacher("resnet56-cifar", "shared:resnet56_cifar10jpeg.pt", "fast"),
    "mobilenet": Teacher("torchvision:mobilenet_v3_small", str(TEACHER_DIR / "mobilenet_v3_small.pt"), "fast",
                         input_shape=(3, 32, 32)),
    "eeg": Teacher("signal-cnn1d", str(TEACHER_DIR / "signal-cnn1d-blink.pt"), "fast", num_classes=2),
    "digits": Teacher("digits-cnn", None, "demo"),
}
M, C = MagnitudePruning, ChannelPruning
# id: (teacher, pruning stages, refit?, epochs: None = --epochs; weak students: no refit, one epoch)
STUDENTS = {
    "r20-mag50": ("resnet20", (M(0.5),), True, None),
    "r20-mag80": ("resnet20", (M(0.8),), True, None),
    "r20-mag90": ("resnet20", (M(0.9),), True, None),
    "r20-ch0.5": ("resnet20", (C(macs_target=0.5),), True, None),
    "r20-ch0.35": ("resnet20", (C(macs_target=0.35),), True, None),
    "r20-mag85-weak": ("resnet20", (M(0.85),), False, 1),
    "r20-ch0.35-weak": ("resnet20", (C(macs_target=0.35),), False, 1),
    "r56-mag80": ("resnet56", (M(0.8),), True, None),
    "r56-ch0.5": ("resnet56", (C(macs_target=0.5),), True, None),
    "r56-ch0.3": ("resnet56", (C(macs_target=0.3),), True, None),
    "r56-ch0.4-weak": ("resnet56", (C(macs_target=0.4),), False, 1),
    "mnv3-mag50": ("mobilenet", (M(0.5, scope="layer"),), True, None),
    "mnv3-mag75": ("mobilenet", (M(0.75, scope="layer"),), True, None),
    "mnv3-ch0.6": ("mobilenet", (C(macs_target=0.6),), True, None),
    "mnv3-ch0.5-weak": ("mobilenet", (C(macs_target=0.5),), False, 1),
    "eeg-mag75": ("eeg", (M(0.75),), True, None),
    "eeg-ch0.6": ("eeg", (C(macs_target=0.6),), True, None),
    "eeg-mag90-weak": ("eeg", (M(0.9),), False, 1),
    "digits-mag50": ("digits", (M(0.5),), True, None),
    "digits-mag80": ("digits", (M(0.8),), True, None),
    "digits-mag90": ("digits", (M(0.9),), True, None),
    "digits-mag90-weak": ("digits", (M(0.9),), False, 1),
}
# Simple forms of the mapping: (features, transform), each a least-squares fit with non-negative
# coefficients (the intercept is free). "log1p": log(1 + drop) on log(1 + feature), a power law;
# "logit": the logit of the drop's share of a student at chance, on the features; "log1p-max": a power
# law fitted on each feature alone, the estimate the largest of them (a student is read as far from its
# teacher as the feature that finds it farthest).
FORMS = {
    "linear-hard": (("disagree_hard",), None),
    "linear-hard-mix": (("disagree_hard", "disagree_mix"), None),
    "power-hard": (("disagree_hard",), "log1p"),
    "power-hard-mix": (("disagree_hard", "disagree_mix"), "log1p"),
    "power-disagree-kl": (("disagree", "kl"), "log1p"),
    "linear-disagree": (("disagree",), None),
    "logit-disagree": (("disagree",), "logit"),
    "logit-disagree-classmax": (("disagree", "disagree_class_max"), "logit"),
    "logit-kl-classmax": (("kl", "disagree_class_max"), "logit"),
    "logit-disagree-misfit": (("disagree", "label_misfit"), "logit"),
    "logit-kl-classmax-misfit": (("kl", "disagree_class_max", "label_misfit"), "logit"),
    "power-max-disagree-mix": (("disagree", "disagree_mix"), "log1p-max"),
    "power-max-hard-mix": (("disagree_hard", "disagree_mix"), "log1p-max"),
}
LOGIT_FLOOR = 0.005  # "logit": drops are clipped to this share of a student at chance (and 1 minus it) before the logit
SMALL_DROP = 10.0  # points: the range a budget such as --max-drop 1 lives in, reported apart
GOALS = {"spearman": 0.9, "loao_mae": 2.0, "big_miss": (5.0, 2.5)}
# points: a form that estimates a student identical to its teacher (every student feature 0, the dreams' own
# label_misfit) at this much or more, for some teacher of the validation, could never meet --max-drop 1 there
# (the smallest budget users state), so it is not chosen
ORIGIN_MAX = 1.0
DREAM_FEATURES = ("label_misfit",)  # features that describe the dreams, not the student


def _weights(t: Teacher, shared: Path) -> Path | None:
    if t.weights is None:
        return None
    return shared / "models" / t.weights.split(":", 1)[1] if t.weights.startswith("shared:") else Path(t.weights)


def _eval_data(key: str, teacher, shared: Path, work: Path, images: int, seed: int):
    if key == "digits":
        return load_eval_data("digits", teacher.spec)
    if key == "eeg":
        from blink_eeg import write_eval_npz

        return load_eval_data(str(write_eval_npz(work / "blink_test.npz")), teacher.spec)
    data = load_eval_data(str(shared / "data" / "cifar10-jpeg" / "test.zip"), teacher.spec)
    if images >= len(data):
        return data
    picked = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:images]
    return dataclasses.replace(data, pixels=data.pixels[picked], labels=data.labels[picked],
                               name=f"{data.name} ({images} random, seed {seed})")


def _config(key: str, t: Teacher, shared: Path, work: Path, dreams: int, seed: int) -> BuildConfig:
    synthesis = recipe(t.recipe).synthesis
    return BuildConfig(model=_weights(t, shared), arch=None if t.weights is None else t.arch, num_classes=t.num_classes,
                       input_shape=t.input_shape, seed=seed, recipe=t.recipe, cache=work / "cache", out=work / key,
                       synthesis=synthesis.replace(images=dreams), export=None, bench=None)


def run_teacher(key: str, ids: list[str], args) -> tuple[dict, dict]:
    """Every student of one teacher: (rows by id, the teacher's record)."""
    t = TEACHERS[key]
    config = _config(key, t, args.shared, args.work, args.dreams, args.seed)
    teacher = load_teacher(t.arch, config.model, t.num_classes, config.input_changes()) if config.model else \
        default_teacher()
    started = time.perf_counter()
    dreams = synthesize_cached(teacher, config, None, not args.quiet)
    held_out = held_out_dreams(teacher, config, not args.quiet)
    data = _eval_data(key, teacher, args.shared, args.work, args.eval_images, args.seed)
    base = accuracy(teacher.module, data, teacher.spec)
    weights = _weights(t, args.shared)
    record = {"arch": teacher.name, "weights": str(weights) if weights else "built-in",
              "sha256": hashlib.sha256(weights.read_bytes()).hexdigest() if weights else None,
              "teacher_top1": base, "eval": {"name": data.name, "images": len(data)}, "dreams": len(dreams),
              "held_out": len(held_out), "dream_seconds": round(time.perf_counter() - started, 1)}
    print(f"== {key}: teacher {base:.2f}% on {len(data)}, dreams {record['dream_seconds']} s", flush=True)
    rows = {}
    for sid in ids:
        _, stages, refit, epochs = STUDENTS[sid]
        started = time.perf_counter()
        student = prune(teacher, list(stages), dreams)
        if refit:
            student = reconstruct(teacher, student, dreams, ReconstructConfig(images=args.refit_images),
                                  progress=False)
        student = distill(teacher, student, dreams, config.distill.replace(epochs=epochs or args.epochs),
                          seed=args.seed, progress=False).model
        top1 = accuracy(student, data, teacher.spec)
        rows[sid] = {"student": sid, "teacher": key, "arch": teacher.name, "pruning": [p.to_dict() for p in stages],
                     "refit": refit, "epochs": epochs or args.epochs, "weak": not refit,
                     "teacher_top1": base, "student_top1": top1, "measured_drop": round(base - top1, 2),
                     "features": {k: round(v, 4) for k, v in
                                  features(teacher.module, student, held_out, teacher.spec, args.seed).items()},
                     "seconds": round(time.perf_counter() - started, 1)}
        print(f"   {sid}: drop {base - top1:.2f}  {rows[sid]['features']}  {rows[sid]['seconds']} s", flush=True)
    return rows, record


def teacher_class(key: str) -> Teacher:
    """The ``TEACHERS`` entry of a row's teacher key (``eeg``, or ``eeg@63fb3ff0`` for other weights of it)."""
    return TEACHERS[key.split("@", 1)[0]]


def build_rows(folders: list[Path], rescore: str | None = None, teachers: dict | None = None) -> dict[str, dict]:
    """Students of finished builds (their ``report.json``: the recipe's full recovery, evaluated on the test
    split, estimated on the build's own held-out dreams), as rows beside the cheap ones, each named
    ``build:<parent folder>/<folder>``. ``rescore``: the features measured again from the build's saved
    student, teacher and dreams, not read from the report, on the held-out dreams of ``RESCORE[rescore]``.
    ``teachers`` (the results' teachers): a build whose teacher's weights differ from those of its
    architecture's key there is filed under ``<key>@<first 8 hex of their sha256>``, entered in ``teachers``."""
    by_arch = {t.arch: key for key, t in TEACHERS.items()}
    rows = {}
    for folder in folders:
        report = json.loads((folder / "report.json").read_text())
        a, found = report["accuracy"], report.get("estimate", {}).get("recovered")
        key = by_arch.get(report["model"]["arch"])
        if key is None or a.get("teacher") is None or not found:
            print(f"   {folder}: skipped (another teacher, no evaluation data or no estimate)", flush=True)
            continue
        sid = f"build:{folder.resolve().parent.name}/{folder.name}"
        sha = report["model"].get("sha256")
        if teachers is not None and sha and key in teachers and teachers[key].get("sha256") not in (None, sha):
            key = f"{key}@{sha[:8]}"
            teachers.setdefault(key, {"arch": report["model"]["arch"], "weights": report["model"].get("source"),
                                      "sha256": sha, "teacher_top1": a["teacher"], "eval": report["eval_data"],
                                      "dreams": "-", "held_out": report["estimate"].get("held_out", {}).get("images"),
                                      "dream_seconds": "-"})
        measured = rescored(folder, report, rescore) if rescore else found["features"]
        rows[sid] = {"student": sid, "teacher": key, "arch": report["model"]["arch"],
                     "pruning": report["pruning"]["stages"], "refit": bool(report["reconstruct"].get("images")),
                     "epochs": report["distill"]["epochs"], "weak": False, "full_recipe": report["synthesis"]["recipe"],
                     "teacher_top1": a["teacher"], "student_top1": a["recovered"],
                     "measured_drop": round(a["teacher"] - a["recovered"], 2), "features": measured,
                     "rescored": rescore, "eval_images": report["eval_data"]["images"],
                     "seconds": sum(report["seconds"].values())}
        print(f"   {sid}: drop {rows[sid]['measured_drop']:.2f}  {measured}", flush=True)
    return rows


def _generator_draws(teacher, config: BuildConfig, dreams):
    """A probe: held-out dreams of the kind a generator's student trains on, fresh draws of the build's own
    generator (as many as ``held_out_config`` dreams, from noise of its seed, balanced labels)."""
    from edgefree.recover.inversion import SyntheticSet, balanced_labels

    if dreams.generator is None:
        return held_out_dreams(teacher, config, False)
    held = held_out_config(config)
    g = torch.Generator().manual_seed(held.seed)
    labels = balanced_labels(held.synthesis.images, dreams.generator.settings["num_classes"], g)
    return SyntheticSet(dreams.generator.sample(teacher.spec, labels, g), labels)


# --rescore: the held-out dreams a build's student is measured on again
RESCORE = {"held-out": lambda teacher, config, dreams: held_out_dreams(teacher, config, False),
           "generator-draws": _generator_draws}


def rescored(folder: Path, report: dict, kind: str) -> dict[str, float]:
    """The estimate's features of the student saved in ``folder``, on the held-out dreams ``RESCORE[kind]``."""
    from edgefree.recover.inversion import SyntheticSet
    from edgefree.recover.saved import load_student, student_source

    config = BuildConfig.from_dict(report["config"])
    teacher = load_teacher(config.arch, config.model, config.num_classes, config.input_changes()) if config.model \
        else default_teacher()
    dreams = SyntheticSet.load(folder / "synthetic.pt")
    held_out = RESCORE[kind](teacher, config, dreams)
    student = load_student(folder, student_source(report["config"]), config.num_classes)
    return {k: round(v, 4) for k, v in features(teacher.module, student, held_out, teacher.spec, config.seed).items()}


def _fit_form(rows: list[dict], form: str) -> dict:
    names, transform = FORMS[form]
    if transform == "log1p-max":
        return {"form": form, "features": list(names), "transform": transform,
                "parts": [_fit_features(rows, f"{form}:{n}", (n,), "log1p") for n in names]}
    return _fit_features(rows, form, names, transform)


def _fit_features(rows: list[dict], form: str, names: tuple[str, ...], transform: str | None) -> dict:
    x = np.array([[r["features"][n] for n in names] for r in rows], dtype=float)
    y = np.array([max(r["measured_drop"], 0.0) for r in rows])
    if transform == "log1p":
        x, y = np.log1p(np.maximum(x, 0)), np.log1p(y)
    elif transform == "logit":
        share = np.clip(y / np.array([chance_drop(teacher_class(r["teacher"]).num_classes) for r in rows]),
                        LOGIT_FLOOR, 1 - LOGIT_FLOOR)
        y = np.log(share / (1 - share))
    solution, _ = nnls(np.column_stack([np.ones(len(x)), -np.ones(len(x)), x]), y)  # intercept: first minus second
    return {"form": form, "features": list(names), "transform": transform,
            "intercept": float(solution[0] - solution[1]), "coef": [float(c) for c in solution[2:]]}


def _estimate(fit: dict, row: dict) -> float:
    return predict(fit, row["features"], teacher_class(row["teacher"]).num_classes)


def _loao(rows: list[dict], form: str) -> dict[str, float]:
    """Each row's estimate from the form fitted on the rows of every other architecture."""
    out = {}
    for arch in sorted({r["arch"] for r in rows}):
        fit = _fit_form([r for r in rows if r["arch"] != arch], form)
        out.update({r["student"]: _estimate(fit, r) for r in rows if r["arch"] == arch})
    return out


def _scores(rows: list[dict], estimated: dict[str, float]) -> dict:
    measured = np.array([r["measured_drop"] for r in rows])
    est = np.array([estimated[r["student"]] for r in rows])
    miss = np.abs(est - measured)
    worst = int(np.argmax(miss))
    big, low = GOALS["big_miss"]
    small = measured <= SMALL_DROP
    return {"spearman": float(spearmanr(est, measured).statistic), "mae": float(miss.mean()),
            "mae_small": float(miss[small].mean()) if small.any() else None, "small": int(small.sum()),
            "worst": {"student": rows[worst]["student"], "measured": float(measured[worst]), "estimated": float(est[worst])},
            "big_drops_estimated_low": [r["student"] for r, e in zip(rows, est) if r["measured_drop"] > big and e < low]}


def fit_and_score(rows: list[dict]) -> dict:
    """Every form fitted on all rows and left-one-architecture-out; the chosen form: of those whose estimate of a
    student identical to its teacher stays below ``ORIGIN_MAX``, the ones that estimate the fewest large drops
    low (``GOALS["big_miss"]``, each student's architecture left out: a build that lost much and says it did
    not is the miss that misleads a user), and of those the smallest LOAO MAE."""
    if len({r["arch"] for r in rows}) < 2:
        sys.exit("leaving one architecture out needs students of at least two architectures")
    forms, measured = {}, _measured_forms(rows)
    for form in measured:
        fit, loao = _fit_form(rows, form), _loao(rows, form)
        forms[form] = {"fit": fit, "all": _scores(rows, {r["student"]: _estimate(fit, r) for r in rows}),
                       "loao": _scores(rows, loao), "loao_estimates": loao, "origin": _origin(fit, rows)}
    usable = [f for f in forms if forms[f]["origin"] < ORIGIN_MAX]
    if not usable:
        sys.exit(f"every form estimates a student identical to its teacher at {ORIGIN_MAX} points or more")
    chosen = min(usable, key=lambda f: (len(forms[f]["loao"]["big_drops_estimated_low"]), forms[f]["loao"]["mae"]))
    return {"forms": forms, "chosen": chosen, "bound": _bound(rows, measured)}


def _origin(fit: dict, rows: list[dict]) -> float:
    """The largest estimate, over the teachers of ``rows``, of a student that agrees with its teacher everywhere:
    every student feature 0, the dream features (``DREAM_FEATURES``) those of the teacher's own held-out dreams
    (their median over its rows)."""
    worst = 0.0
    for teacher in {r["teacher"] for r in rows}:
        own = [r["features"] for r in rows if r["teacher"] == teacher]
        dreams = {n: float(np.median([f[n] for f in own])) for n in DREAM_FEATURES if all(n in f for f in own)}
        agreeing = {n: dreams.get(n, 0.0) for n in fit["features"]}
        worst = max(worst, predict(fit, agreeing, teacher_class(teacher).num_classes))
    return worst


def _measured_forms(rows: list[dict]) -> list[str]:
    """The forms whose every feature was measured on every row (rows stored before a feature existed lack it)."""
    forms = [f for f in FORMS if all(n in r["features"] for r in rows for n in FORMS[f][0])]
    if len(forms) < len(FORMS):
        print(f"   forms left out (a feature some rows lack): {', '.join(f for f in FORMS if f not in forms)}",
              flush=True)
    return forms


def _bound(rows: list[dict], forms: list[str]) -> dict:
    """What these features can reach at best: each teacher given its own mapping, fitted on its own students'
    measured drops (which needs that teacher's real data, so no build can do it), each of ``forms``; the best by MAE."""
    per_form = {}
    for form in forms:
        estimated = {}
        for teacher in sorted({r["teacher"] for r in rows}):
            own = [r for r in rows if r["teacher"] == teacher]
            fit = _fit_form(own, form)
            estimated.update({r["student"]: _estimate(fit, r) for r in own})
        per_form[form] = _scores(rows, estimated)
    best = min(per_form, key=lambda f: per_form[f]["mae"])
    return {"form": best, **per_form[best]}


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True,
                           text=True).stdout.strip()
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _labelled(features: dict) -> str:
    """The share of held-out dreams the teacher labels as their target, from ``label_misfit`` (- where unmeasured)."""
    return f"{100 * math.exp(-features['label_misfit']):.1f}" if "label_misfit" in features else "-"


def _formula(fit: dict) -> str:
    """The fitted mapping written out."""
    if fit["transform"] == "log1p-max":
        return "the largest of " + " and ".join(_formula(part) for part in fit["parts"])
    log = fit["transform"] == "log1p"
    terms = " + ".join(f"{c:.4g} x {f'log(1 + {n})' if log else n}" for c, n in zip(fit["coef"], fit["features"]))
    formula = f"exp({fit['intercept']:.4g} + {terms}) - 1" if log else f"{fit['intercept']:.4g} + {terms}"
    if fit["transform"] == "logit":
        formula = f"100 x (1 - 1/classes) / (1 + exp(-({formula})))"
    return formula


def render(result: dict) -> str:
    rows, scored = list(result["rows"].values()), result["fit"]
    chosen = scored["forms"][scored["chosen"]]
    fit, loao = chosen["fit"], chosen["loao_estimates"]
    estimated = {r["student"]: _estimate(fit, r) for r in rows}
    a, lo = chosen["all"], chosen["loao"]
    spear_ok = lo["spearman"] >= GOALS["spearman"]
    mae_ok = lo["mae"] <= GOALS["loao_mae"]
    big_ok = not lo["big_drops_estimated_low"] and not a["big_drops_estimated_low"]
    formula = _formula(fit)
    out = ["# Fidelity of the data-free accuracy estimate", "",
           "Produced by " + "; then ".join(f"`{r['command']}` at commit `{r['commit']}` ({len(r['students'])} students, "
                                          f"{r['seconds']:.0f} s of wall time, {r.get('cpu_seconds', 0):.0f} s of CPU time)"
                                          for r in result["runs"])
           + "".join(f"; fitted by `{c}`" for c in result.get("earlier_fit_commands", []))
           + (f"; fitted by `{result['fit_command']}`" if result.get("fit_command") else "")
           + (f"; fitted and rendered again by `{result['render_command']}`" if result.get("render_command") else "")
           + f". {len(rows)} students of {len(result['teachers'])} teachers; each student's measured drop is "
           "its teacher's top-1 minus its own on the test split; its estimate uses only held-out dreams.", "",
           "## Verdict", "",
           f"- Mapping chosen: `{scored['chosen']}` (of the {len(scored['forms'])} forms, those that estimate a student identical to its teacher below {ORIGIN_MAX:g} point; of those, the ones that estimate the fewest students with a measured drop > {GOALS['big_miss'][0]:g} below {GOALS['big_miss'][1]:g}, each with its architecture left out; of those, the smallest leave-one-architecture-out MAE): "
           f"estimated drop = {formula}, at least 0 and at most 100 x (1 - 1/classes), a student at chance.",
           f"- Spearman (estimated vs measured): **{a['spearman']:.3f}** fitted on all, **{lo['spearman']:.3f}** leaving "
           f"each architecture out: goal >= {GOALS['spearman']} {'met' if spear_ok else 'NOT met'}.",
           f"- Mean absolute error: {a['mae']:.2f} points fitted on all; **{lo['mae']:.2f}** leaving each architecture "
           f"out: goal <= {GOALS['loao_mae']} {'met' if mae_ok else 'NOT met'}.",
           f"- Of that, over the {lo['small']} students whose measured drop is at most {SMALL_DROP:g} points (where "
           f"budgets such as `--max-drop 1` choose): {a['mae_small']:.2f} fitted on all, **{lo['mae_small']:.2f}** "
           "leaving each architecture out (not a goal; for reading the one above).",
           f"- Worst miss (leaving its architecture out): {lo['worst']['student']}, measured {lo['worst']['measured']:.2f}, "
           f"estimated {lo['worst']['estimated']:.2f}.",
           f"- Students with a measured drop > {GOALS['big_miss'][0]:g} estimated below {GOALS['big_miss'][1]:g}: "
           + (", ".join(sorted(set(a["big_drops_estimated_low"]) | set(lo["big_drops_estimated_low"]))) or "none")
           + f": goal {'met' if big_ok else 'NOT met'}."]
    bound = scored.get("bound")
    if bound:
        out.append(f"- Bound of these features: each teacher given its own mapping, fitted on its own students' "
                   f"measured drops (which needs that teacher's real data, so no build can do it), the best form "
                   f"(`{bound['form']}`) reaches MAE **{bound['mae']:.2f}** and Spearman {bound['spearman']:.3f}"
                   + (f": the MAE goal of {GOALS['loao_mae']} is out of reach of these features even so; "
                      "a fit that has not seen the model is not expected to do better." if bound["mae"] > GOALS["loao_mae"] else "."))
    out += ["",
           "## Students", "",
           "| student | teacher top-1 | student top-1 | measured drop | estimated (fit on all) | estimated (arch left out) "
           "| disagree % | hard % | mix % | class max % | KL | dreams labelled % | s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["features"]
        out.append(f"| {r['student']} | {r['teacher_top1']:.2f} | {r['student_top1']:.2f} | {r['measured_drop']:.2f} | "
                   f"{estimated[r['student']]:.2f} | {loao[r['student']]:.2f} | {f['disagree']:.1f} | "
                   f"{f['disagree_hard']:.1f} | {f['disagree_mix']:.1f} | {f['disagree_class_max']:.1f} | "
                   f"{f['kl']:.3f} | {_labelled(f)} | {r['seconds']:.0f} |")
    out += ["", "## Forms of the mapping", "",
            f"`teacher itself`: the largest estimate, over the teachers, of a student that agrees with its teacher "
            f"everywhere (every student feature 0; `label_misfit` its teacher's). A form at {ORIGIN_MAX:g} point or "
            f"more could never meet `--max-drop 1` on that teacher and is not chosen.", "",
            "| form | Spearman (all) | MAE (all) | Spearman (LOAO) | MAE (LOAO) | "
            f"MAE (LOAO, drop <= {SMALL_DROP:g}) | big drops estimated low (LOAO) | teacher itself | worst LOAO miss |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, f in scored["forms"].items():
        w = f["loao"]["worst"]
        out.append(f"| {name} | {f['all']['spearman']:.3f} | {f['all']['mae']:.2f} | {f['loao']['spearman']:.3f} | "
                   f"{f['loao']['mae']:.2f} | {f['loao']['mae_small']:.2f} | {len(f['loao']['big_drops_estimated_low'])} | "
                   f"{f['origin']:.2f} | {w['student']} ({w['measured']:.1f} vs {w['estimated']:.1f}) |")
    out += ["", "## Teachers", "", "| teacher | weights | sha256 | top-1 % | evaluated on | dreams | held-out | "
            "dream s |", "|---|---|---|---|---|---|---|---|"]
    for key, t in result["teachers"].items():
        out.append(f"| {key} ({t['arch']}) | `{t['weights']}` | {(t['sha256'] or '-')[:16]} | {t['teacher_top1']:.2f} | "
                   f"{t['eval']['name']} ({t['eval']['images']}) | {t['dreams']} | {t['held_out']} | {t['dream_seconds']} |")
    missing = [k for k in TEACHERS if k not in result["teachers"]]
    if missing:
        out += ["", "**No students measured** of: " + ", ".join(f"{k} (`{TEACHERS[k].arch}`, weights `{TEACHERS[k].weights}`)"
                                                              for k in missing)
                + ". The goals above hold for the architectures measured, not for these."]
    m = result["machine"]
    out += [""] + [f"Settings of `{r['command']}`: {s['dreams']} dreams per teacher (its recipe's synthesis), "
                   f"{s['refit_images']} refit images, {s['epochs']} distillation epochs (weak students: no refit, "
                   f"1 epoch), CIFAR evaluated on {s['eval_images']} random test images; seed {s['seed']}."
                   for r in result["runs"] for s in [r["settings"]]]
    built = [r for r in rows if r.get("full_recipe")]
    if built:
        out += ["", f"The {len(built)} students named `build:*` are not cheap ones: each is the recovered student of a "
                "finished benchmark build (`recovery_levers.py`, `mobilenet_recovery.py`, `signal_recovery.py`, "
                "`max_drop.py`, `latency_budget.py`, `cifar10_recovery.py`; the folder's name), made by its full "
                "recipe (" + ", ".join(sorted({r['full_recipe'] for r in built})) + "), its drop measured on its "
                "whole evaluation set (" + ", ".join(f"{n:,} images or windows" for n in
                                                     sorted({r.get('eval_images') for r in built} - {None})) +
                ") against its own teacher (the build's, which need not be the weights of the cheap students of "
                "its architecture) and its features on that build's own 256 held-out dreams; `--add-builds` reads "
                "their `report.json`."]
    out += ["",
            f"Machine: {m['cpu']}, {m['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
            "![estimated against measured drop](fidelity.png)", ""]
    return "\n".join(out)


LABELLED = 8  # the plot names the students it misses most; the table names them all


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, scored = list(result["rows"].values()), result["fit"]
    chosen = scored["forms"][scored["chosen"]]
    fig, ax = plt.subplots(figsize=(7, 6))
    for arch in sorted({r["arch"] for r in rows}):
        mine = [r for r in rows if r["arch"] == arch]
        ax.scatter([r["measured_drop"] for r in mine], [chosen["loao_estimates"][r["student"]] for r in mine],
                   label=f"{arch} (fit without it)")
    for r in sorted(rows, key=lambda r: -abs(chosen["loao_estimates"][r["student"]] - r["measured_drop"]))[:LABELLED]:
        ax.annotate(r["student"].rsplit("/", 1)[-1], (r["measured_drop"], chosen["loao_estimates"][r["student"]]),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    top = max(max(r["measured_drop"] for r in rows), max(chosen["loao_estimates"].values())) + 2
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8, label="estimate = measured")
    ax.set_xscale("symlog", linthresh=5)
    ax.set_yscale("symlog", linthresh=5)
    ax.set_xlabel("measured top-1 drop (points)")
    ax.set_ylabel("estimated drop, no data (points)")
    ax.set_title(f"data-free estimate, leave-one-architecture-out ({scored['chosen']});\n"
                 f"named: the {LABELLED} largest misses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _without_data_path(command: str) -> str:
    """``command`` with its ``--shared`` folder written as SHARED: the package ships the fit, never a data path."""
    return re.sub(r"--shared \S+", "--shared SHARED", command)


def _retire_fit_command(result: dict) -> None:
    """Moves the stored fit command, if any, to the end of ``earlier_fit_commands``."""
    if result.get("fit_command"):
        result["earlier_fit_commands"] = [*result.get("earlier_fit_commands", []), result.pop("fit_command")]


def write_fit(result: dict, path: Path = FIT) -> None:
    scored = result["fit"]
    fit = {**scored["forms"][scored["chosen"]]["fit"],
           "command": _without_data_path(result.get("fit_command")
                                         or " && ".join(r["command"] for r in result["runs"])),
           "earlier_fit_commands": [_without_data_path(c) for c in result.get("earlier_fit_commands", [])],
           "rows_commands": [_without_data_path(r["command"]) for r in result["runs"]],
           "commit": result.get("fit_commit") or _git_commit(),  # the code that fitted it
           "rows_commit": result["runs"][-1]["commit"],
           "students": len(result["rows"]), "architectures": sorted({r["arch"] for r in result["rows"].values()}),
           "loao_mae": scored["forms"][scored["chosen"]]["loao"]["mae"],
           "loao_spearman": scored["forms"][scored["chosen"]]["loao"]["spearman"]}
    path.write_text(json.dumps(fit, indent=2) + "\n")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated subset of {list(STUDENTS)}")
    parser.add_argument("--dreams", type=int, default=256, help="dreams per teacher (one cached set each)")
    parser.add_argument("--refit-images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4, help="distillation epochs of the students that are not weak")
    parser.add_argument("--eval-images", type=int, default=2000, help="CIFAR: random test images evaluated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "fidelity")
    parser.add_argument("--fresh", action="store_true", help="start results/fidelity.json afresh (default: merge "
                        "these students into it, replacing earlier rows of the same students)")
    parser.add_argument("--fit-only", action="store_true", help="refit and render the rows in results/fidelity.json")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="with --fit-only: fidelity.json files of "
                        "other runs whose rows join the stored ones")
    parser.add_argument("--add-builds", type=Path, nargs="*", default=[], help="with --fit-only: build folders "
                        "(report.json with evaluation data) whose recovered students join the rows")
    parser.add_argument("--rescore", choices=list(RESCORE), help="with --add-builds: measure each build's features "
                        "again (its saved student, teacher and dreams) on these held-out dreams instead of reading its "
                        "report: 'held-out' (what a build uses), 'generator-draws' (a probe: a generator build's own "
                        "generator, fresh draws)")
    parser.add_argument("--drop", nargs="*", default=[], help="with --fit-only: stored rows to leave out (e.g. builds "
                        "whose features this code would measure differently and whose folders are gone)")
    parser.add_argument("--no-fit", action="store_true", help="leave the package's estimate_fit.json as it is")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    store = args.results / "fidelity.json"
    command = "python benchmarks/fidelity.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    code_commit = _git_commit()  # before this command writes anything under results/
    if args.fit_only:
        result = json.loads(store.read_text()) if store.exists() or not args.merge else \
            {"rows": {}, "teachers": {}, "runs": []}  # a new results folder: its rows come from --merge
        for other in args.merge:  # rows measured by a run that wrote elsewhere (e.g. at the same time)
            found = json.loads(other.read_text())
            result["rows"].update(found["rows"])
            result["teachers"].update(found["teachers"])
            result["runs"] += [r for r in found["runs"] if r not in result["runs"]]
            result.setdefault("machine", found.get("machine"))
        if args.add_builds:
            result["rows"].update(build_rows(args.add_builds, args.rescore, result["teachers"]))
        for sid in args.drop:
            if result["rows"].pop(sid, None) is None:
                sys.exit(f"--drop {sid}: no such row")
        if args.merge or args.add_builds or args.drop or not result.get("fit_command"):
            _retire_fit_command(result)  # the rows an earlier fit merged, added or dropped stay as it left them
            result["fit_command"] = command
            result.pop("render_command", None)
        else:  # the same rows: the command that chose them stays on record
            result["render_command"] = command
    else:
        started, cpu_started = time.perf_counter(), time.process_time()
        ids = [s for s in args.students.split(",") if s]
        unknown = [s for s in ids if s not in STUDENTS]
        if unknown:
            sys.exit(f"unknown students {unknown}; known: {list(STUDENTS)}")
        result = json.loads(store.read_text()) if store.exists() and not args.fresh else {"rows": {}, "teachers": {}, "runs": []}
        run = {"command": command, "commit": code_commit, "students": [], "skipped": {},
               "settings": {k: getattr(args, k) for k in ("dreams", "refit_images", "epochs", "eval_images", "seed")},
               "seconds": 0.0}
        result["runs"].append(run)
        _retire_fit_command(result)  # the fit below is this command's; the rows an earlier fit added stay
        result.pop("render_command", None)
        for key in dict.fromkeys(STUDENTS[s][0] for s in ids):
            weights = _weights(TEACHERS[key], args.shared)
            if weights is not None and not weights.is_file():
                run["skipped"][key] = str(weights)
                print(f"== {key}: skipped, {weights} is absent", flush=True)
                continue
            rows, result["teachers"][key] = run_teacher(key, [s for s in ids if STUDENTS[s][0] == key], args)
            for sid in rows:  # a student measured again replaces its earlier row
                result["rows"].pop(sid, None)
            result["rows"].update(rows)
            run["students"] += list(rows)
            run["seconds"] = round(time.perf_counter() - started, 1)
            run["cpu_seconds"] = round(time.process_time() - cpu_started, 1)  # every thread of this process
            result["machine"] = machine_info()
            args.results.mkdir(parents=True, exist_ok=True)
            store.write_text(json.dumps(result, indent=2, default=str))  # each teacher's rows as soon as they exist
    result["fit"] = fit_and_score(list(result["rows"].values()))
    result["fit_commit"] = code_commit
    args.results.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(result, indent=2, default=str))
    (args.results / "fidelity.md").write_text(render(result))
    plot(result, args.results / "fidelity.png")
    if not args.no_fit:
        write_fit(result)
    print((args.results / "fidelity.md").read_text())


if __name__ == "__main__":
    main()
