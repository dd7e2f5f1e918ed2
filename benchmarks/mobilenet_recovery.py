"""A MobileNet teacher compressed for phones and boards without its data: torchvision MobileNetV3-small.

Runs ``edgefree.pipeline.build`` (the code behind ``edgefree build``) on torchvision's
``mobilenet_v3_small`` trained on CIFAR-10 at 32x32 (``train_mobilenet_teacher.py``, the owner's
side), loaded through the ``torchvision:`` door with ``--input-shape 3x32x32``, target
``raspberry-pi-4`` (onnxruntime, OpenVINO and ExecuTorch, fp32 and INT8). Rows: ``mag75`` (75%
magnitude pruning of each layer) and ``ch2x`` (channel pruning to half the multiply-adds), each with
recipe ``fast`` and, as ``mag75-generator`` and ``ch2x-generator``, with recipe ``generator``. Per row:
teacher / pruned / refit / recovered top-1 on the 10,000 test images, multiply-adds, p50 per
runtime and precision on this machine (1 thread, teacher and student taking turns) and, once
``edgefree emulator setup`` ran, guest instructions per inference under QEMU for
``raspberry-pi-4`` (cortex-a72) and ``android-arm64`` (cortex-a76). ``--synthesis-cost`` times
DeepInversion steps on this teacher and on the CIFAR ResNets at the same settings: image-steps
per second, and per teacher multiply-add. ``--bound`` repeats a built ``fast`` row's prune, refit and
distillation on as many *real* training images as dreams (not data-free): what better dreams
could reach at this budget. A ``generator`` row prunes the same student (neither pruning reads the
dreams), so its bound is its ``fast`` row's.

    python benchmarks/train_mobilenet_teacher.py --shared ../shared --out /tmp/mobilenet_v3_small.pt
    python benchmarks/mobilenet_recovery.py --shared ../shared --teacher /tmp/mobilenet_v3_small.pt
    python benchmarks/mobilenet_recovery.py --shared ../shared --teacher T --rows '' --emulate --synthesis-cost
    # -> results/mobilenet_recovery.{json,md}, rows merged in one by one
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from edgefree.config import BenchConfig, BuildConfig, ChannelPruning, ExportConfig, MagnitudePruning, recipe
from edgefree.cost import count_macs
from edgefree.machine import machine_info
from edgefree.models import load_teacher
from edgefree.pipeline import build
from edgefree.recover import synthesize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from channel_pruning import _latency  # noqa: E402  p50 per runtime and the student/teacher ratios
from provenance import run_record  # noqa: E402
ARCH = "torchvision:mobilenet_v3_small"
SHAPE = (3, 32, 32)
# Magnitude pruning per layer: ranked globally, the small weights of the 576 -> 1024 classifier go first and
# the whole layer is zeroed (prune() warns).
PRUNING = {"mag75": (MagnitudePruning(0.75, scope="layer"),), "ch2x": (ChannelPruning(macs_target=0.5),)}
# row id: (pruning, recipe)
ROWS = {**{k: (p, "fast") for k, p in PRUNING.items()}, **{f"{k}-generator": (p, "generator") for k, p in PRUNING.items()}}
TARGET = "raspberry-pi-4"
EMULATED_TARGETS = ("raspberry-pi-4", "android-arm64")  # cortex-a72 and cortex-a76
RESNETS = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}


def row_config(row: str, teacher: Path, shared: Path, work: Path, seed: int) -> BuildConfig:
    return BuildConfig(
        target=TARGET, out=work / row, model=teacher, arch=ARCH, input_shape=SHAPE,
        eval_data=str(shared / "data" / "cifar10-jpeg" / "test.zip"), seed=seed, recipe=ROWS[row][1],
        cache=work / "cache", prune=ROWS[row][0],
        # INT8 of these students agrees with their fp32 top-1 on fewer check images than the 0.9 a build
        # requires by default (the weakest, `fast` at 75% magnitude, on about 3 in 4): accepted at 0.7 here,
        # and every agreement is in the results
        export=ExportConfig(formats=("onnx", "openvino", "executorch"), precisions=("fp32", "int8"),
                            int8_min_agreement=0.7),
        bench=BenchConfig(threads=1, eval_limit=500, emulate=False),  # top-1 per artifact: the export's full pass
    )


def run_row(row: str, teacher: Path, shared: Path, work: Path, seed: int, progress: bool) -> dict:
    config = row_config(row, teacher, shared, work, seed)
    report = build(config, progress=progress)
    return {"row": row, "recipe": config.recipe, "pruning": [p.to_dict() for p in config.prune],
            "accuracy": report["accuracy"], "synthesis": report["synthesis"],
            "artifact_accuracy": {a["name"]: a.get("accuracy") for a in report["export"]["artifacts"]},
            "parity": {a["name"]: a.get("parity") for a in report["export"]["artifacts"]},
            "cost": report["cost"], "sparsity": report["sparsity"], "latency": _latency(report),
            "seconds": report["seconds"], "eval_images": report["eval_data"]["images"], "build_dir": str(config.out)}


def emulate_row(row: dict) -> dict:
    """Guest instructions per inference for teacher and student on each emulated CPU model and runtime."""
    from edgefree.bench.build_dir import bench_build

    counts = {}
    for target in EMULATED_TARGETS:
        result = bench_build(Path(row["build_dir"]), target,
                             BenchConfig(native=False, emulate=True, emulated_inputs=2, emulated_runs=2))
        emulated = result.get("emulated") or {}
        for r in emulated.get("rows") or []:
            if r.get("instructions"):
                counts[f"{target} ({emulated['cpu']})/{r['model']}/{r['runtime']}/{r['precision']}"] = \
                    r["instructions"]["per_inference"]
    return counts


def real_data_bound(row: dict, teacher_path: Path, shared: Path, work: Path, seed: int, progress: bool) -> dict:
    """The row's prune, refit and distillation on real training images instead of its dreams."""
    from cifar10_recovery import real_train_subset
    from train_mobilenet_teacher import CLASSES

    from edgefree.data import load_eval_data
    from edgefree.evaluate import accuracy
    from edgefree.recover import distill, prune, reconstruct
    from edgefree.recover.synthesize import SyntheticSet

    config = row_config(row["row"], teacher_path, shared, work, seed)
    teacher = load_teacher(ARCH, teacher_path, input_spec={"shape": SHAPE})
    data = load_eval_data(config.eval_data, teacher.spec)
    dreams = SyntheticSet.load(Path(row["build_dir"]) / "synthetic.pt")
    named = dataclasses.replace(teacher.spec, class_names=CLASSES)  # a torchvision spec names no classes
    real = real_train_subset(shared / "data" / "cifar10-jpeg" / "train.zip", len(dreams), named, seed)
    fast = recipe("fast")
    student = prune(teacher, list(config.prune), dreams)
    refit = reconstruct(teacher, student, real, fast.reconstruct, progress=progress)
    recovered = distill(teacher, refit, real, fast.distill, seed=seed, progress=progress).model
    with torch.no_grad():
        agreement = float((teacher.module(dreams.images[:1024]).argmax(1) == dreams.labels[:1024]).float().mean())
    return {"images": len(real), "refit": accuracy(refit.model, data, teacher.spec),
            "recovered": accuracy(recovered, data, teacher.spec), "teacher_agrees_with_dream_labels": agreement}


