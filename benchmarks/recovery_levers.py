"""What each recovery lever adds, and what it costs, row by row.

A row is a teacher and a pruning (the rows of ``cifar10_recovery``, ``channel_pruning`` and
``mobilenet_recovery``); a lever is a change of the recovery settings against ``base``, today's
``fast`` with its fixed BatchNorm weight of 10. Every (row, lever) is one ``pipeline.build``
without export (top-1 on the test split, seconds per stage), merged into
``results/recovery_levers.json`` and rendered to ``.md``: the gain of each lever over ``base`` and
the CPU seconds it took.

    python benchmarks/recovery_levers.py --shared ../shared --rows r20-ch2x --levers base,auto-bn
    python benchmarks/recovery_levers.py --shared ../shared --mobilenet T.pt --rows mbv3-mag75 --levers auto-bn
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import describe, run_record  # noqa: E402

from edgefree.config import BuildConfig, ChannelPruning, MagnitudePruning, recipe  # noqa: E402
from edgefree.machine import machine_info  # noqa: E402
from edgefree.markdown import percent  # noqa: E402

CIFAR = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}
MOBILENET = "torchvision:mobilenet_v3_small"
ROWS = {  # teacher, pruning stages
    "r20-mag75": ("resnet20-cifar", (MagnitudePruning(0.75),)),
    "r20-ch2x": ("resnet20-cifar", (ChannelPruning(macs_target=0.5),)),
    "r56-mag75": ("resnet56-cifar", (MagnitudePruning(0.75),)),
    "r56-ch2x": ("resnet56-cifar", (ChannelPruning(macs_target=0.5),)),
    "r56-depth-ch3x": ("resnet56-cifar", (ChannelPruning(macs_target=0.33, depth=0.5),)),
    "mbv3-mag75": (MOBILENET, (MagnitudePruning(0.75, scope="layer"),)),
    "mbv3-ch2x": (MOBILENET, (ChannelPruning(macs_target=0.5),)),
}
# every lever's BatchNorm weight of synthesis, where its synthesis changes name no other (the `generator` recipe's
# own is "auto": lever generator-auto-bn)
BN_WEIGHT = 10.0
# lever: (recipe, synthesis changes, distillation changes); "base" is `fast` itself
LEVERS = {
    "base": ("fast", {}, {}),
    "auto-bn": ("fast", {"bn_weight": "auto"}, {}),
    "thorough": ("fast", {}, {"epochs": 80}),  # `fast`'s dreams, distilled 80 epochs
    "auto-bn-thorough": ("fast", {"bn_weight": "auto"}, {"epochs": 80}),
    "auto-bn-floor50": ("fast", {"bn_weight": "auto", "fidelity_floor": 0.5}, {}),
    "skip-tiny-maps": ("fast", {"bn_min_positions": 16}, {}),
    "skip-tiny-maps-auto-bn": ("fast", {"bn_min_positions": 16, "bn_weight": "auto"}, {}),
    "generator": ("generator", {}, {}),
    "4x": ("fast", {}, {"epochs": 160}),
    "16x": ("fast", {"images": 8192}, {"epochs": 160}),
    "lr-0.01": ("fast", {}, {"lr": 0.01}),
    "warmup-2": ("fast", {}, {"warmup_epochs": 2.0}),
    "real-data": ("fast", {}, {}),
    "real-data-4x": ("fast", {}, {"epochs": 160}),
    "gradual-3": ("fast", {}, {}),
    "gradual-5": ("fast", {}, {}),
    "generator-gradual-3": ("generator", {}, {}),
    "generator-thorough": ("generator", {}, {"epochs": 80}),
    "generator-4x": ("generator", {}, {"epochs": 160}),
    "generator-16x": ("generator", {"iterations": 3200}, {"epochs": 160}),
    "generator-adversarial": ("generator", {}, {"adversarial_steps": 10}),
    "generator-adversarial-w20": ("generator", {}, {"adversarial_steps": 10, "adversarial_weight": 20.0}),
    "generator-refresh": ("generator", {}, {"adversarial_steps": 10, "adversarial_weight": 0.0}),
    "generator-adversarial-400": ("generator", {"iterations": 400}, {"adversarial_steps": 10}),
    "generator-mixup": ("generator", {}, {"mixup": 1.0}),
    "generator-bn1": ("generator", {"bn_weight": 1.0}, {}),
    "generator-1600": ("generator", {"iterations": 1600}, {}),
    "generator-auto-bn": ("generator", {"bn_weight": "auto"}, {}),
    "generator-auto-bn-thorough": ("generator", {"bn_weight": "auto"}, {"epochs": 80}),
    "generator-auto-bn-4x": ("generator", {"bn_weight": "auto"}, {"epochs": 160}),  # `thorough`, twice as long
    "generator-auto-bn-8x": ("generator", {"bn_weight": "auto"}, {"epochs": 320}),
    "generator-auto-bn-lr0.1": ("generator", {"bn_weight": "auto"}, {"lr": 0.1}),
    "generator-auto-bn-lr0.2": ("generator", {"bn_weight": "auto"}, {"lr": 0.2}),
    "generator-auto-bn-feat0": ("generator", {"bn_weight": "auto"}, {"feature_weight": 0.0}),
    "generator-auto-bn-feat100": ("generator", {"bn_weight": "auto"}, {"feature_weight": 100.0}),
    "generator-auto-bn-t1": ("generator", {"bn_weight": "auto"}, {"temperature": 1.0}),
    "generator-auto-bn-w64": ("generator", {"bn_weight": "auto", "generator_width": 64}, {}),
    "generator-auto-bn-thorough-gradual-3": ("generator", {"bn_weight": "auto"}, {"epochs": 80}),
    "generator-auto-bn-fbn10": ("generator", {"bn_weight": "auto", "first_bn_multiplier": 10.0}, {}),
    "generator-ce0": ("generator", {"ce_weight": 0.0}, {}),
    "generator-auto-bn-crop0.5": ("generator", {"bn_weight": "auto", "crop_scale": 0.5}, {}),
    "generator-auto-bn-affine": ("generator", {"bn_weight": "auto"}, {"bn_affine": True}),
    "generator-auto-bn-ema": ("generator", {"bn_weight": "auto"}, {"ema": 0.99}),
    "generator-bn0.01": ("generator", {"bn_weight": 0.01}, {}),
    "generator-bn0.003": ("generator", {"bn_weight": 0.003}, {}),
    "blockwise": ("fast", {}, {}),
    "blockwise-lr-0.01": ("fast", {}, {"lr": 0.01}),
    "blockwise-1000-lr-0.01": ("fast", {}, {"lr": 0.01}),
    "blockwise-gradual-3": ("fast", {}, {}),
    "greedy": ("fast", {}, {}),
    "generator-greedy": ("generator", {"bn_weight": "auto"}, {}),
    "generator-taylor": ("generator", {"bn_weight": "auto"}, {}),
    "generator-bn-scale": ("generator", {"bn_weight": "auto"}, {}),
}
# levers that change the channel pruning: its name -> ChannelPruning changes
PRUNING = {"gradual-3": {"steps": 3}, "gradual-5": {"steps": 5}, "generator-gradual-3": {"steps": 3},
           "blockwise-gradual-3": {"steps": 3}, "greedy": {"importance": "greedy"},
           "generator-greedy": {"importance": "greedy"}, "generator-auto-bn-thorough-gradual-3": {"steps": 3},
           "generator-taylor": {"importance": "taylor"}, "generator-bn-scale": {"importance": "bn_scale"}}
# levers that change the refit: its name -> ReconstructConfig changes
RECONSTRUCT = {"blockwise": {"block_steps": 300}, "blockwise-lr-0.01": {"block_steps": 300},
               "blockwise-1000-lr-0.01": {"block_steps": 1000}, "blockwise-gradual-3": {"block_steps": 300}}
# levers that refit and distil on real training images (as many as the dreams): bounds, NOT data-free
REAL_DATA = ("real-data", "real-data-4x")
RESULTS = HERE / "results" / "recovery_levers"
# where each row's committed figures with the fixed BatchNorm weight of 10 stand: (results file, its row)
TODAY = {"r20-mag75": ("cifar10_recovery", "r20-75-fast"), "r56-mag75": ("cifar10_recovery", "r56-75-fast"),
         "r20-ch2x": ("channel_pruning", "r20-ch2x"), "r56-ch2x": ("channel_pruning", "r56-ch2x"),
         "r56-depth-ch3x": ("channel_pruning", "r56-depth-ch3x"), "mbv3-mag75": ("mobilenet_recovery", "mag75"),
         "mbv3-ch2x": ("mobilenet_recovery", "ch2x")}


def today(row: str) -> dict | None:
    """The row's committed result in its own benchmark's file (seed 0, BatchNorm weight 10), if there."""
    file, key = TODAY[row]
    path = HERE / "results" / f"{file}.json"
    return json.loads(path.read_text())["rows"].get(key) if path.exists() else None


def _labelled(r: dict) -> str:
    share = r["synthesis"].get("teacher_agreement")
    return f"real: {r['synthesis']['real_images']} images" if r["lever"] in REAL_DATA else f"{100 * share:.1f}%"


def _weight(r: dict) -> str:
    return "-" if r["synthesis"].get("bn_weight") is None else f"{r['synthesis']['bn_weight']:g}"


def _seconds(seconds: dict, cached: bool) -> str:
    synth = 0 if cached else seconds.get("synthesize", 0)
    return f"{synth:.0f} + {seconds.get('reconstruct', 0):.0f} + {seconds.get('distill', 0):.0f}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared", help="CIFAR-10 data and teachers")
    p.add_argument("--mobilenet", type=Path, help="the MobileNetV3-small teacher (train_mobilenet_teacher.py)")
    p.add_argument("--rows", default="r20-ch2x", help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--levers", default="base,auto-bn", help=f"comma-separated, of {', '.join(LEVERS)}")
    p.add_argument("--work", type=Path, default=Path("/tmp/edgefree-levers"), help="build folders and dream cache")
    p.add_argument("--threads", type=int, default=1, help="threads of the build (1: steady under other load)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the build computes (cuda: "
                   "tag the run, its cells are not comparable in seconds with the CPU's)")
    p.add_argument("--tag", help="a name that keeps this run's cells apart from the row's others (another "
                   "teacher, another seed), shown as ROW (TAG)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render", action="store_true", help="only render results/recovery_levers.md from its .json")
    return p


def written(args) -> list[str]:
    """The results files a command writes (``reproduce.py --check``)."""
    return ["recovery_levers.json"]


def _choices(value: str, known: dict, what: str) -> list[str]:
    chosen = [v for v in value.split(",") if v]
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return chosen


def row_config(row: str, lever: str, args) -> BuildConfig:
    arch, stages = ROWS[row]
    name, synthesis, distill = LEVERS[lever]
    if lever in PRUNING:
        if not any(isinstance(p, ChannelPruning) for p in stages):
            raise SystemExit(f"lever {lever} changes channel pruning, and row {row} prunes by magnitude")
        stages = tuple(p.replace(**PRUNING[lever]) if isinstance(p, ChannelPruning) else p for p in stages)
    chosen = recipe(name)
    if arch == MOBILENET:
        if args.mobilenet is None:
            raise SystemExit(f"row {row} needs --mobilenet (the teacher's weights)")
        model, shape = args.mobilenet, (3, 32, 32)
    else:
        model, shape = args.shared / "models" / CIFAR[arch], None
    return BuildConfig(model=model, arch=arch, input_shape=shape, recipe=name, prune=stages, seed=args.seed,
                       eval_data=str(args.shared / "data" / "cifar10-jpeg" / "test.zip"),
                       synthesis=chosen.synthesis.replace(**{"bn_weight": BN_WEIGHT, **synthesis}), distill=chosen.distill.replace(**distill),
                       reconstruct=chosen.reconstruct.replace(**RECONSTRUCT.get(lever, {})),
                       out=args.work / f"{row}-{lever}", cache=args.work / "cache", export=None,
                       threads=args.threads, device=args.device)


def run(row: str, lever: str, args) -> dict:
    from edgefree.pipeline import build

    if lever in REAL_DATA:
        return run_real_data(row, lever, args)
    config = row_config(row, lever, args)
    started = time.perf_counter()
    report = build(config, progress=not args.quiet)
    synthesis = report["synthesis"]
    return {"row": row, "lever": lever, "accuracy": report["accuracy"], "macs_ratio": report["cost"]["macs_ratio"],
            "seconds": report["seconds"], "wall": round(time.perf_counter() - started, 1),
            "synthesis": {k: synthesis.get(k) for k in ("teacher_agreement", "teacher_confidence", "bn_weight",
                                                        "bn_weight_probes", "cached", "seconds")},
            "epochs": config.distill.epochs, "eval_images": report["eval_data"]["images"],
            "record": run_record(__file__, files=[config.model, config.eval_data])}


def run_real_data(row: str, lever: str, args) -> dict:
    """The row's prune (its channels and blocks chosen on ``base``'s dreams), then refit and distillation on
    as many real training images as there are dreams: what better dreams could reach. Reads the owner's
    training split: a bound, not data-free."""
    import dataclasses

    from cifar10_recovery import real_train_subset
    from train_mobilenet_teacher import CLASSES

    from edgefree.cost import cost
    from edgefree.data import load_eval_data
    from edgefree.evaluate import accuracy
    from edgefree.models import load_teacher
    from edgefree.pipeline import synthesize_cached
    from edgefree.recover import distill, prune, reconstruct

    config = row_config(row, lever, args)
    teacher = load_teacher(config.arch, config.model, config.num_classes, config.input_changes())
    data = load_eval_data(config.eval_data, teacher.spec)
    started = time.perf_counter()
    dreams = synthesize_cached(teacher, config, None, not args.quiet)
    named = dataclasses.replace(teacher.spec, class_names=CLASSES)  # a torchvision spec names no classes
    real = real_train_subset(args.shared / "data" / "cifar10-jpeg" / "train.zip", len(dreams), named, args.seed)
    seconds = {}
    clock = time.perf_counter()
    pruned = prune(teacher, list(config.prune), dreams)
    seconds["prune"], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
    refit = reconstruct(teacher, pruned, real, config.reconstruct, progress=not args.quiet)
    seconds["reconstruct"], clock = round(time.perf_counter() - clock, 2), time.perf_counter()
    recovered = distill(teacher, refit, real, config.distill, seed=args.seed, progress=not args.quiet).model
    seconds["distill"] = round(time.perf_counter() - clock, 2)
    scores = {"teacher": accuracy(teacher.module, data, teacher.spec), "pruned": accuracy(pruned.model, data, teacher.spec),
              "reconstructed": accuracy(refit.model, data, teacher.spec),
              "recovered": accuracy(recovered, data, teacher.spec)}
    example = teacher.spec.example_inputs()[0]
    return {"row": row, "lever": lever, "accuracy": scores,
            "macs_ratio": cost(recovered, example)["macs"] / cost(teacher.module, example)["macs"],
            "seconds": seconds, "wall": round(time.perf_counter() - started, 1),
            "synthesis": {"teacher_agreement": None, "bn_weight": None, "cached": True, "real_images": len(real)},
            "epochs": config.distill.epochs, "eval_images": len(data),
            "record": run_record(__file__, files=[config.model, config.eval_data,
                                                  args.shared / "data" / "cifar10-jpeg" / "train.zip"])}


def render(results: dict) -> str:
    lines = ["# Recovery levers: what each adds over `base`, and what it costs", "",
             "Each row: `python " + "benchmarks/recovery_levers.py` with the command in its record (below). "
             "`base` is `fast` with the BatchNorm weight fixed at 10; `auto-bn` lets probes pick the weight "
             "(the strongest at which the teacher labels 90% of a probe batch as its target; `-floor50`: 50%); "
             "`skip-tiny-maps` leaves BatchNorm layers on maps of fewer than 16 positions out of the statistics "
             "loss; `thorough` distils `fast`'s dreams 80 epochs instead of 40 (`auto-bn-thorough`: both; the `thorough` recipe is, on an image, `generator-auto-bn-thorough`); `generator` is the `generator` "
             "recipe (a generator trained on the teacher draws new images every distillation epoch) with its BatchNorm "
             "weight fixed at 10, as every `generator-*` lever but those that name another; `4x` distils "
             "160 epochs (4x `base`'s budget); `16x` 160 epochs on 8,192 dreams (4x the epochs on 4x the dreams); `lr-0.01` distils at a learning rate of 0.01 instead of 0.05; `warmup-2` "
             "raises the rate linearly over the first 2 epochs. `real-data` and `real-data-4x` are bounds, NOT data-free: `base`'s "
             "pruning (channels chosen on its dreams), then refit and distillation (40 or 160 epochs) on as many real "
             "CIFAR-10 training images as there are dreams. `gradual-K` reaches the one-shot student's widths in K "
             "steps, the kept weights refit after each (`ChannelPruning(steps=K)`; its `pruned` column is the student "
             "after the last step, before the last refit); `generator-gradual-3`: both; `generator-thorough`: the generator, 80 epochs; `generator-4x`: 160 (4x `base`'s budget, the data-free counterpart of `real-data-4x`); `generator-16x`: 160 epochs after 3,200 generator steps (4x each). `generator-adversarial`: the generator, which before each epoch's new images trains 10 more steps with the student's KL divergence from the teacher subtracted from its loss (`DistillConfig(adversarial_steps=10)`), so the new dreams seek where the student disagrees (`-w20`: that KL weighted 20 instead of 1); `generator-refresh` is its control: the same 10 steps per epoch without the KL term (`adversarial_weight=0`), the generator only training on. `generator-adversarial-400` trains the generator 400 steps instead of 800 before distillation (it goes on training during it). `generator-mixup` distils the generator's dreams mixed in pairs (`DistillConfig(mixup=1.0)`: Beta(1, 1) weights, the teacher labelling each mix); `generator-1600` trains it 1,600 steps instead of 800. `generator-ce0` trains the generator without the class term (`ce_weight=0`: BatchNorm statistics only); `generator-bnW` trains the generator with the BatchNorm weight at W instead of 10; `generator-auto-bn` at the weight `auto-bn`'s probes pick, the `generator` recipe's own setting (`-thorough`: 80 epochs; `-4x`: 160; `-8x`: 320; `-lr0.1` / `-lr0.2`: distilled at that rate instead of 0.05; `-feat0` / `-feat100`: BatchNorm outputs matched with weight 0 or 100 instead of 20; `-t1`: at temperature 1 instead of 4; `-w64`: a generator twice as wide, 64 channels in its last layer instead of 32; `-thorough-gradual-3`: `thorough` with `gradual-3`; `-affine`: the student's BatchNorm scale and shift trained too, its running statistics still frozen (`DistillConfig(bn_affine=True)`); `-fbn10`: the first BatchNorm layer's statistics weighted 10 times the others (`first_bn_multiplier=10`); `-crop0.5`: each view the teacher sees while the generator trains is a random crop of 50% to 100% of the image's area resized back (`crop_scale=0.5`); `-ema`: the student returned is the exponential moving average of its weights, decay 0.99 per step (`DistillConfig(ema=0.99)`)) (probes dreamed pixel by pixel: the generator's own dreams can be labelled far less often); `generator-auto-bn-stepped` lowered the weight while the generator trained (10, 3, 1, ... 0.001, one step at each 1/20 of its training from 1/10 to 1/2 where the teacher labelled fewer than 90% of the batches since the last check as their target, Adam's moments restarted at each step), code of commit `524caa1` that was not kept since it lowered recovery: its cells ran as `--levers generator-auto-bn` on that code. `blockwise` trains each block 300 "
             "steps to give the teacher's block output after the layer-wise refit (`ReconstructConfig(block_steps=300)`; "
             "its `refit` column includes it); `blockwise-lr-0.01` also distils at 0.01, `blockwise-1000-lr-0.01` with "
             "1000 steps per block; `blockwise-gradual-3`: with `gradual-3`. `greedy` ranks channels by ThiNet's greedy criterion on the dreams instead of their weights' L2 norm (`ChannelPruning(importance=\"greedy\")`: removed one at a time, each the channel that, with those already removed, changes the consuming layers' outputs least); `generator-greedy`: with `generator-auto-bn`; `generator-taylor` and `generator-bn-scale` rank channels by the first-order Taylor estimate of the loss change on the dreams, or by their BatchNorm scale (`importance=\"taylor\"`, `\"bn_scale\"`), with `generator-auto-bn`. One build per cell, seed 0, top-1 on the 10,000 test "
             "images; seconds are CPU-bound stage times on a 2-core machine shared with other work "
             "(comparable within a row only when measured alike; `cached` dreams cost nothing). A tag containing "
             "`cuda` is a run with `--device cuda` on the GPU its record names, under that machine's own PyTorch (not "
             "this project's pin; a GPU and its kernels give other numbers than a CPU for the same seed): its seconds "
             "are that GPU's. A tag containing `bf16gen` is a run whose dream generator computes channels-last under "
             "bf16 autocast (its training, its draws every epoch, the refresh), as the code does from commit "
             "`c5e7f2e` on; the generator cells without it ran it in fp32. The teacher and student of every cell but "
             "those tagged `fp32cl` or `dwfp32` computed in bf16 where the CPU had it, the distillation in NCHW. "
             "`fp32cl`: a MobileNet build in which the teacher, its student and the generator computed in fp32 (the "
             "teacher has depthwise convolutions) and distillation ran channels-last, code of commit `e58f35e`; "
             "`dwfp32`: the code from commit `75c50ba` on, where a teacher with depthwise convolutions and its student "
             "compute in fp32 on a CPU, the generator in bf16, and distillation runs channels-last (a ResNet: bf16, "
             "channels-last). The MobileNet cells of both ran two at a time on one thread each, as the "
             "`amd-teacher-bf16gen` cells they compare with.", "",
             "`today` is the row as committed in its own benchmark's results file (`base`'s settings, seed 0; "
             "its seconds from that run), left out where that file's teacher is another (MobileNetV3-small: "
             "72.80% there, a 71.72% teacher trained on one thread on an Intel Xeon here, its record in git history "
             "as `benchmarks/results/mobilenet_teacher-1thread.md` of commit `cdc66cd`; compare with `base`). Rows "
             "tagged `(amd-teacher)` use the 72.44% teacher the same command trained on an AMD EPYC "
             "(`mobilenet_teacher-1thread.md` now): compare them with each other only. A tag ending in `seed1` "
             "is the same run with `--seed 1` (dreams and distillation seeded 1; the refit uses those dreams).", "",
             "| row | lever | MACs | teacher | pruned | refit | recovered | gap | vs today | dreams labelled | "
             "BN weight | synth + refit + KD s | today: refit / recovered, s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def order(key: str) -> tuple:  # cells another version of this script wrote go last; a tagged teacher after
        r = results[key]
        return (list(ROWS).index(r["row"]) if r["row"] in ROWS else len(ROWS), r.get("tag") or "",
                list(LEVERS).index(r["lever"]) if r["lever"] in LEVERS else len(LEVERS))

    for key in sorted(results, key=order):
        r = results[key]
        a = r["accuracy"]
        old = today(r["row"])
        if old and abs(old["accuracy"]["teacher"] - a["teacher"]) > 0.005:  # another teacher: no comparison
            old = None
        delta = f"{a['recovered'] - old['accuracy']['recovered']:+.2f}" if old else ""
        before = (f"{percent(old['accuracy'].get('reconstructed'))} / {percent(old['accuracy']['recovered'])}, "
                  f"{_seconds(old['seconds'], False)}" if old else "")
        label = f"{r['row']} ({r['tag']})" if r.get("tag") else r["row"]
        lines.append(f"| {label} | {r['lever']} | {r['macs_ratio']:.2f} | {percent(a['teacher'])} | "
                     f"{percent(a['pruned'])} | {percent(a.get('reconstructed'))} | **{percent(a['recovered'])}** | "
                     f"{a['teacher'] - a['recovered']:.2f} | {delta} | "
                     f"{_labelled(r)} | {_weight(r)} | "
                     f"{_seconds(r['seconds'], r['synthesis']['cached'])} | {before} |")
    lines += ["", "## Runs", ""]
    lines += [f"- {key}: `{r['record']['command']}`. {describe(r['record'])}" + (f" CPU: {r['cpu']}." if r.get("cpu") else "")
              + (f" GPU: {r['gpu']} (`--device cuda`{', torch ' + r['torch'] if r.get('torch') else ''})." if r.get("gpu") else "")
              for key, r in sorted(results.items())]
    info = machine_info()
    lines += ["", f"Rendered on {info.get('cpu')}, {info.get('cores')} cores; torch {info.get('versions', {}).get('torch')}. "
              "Each run's CPU is named where it was recorded (bf16 autocast is on only where the CPU has native bf16).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    rows, levers = _choices(args.rows, ROWS, "rows"), _choices(args.levers, LEVERS, "levers")
    path = RESULTS.with_suffix(".json")
    if args.render:
        RESULTS.with_suffix(".md").write_text(render(json.loads(path.read_text())["results"]))
        return
    for row in rows:
        for lever in levers:
            result = {**run(row, lever, args), "cpu": machine_info().get("cpu"), **({"tag": args.tag} if args.tag else {}),
                      **({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__} if args.device == "cuda" else {})}
            name = f"{row} ({args.tag})" if args.tag else row
            # read again just before writing: other runs of this script may have added their cells meanwhile
            results = json.loads(path.read_text())["results"] if path.exists() else {}
            results[f"{name}/{lever}"] = result
            path.write_text(json.dumps({"results": results}, indent=1) + "\n")
            RESULTS.with_suffix(".md").write_text(render(results))
            print(f"{name}/{lever}: recovered {result['accuracy']['recovered']:.2f}", flush=True)


if __name__ == "__main__":
    main()