def synthesis_cost(teacher_path: Path, shared: Path, seed: int, steps: int = 10) -> list[dict]:
    """DeepInversion image-steps per second at the `fast` settings (one batch of 256, one process),
    for the MobileNet and the CIFAR ResNets, measured in turn in this run."""
    settings = recipe("fast").synthesis.replace(images=256, iterations=steps, first_iterations=steps, shards=1)
    teachers = {ARCH: load_teacher(ARCH, teacher_path, input_spec={"shape": SHAPE})}
    teachers |= {name: load_teacher(name, shared / "models" / file) for name, file in RESNETS.items()}
    results = []
    for name, teacher in teachers.items():
        synthesize(teacher, settings.replace(iterations=2, first_iterations=2), seed=seed, progress=False)  # warm-up
        started = time.perf_counter()
        synthesize(teacher, settings, seed=seed, progress=False)
        seconds = time.perf_counter() - started
        macs = count_macs(teacher.module, teacher.spec.example_inputs(batch=1)[0])
        rate = settings.images * steps / seconds
        results.append({"teacher": name, "macs_per_image": macs, "image_steps_per_s": rate,
                        "teacher_gmacs_per_s": rate * macs / 1e9, "seconds": seconds, "steps": steps})
        print(results[-1], flush=True)
    return results


def _fmt(value, spec=".2f"):
    return "n/a" if value is None else format(value, spec)


def render(results: dict) -> str:
    lines = ["# MobileNetV3-small (torchvision, CIFAR-10 at 32x32) compressed without its data", "",
             "Commands, in order, each merging its part in: " + ", ".join(f"`{c}`" for c in results["commands"])
             + ". " + (results["note"] + ". " if results.get("note") else "") + "`edgefree.pipeline.build`, seed 0, target raspberry-pi-4; top-1 on the 10,000 "
             "test images; dreams labelled: the share of the dreams the teacher labels as their target (BatchNorm "
             "weight: the synthesis's, `generator` choosing its own per teacher); p50 at batch 1 on this machine "
             "(x86-64, 1 thread), teacher and student taking turns.", "",
             "| row | recipe | pruning | MACs kept | params kept | teacher | pruned | refit | recovered | gap | "
             "dreams labelled (BN weight) | "
             "p50 student/teacher fp32 (onnxruntime, OpenVINO, ExecuTorch) | INT8 student vs fp32 teacher | "
             "seconds (synth + refit + KD) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    runtimes = ("onnxruntime", "openvino", "executorch")
    for row in results["rows"].values():
        a, c, s = row["accuracy"], row["cost"], row["seconds"]
        ratios, p50 = row["latency"]["student_over_teacher"], row["latency"]["p50_ms"]
        pruning = " + ".join(p["kind"] + (f" {p['sparsity']:.2f}" if p["kind"] == "magnitude" else
                                          f" macs {p['macs_target']}") for p in row["pruning"])
        fp32 = " / ".join(_fmt(ratios.get(f"{rt}/fp32")) for rt in runtimes)
        int8 = " / ".join(f"{p50[f'teacher/{rt}/fp32'] / p50[f'student/{rt}/int8']:.1f}x" if
                          f"student/{rt}/int8" in p50 and f"teacher/{rt}/fp32" in p50 else "n/a" for rt in runtimes)
        syn = row.get("synthesis") or {}
        labelled = (f"{100 * syn['teacher_agreement']:.1f}% ({syn['bn_weight']:g})" if syn.get("teacher_agreement")
                    is not None else "n/a")
        lines.append(f"| {row['row']} | {row.get('recipe', 'fast')} | {pruning} | {c['macs_ratio']:.2f} | "
                     f"{c['params_ratio']:.2f} | "
                     f"{a['teacher']:.2f} | {a['pruned']:.2f} | {_fmt(a.get('reconstructed'))} | **{a['recovered']:.2f}** | "
                     f"{a['teacher'] - a['recovered']:.2f} | {labelled} | {fp32} | {int8} | "
                     f"{s.get('synthesize', 0):.0f} + {s.get('reconstruct', 0):.0f} + {s.get('distill', 0):.0f} |")
    lines += ["", "Synthesis seconds of 0: the dreams came from the cache of an earlier build with the same settings."]
    lines += ["", "Top-1 of each exported artifact of the student (full test split, through its runtime), and for "
              "INT8 its top-1 agreement with the fp32 student on 256 dreams (a build requires 0.9 by default; this "
              "benchmark accepts 0.7):", ""]
    for row in results["rows"].values():
        agree = {k: (p or {}).get("top1_agreement") for k, p in row.get("parity", {}).items()}
        lines.append(f"- {row['row']}: " + ", ".join(
            f"{k} {_fmt(v)}" + (f" (agreement {agree[k]:.3f})" if k.endswith("int8") and agree.get(k) is not None else "")
            for k, v in sorted(row["artifact_accuracy"].items())))
    emulated = {r: row["emulated"] for r, row in results["rows"].items() if row.get("emulated")}
    if emulated:
        lines += ["", "## Guest instructions per inference under QEMU (EMULATED: counts, not device times)", "",
                  "| row | target (CPU model) | runtime / precision | teacher | student | student / teacher |",
                  "|---|---|---|---|---|---|"]
        for r, counts in emulated.items():
            for key, value in sorted(counts.items()):
                where, role, runtime, precision = key.rsplit("/", 3)
                teacher = counts.get(f"{where}/teacher/{runtime}/{precision}")
                if role == "student" and teacher:
                    lines.append(f"| {r} | {where} | {runtime} {precision} | {teacher / 1e6:.1f} M | "
                                 f"{value / 1e6:.1f} M | {value / teacher:.2f} |")
    bounds = {r: row["bound"] for r, row in results["rows"].items() if row.get("bound")}
    if bounds:
        lines += ["", "## Bound: the same recovery on real training images (NOT data-free)", "",
                  "`fast`'s refit and distillation on real images; a `-generator` row prunes the same student (neither "
                  "pruning reads the dreams), so its bound is its `fast` row's.", "",
                  "| row | images | teacher | refit, dreams / real | recovered, dreams / real | "
                  "teacher's top-1 on its dreams' labels |", "|---|---|---|---|---|---|"]
        for r, b in bounds.items():
            a = results["rows"][r]["accuracy"]
            lines.append(f"| {r} | {b['images']} | {a['teacher']:.2f} | {_fmt(a.get('reconstructed'))} / {b['refit']:.2f} | "
                         f"{a['recovered']:.2f} / {b['recovered']:.2f} | {100 * b['teacher_agrees_with_dream_labels']:.1f}% |")
    if results.get("synthesis_cost"):
        lines += ["", "## What DeepInversion costs per teacher (same settings, same run)", "",
                  "One batch of 256 images, `fast`'s settings (bf16 where native, but fp32 for a model with depthwise convolutions; channels-last), one process.", "",
                  "| teacher | MACs per image | image-steps / s | teacher GMACs / s (forward only) |", "|---|---|---|---|"]
        lines += [f"| {r['teacher']} | {r['macs_per_image'] / 1e6:.1f} M | {r['image_steps_per_s']:.0f} | "
                  f"{r['teacher_gmacs_per_s']:.1f} |" for r in results["synthesis_cost"]]
    m = results["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['versions'].get('torch')}.", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="folder holding data/ (and models/ for the ResNets)")
    parser.add_argument("--teacher", type=Path, required=True, help="the state_dict train_mobilenet_teacher.py wrote")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row ids ('' for none)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgefree-mobilenet-bench"))
    parser.add_argument("--emulate", action="store_true", help="QEMU instruction counts for the rows already built")
    parser.add_argument("--bound", action="store_true", help="real-data bound (not data-free) of the rows already built")
    parser.add_argument("--synthesis-cost", action="store_true", help="time DeepInversion on this teacher and the ResNets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--render", action="store_true", help="only render results/mobilenet_recovery.json again")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["mobilenet_recovery.json", "mobilenet_recovery.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    out = HERE / "results" / "mobilenet_recovery.json"
    if args.render:
        out.with_suffix(".md").write_text(render(json.loads(out.read_text())))
        return
    if not args.teacher.is_file():
        sys.exit(f"no teacher at {args.teacher}: make it with python benchmarks/train_mobilenet_teacher.py "
                 f"--shared {args.shared} --out {args.teacher}")
    results = json.loads(out.read_text()) if out.exists() else {"rows": {}}
    data = args.shared / "data" / "cifar10-jpeg"
    run = run_record(__file__, argv, [args.teacher, data / "test.zip", *([data / "train.zip"] if args.bound else []),
                                      *([args.shared / "models" / n for n in RESNETS.values()] if args.synthesis_cost else [])])
    command = run["command"]
    results["commands"] = [c for c in results.get("commands", []) if c != command] + [command]
    results["runs"] = [*results.get("runs", []), run]
    results["machine"] = machine_info()

    def save():
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(render(results))

    torch.manual_seed(args.seed)
    for row in [r for r in args.rows.split(",") if r]:
        earlier = results["rows"].get(row, {})  # its QEMU counts and real-data bound depend on the pruned student
        results["rows"][row] = {**run_row(row, args.teacher.resolve(), args.shared.resolve(), args.work, args.seed,
                                          not args.quiet), "emulated": earlier.get("emulated"), "bound": earlier.get("bound")}
        save()
        print(f"{row}: {results['rows'][row]['accuracy']}", flush=True)
    if args.emulate:
        for row in results["rows"].values():
            row["emulated"] = emulate_row(row)
            save()
    if args.bound:
        for row in [r for r in results["rows"].values() if ROWS[r["row"]][1] == "fast"]:  # module docstring
            row["bound"] = real_data_bound(row, args.teacher.resolve(), args.shared.resolve(), args.work, args.seed,
                                           not args.quiet)
            print(f"{row['row']} bound: {row['bound']}", flush=True)
            save()
    if args.synthesis_cost:
        results["synthesis_cost"] = synthesis_cost(args.teacher, args.shared, args.seed)
        save()
    print(render(results))


if __name__ == "__main__":
    main()
