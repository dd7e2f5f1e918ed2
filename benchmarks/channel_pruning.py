"""Channel-pruning benchmark: a faster student, recovered without data, against the dense teacher.

Every row runs ``edgefree.pipeline.build`` (the code behind ``edgefree build``) on a shared
CIFAR-10 teacher with the ``fast`` recipe, target ``x86-64`` (onnxruntime, OpenVINO and
ExecuTorch, fp32 and INT8), so teacher and student latency come from one bench, taking turns.
Per row: teacher / pruned / refit / recovered top-1 on the 10,000 test images, multiply-adds
and parameters, p50 per runtime and precision with the student/teacher ratio, and (with
``--emulate``, after ``edgefree emulator setup``) guest instructions per inference under QEMU.

    python benchmarks/channel_pruning.py --shared ../shared                      # every row
    python benchmarks/channel_pruning.py --shared ../shared --rows r20-ch2x,r56-ch2x
    python benchmarks/channel_pruning.py --shared ../shared --rows '' --importance   # criteria only
    python benchmarks/channel_pruning.py --shared ../shared --rows '' --emulate      # QEMU counts of built rows
    python benchmarks/channel_pruning.py --shared ../shared --rows '' --bound        # real-data bound of built rows

Results merge row by row into ``results/channel_pruning.json`` and render to ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgefree.config import (CHANNEL_IMPORTANCE, BenchConfig, BuildConfig, ChannelPruning, ExportConfig, MagnitudePruning,
                             ReconstructConfig, recipe)
from edgefree.data import load_eval_data
from edgefree.evaluate import accuracy
from edgefree.machine import machine_info
from edgefree.models import load_teacher
from edgefree.pipeline import build, synthesize_cached
from edgefree.recover import distill, prune, reconstruct
from edgefree.recover.synthesize import SyntheticSet
from provenance import run_record

HERE = Path(__file__).resolve().parent
TEACHERS = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}
ROWS = {
    "r20-mag75": ("resnet20-cifar", (MagnitudePruning(0.75),)),
    "r20-ch2x": ("resnet20-cifar", (ChannelPruning(macs_target=0.5),)),
    "r20-ch3x": ("resnet20-cifar", (ChannelPruning(macs_target=0.33),)),
    "r20-ch3x-mag": ("resnet20-cifar", (ChannelPruning(macs_target=0.33), MagnitudePruning(0.5))),
    "r56-mag75": ("resnet56-cifar", (MagnitudePruning(0.75),)),
    "r56-ch2x": ("resnet56-cifar", (ChannelPruning(macs_target=0.5),)),
    "r56-ch3x": ("resnet56-cifar", (ChannelPruning(macs_target=0.33),)),
    "r56-depth2x": ("resnet56-cifar", (ChannelPruning(ratio=0.0, depth=0.5),)),
    "r56-depth-ch3x": ("resnet56-cifar", (ChannelPruning(macs_target=0.33, depth=0.5),)),
    "r56-depth-ch3x-mag": ("resnet56-cifar", (ChannelPruning(macs_target=0.33, depth=0.5), MagnitudePruning(0.5))),
}
FORMAT_OF = {"onnxruntime": "onnx", "openvino": "openvino", "executorch": "executorch"}
EMULATED_TARGETS = ("raspberry-pi-5", "medical-sensor-a53")  # cortex-a76 with all three runtimes, cortex-a53


def row_config(row_id: str, shared: Path, work: Path, seed: int) -> BuildConfig:
    arch, stages = ROWS[row_id]
    fast = recipe("fast")
    return BuildConfig(
        target="x86-64", out=work / row_id, model=shared / "models" / TEACHERS[arch], arch=arch,
        eval_data=str(shared / "data" / "cifar10-jpeg" / "test.zip"), seed=seed, recipe="fast",
        cache=work / "cache", prune=stages, synthesis=fast.synthesis, reconstruct=fast.reconstruct,
        distill=fast.distill, export=ExportConfig(formats=("onnx", "openvino", "executorch"), precisions=("fp32", "int8")),
        bench=BenchConfig(eval_limit=500, emulate=False),  # top-1 per artifact comes from the export's full pass
    )


def _latency(report: dict) -> dict:
    """p50 per (model, runtime, precision) and the student/teacher ratio per runtime and precision."""
    rows = [r for r in report["bench"]["native"]["rows"] if not r["error"]]
    p50 = {f"{r['model']}/{r['runtime']}/{r['precision']}": r["latency_ms"]["p50"] for r in rows}
    ratios = {}
    for key, value in p50.items():
        role, runtime, precision = key.split("/")
        teacher = p50.get(f"teacher/{runtime}/{precision}")
        if role == "student" and teacher:
            ratios[f"{runtime}/{precision}"] = value / teacher
    return {"p50_ms": p50, "student_over_teacher": ratios}


def run_row(row_id: str, shared: Path, work: Path, seed: int, progress: bool) -> dict:
    config = row_config(row_id, shared, work, seed)
    report = build(config, progress=progress)
    artifacts = {a["name"]: a.get("accuracy") for a in report["export"]["artifacts"]}
    return {"row": row_id, "model": ROWS[row_id][0], "pruning": [p.to_dict() for p in config.prune],
            "accuracy": report["accuracy"], "artifact_accuracy": artifacts, "cost": report["cost"],
            "pruning_stats": report["pruning"], "sparsity": report["sparsity"], "latency": _latency(report),
            "seconds": report["seconds"], "eval_images": report["eval_data"]["images"],
            "threads": report["bench"]["native"]["threads"], "build_dir": str(config.out), "machine": machine_info()}


def emulate_row(row: dict, targets: tuple[str, ...]) -> dict:
    """Guest instructions per inference for teacher and student on each emulated CPU model."""
    from edgefree.bench.build_dir import bench_build

    counts = {}
    for target in targets:
        result = bench_build(Path(row["build_dir"]), target, BenchConfig(native=False, emulate=True, emulated_inputs=2,
                                                                        emulated_runs=2))
        for r in (result["emulated"] or {}).get("rows") or []:
            if r.get("instructions"):
                counts[f"{result['emulated']['cpu']}/{r['model']}/{r['runtime']}/{r['precision']}"] = \
                    r["instructions"]["per_inference"]
    return counts


def real_data_bound(row: dict, shared: Path, work: Path, seed: int, progress: bool) -> dict:
    """The same prune, refit and distillation on as many *real training* images as dreams: the bound of
    what better dreams could reach. Not data-free; it reads the owner's training split."""
    from cifar10_recovery import real_train_subset

    config = row_config(row["row"], shared, work, seed)
    teacher = load_teacher(config.arch, config.model)
    data = load_eval_data(config.eval_data, teacher.spec)
    dreams = SyntheticSet.load(Path(row["build_dir"]) / "synthetic.pt")
    n = len(dreams)
    real = real_train_subset(shared / "data" / "cifar10-jpeg" / "train.zip", n, teacher.spec, seed)
    student = prune(teacher, list(config.prune), dreams)  # the row's own choice of channels and blocks
    refit = reconstruct(teacher, student, real, config.reconstruct, progress=progress)
    recovered = distill(teacher, refit, real, config.distill, seed=seed, progress=progress).model
    return {"images": n, "refit": accuracy(refit.model, data, teacher.spec),
            "recovered": accuracy(recovered, data, teacher.spec)}


def importance_study(shared: Path, work: Path, seed: int, progress: bool) -> list[dict]:
    """Each channel criterion on ResNet-20 at half the multiply-adds: pruned and refit top-1, no distillation."""
    config = row_config("r20-ch2x", shared, work, seed)
    teacher = load_teacher(config.arch, config.model)
    data = load_eval_data(config.eval_data, teacher.spec)
    dreams = synthesize_cached(teacher, config, work / "importance", progress)
    results = []
    for importance in CHANNEL_IMPORTANCE:
        student = prune(teacher, ChannelPruning(macs_target=0.5, importance=importance), dreams)
        refit = reconstruct(teacher, student, dreams, ReconstructConfig(images=1024), progress=progress)
        results.append({"importance": importance, "macs_kept": student.stats["macs_kept"],
                        "pruned": accuracy(student.model, data, teacher.spec),
                        "refit": accuracy(refit.model, data, teacher.spec)})
        print(results[-1], flush=True)
    return results


def render(results: dict) -> str:
    lines = ["# Channel pruning on CIFAR-10: faster students, recovered on dreams only", "",
             "Commands, in order, each merging its rows in: " + ", ".join(f"`{c}`" for c in results.get("commands", []))
             + ". " + (results["note"] + ". " if results.get("note") else "") + "Recipe `fast`, seed 0, target x86-64 (1 thread); top-1 on "
             "the 10,000 test images; p50 at batch 1 with teacher and student taking turns in the same bench.", "",
             "| row | pruning | MACs kept | params kept | teacher | pruned | refit | recovered | gap | "
             "p50 student/teacher (onnxruntime, OpenVINO, ExecuTorch; fp32 / int8) | INT8 student vs fp32 teacher |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"].values():
        a, c, lat = row["accuracy"], row["cost"], row["latency"]
        pruning = " + ".join(p["kind"] + (f" {p['sparsity']:.2f}" if p["kind"] == "magnitude" else
                                          (f" macs {p['macs_target']}" if p["macs_target"] else f" ratio {p['ratio']}") + f" depth {p['depth']}") for p in row["pruning"])
        ratios = lat["student_over_teacher"]
        speed = "; ".join(f"{rt} {ratios.get(rt + '/fp32', float('nan')):.2f} / {ratios.get(rt + '/int8', float('nan')):.2f}"
                          for rt in ("onnxruntime", "openvino", "executorch"))
        p50 = lat["p50_ms"]
        int8 = ", ".join(f"{p50[f'teacher/{rt}/fp32'] / p50[f'student/{rt}/int8']:.1f}x"
                         for rt in ("onnxruntime", "openvino", "executorch")
                         if f"student/{rt}/int8" in p50 and f"teacher/{rt}/fp32" in p50)
        lines.append(f"| {row['row']} | {pruning} | {c['macs_ratio']:.2f} | {c['params_ratio']:.2f} | {a['teacher']:.2f} | "
                     f"{a['pruned']:.2f} | {a.get('reconstructed') or float('nan'):.2f} | **{a['recovered']:.2f}** | "
                     f"{a['teacher'] - a['recovered']:.2f} | {speed} | {int8} faster |")
    bounds = {row_id: row["bound"] for row_id, row in results["rows"].items() if row.get("bound")}
    if bounds:
        lines += ["", "## Bound: the same recovery on real training images (NOT data-free)", "",
                  "| row | images | teacher | refit, dreams / real | recovered, dreams / real | gap, dreams / real |",
                  "|---|---|---|---|---|---|"]
        for row_id, b in bounds.items():
            a = results["rows"][row_id]["accuracy"]
            lines.append(f"| {row_id} | {b['images']} | {a['teacher']:.2f} | {a.get('reconstructed') or float('nan'):.2f} / "
                         f"{b['refit']:.2f} | {a['recovered']:.2f} / {b['recovered']:.2f} | "
                         f"{a['teacher'] - a['recovered']:.2f} / {a['teacher'] - b['recovered']:.2f} |")
    emulated = {row_id: row["emulated"] for row_id, row in results["rows"].items() if row.get("emulated")}
    if emulated:
        lines += ["", "## Guest instructions per inference under QEMU (EMULATED: counts, not device times)", "",
                  "| row | CPU model | runtime / precision | student / teacher |", "|---|---|---|---|"]
        for row_id, counts in emulated.items():
            for key, value in sorted(counts.items()):
                cpu, role, runtime, precision = key.split("/")
                teacher = counts.get(f"{cpu}/teacher/{runtime}/{precision}")
                if role == "student" and teacher:
                    lines.append(f"| {row_id} | {cpu} | {runtime} {precision} | {value / teacher:.2f} |")
    if results.get("importance"):
        lines += ["", "## Channel importance (ResNet-20, half the multiply-adds; refit, no distillation)", "",
                  "| importance | MACs kept | pruned | refit |", "|---|---|---|---|"]
        lines += [f"| {r['importance']} | {r['macs_kept']:.2f} | {r['pruned']:.2f} | {r['refit']:.2f} |"
                  for r in results["importance"]]
    lines += ["", "![accuracy against latency](channel_pruning.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Recovered top-1 against p50 (relative to the dense fp32 teacher), per runtime, fp32 and INT8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = ("onnxruntime", "openvino", "executorch")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), squeeze=False)
    for ax, runtime in zip(axes[0], runtimes):
        for row in results["rows"].values():
            p50 = row["latency"]["p50_ms"]
            teacher = p50.get(f"teacher/{runtime}/fp32")
            if not teacher:
                continue
            kind = "+".join(p["kind"] for p in row["pruning"])
            marker = {"magnitude": "s", "channel": "o", "channel+magnitude": "^"}[kind]
            for precision, fill in (("fp32", True), ("int8", False)):
                name = f"{FORMAT_OF[runtime]}-{precision}"
                student = p50.get(f"student/{runtime}/{precision}")
                top1 = row["artifact_accuracy"].get(name) or row["accuracy"]["recovered"]
                if student:
                    ax.scatter(student / teacher, top1, marker=marker, facecolors=None if fill else "none",
                               edgecolors="C0" if row["model"] == "resnet20-cifar" else "C1",
                               color="C0" if row["model"] == "resnet20-cifar" else "C1")
                    ax.annotate(f"{row['row']} {precision}", (student / teacher, top1), fontsize=6)
            ax.scatter(1.0, row["accuracy"]["teacher"], marker="*", s=120, color="k")
        ax.set_title(f"{runtime}: filled fp32, hollow INT8; * dense teacher")
        ax.set_xlabel("p50 / dense fp32 teacher's p50 (x86-64, measured)")
        ax.set_ylabel("top-1 %")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, required=True, help="folder holding data/ and models/")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated row ids ('' for none)")
    p.add_argument("--work", type=Path, default=Path("/tmp/edgefree-channel-bench"))
    p.add_argument("--importance", action="store_true", help="also compare the channel criteria")
    p.add_argument("--emulate", action="store_true", help="QEMU instruction counts for the rows already built")
    p.add_argument("--emulate-targets", default=",".join(EMULATED_TARGETS),
                   help="target profiles whose CPU model and runtimes --emulate counts on")
    p.add_argument("--bound", action="store_true",
                   help="real-data bound (not data-free) for the rows already built")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["channel_pruning.json", "channel_pruning.md", "channel_pruning.png"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    for name in TEACHERS.values():
        if not (args.shared / "models" / name).is_file():
            sys.exit(f"{args.shared / 'models' / name} not found: pass --shared with the shared teachers")
    out = HERE / "results" / "channel_pruning.json"
    results = json.loads(out.read_text()) if out.exists() else {"rows": {}}
    data = args.shared / "data" / "cifar10-jpeg"
    run = run_record(__file__, argv, [*(args.shared / "models" / n for n in TEACHERS.values()), data / "test.zip",
                                      *([data / "train.zip"] if args.bound else [])])
    command = run["command"]
    results["commands"] = [c for c in results.get("commands", []) if c != command] + [command]  # every run merged in
    results["runs"] = [*results.get("runs", []), run]

    def save():
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        out.with_suffix(".md").write_text(render(results))
        if results["rows"]:
            plot(results, out.with_suffix(".png"))

    if args.importance:
        results["importance"] = importance_study(args.shared, args.work, args.seed, not args.quiet)
        save()
    for row_id in [r for r in args.rows.split(",") if r]:
        earlier = results["rows"].get(row_id, {})
        results["rows"][row_id] = {**run_row(row_id, args.shared, args.work, args.seed, not args.quiet),
                                   "emulated": earlier.get("emulated"), "bound": earlier.get("bound"), "command": command}
        save()
        print(f"{row_id}: {results['rows'][row_id]['accuracy']} {results['rows'][row_id]['latency']['student_over_teacher']}",
              flush=True)
    if args.bound:
        for row in results["rows"].values():
            if Path(row["build_dir"], "synthetic.pt").exists():
                row["bound"] = real_data_bound(row, args.shared, args.work, args.seed, not args.quiet)
                print(f"{row['row']} bound: {row['bound']}", flush=True)
                save()
    if args.emulate:
        targets = tuple(args.emulate_targets.split(","))
        for row in results["rows"].values():
            if not Path(row["build_dir"], "report.json").exists():
                print(f"{row['row']}: build folder {row['build_dir']} is gone; its earlier QEMU counts are kept "
                      "(rebuild the row with --rows to count it again)", flush=True)
                continue
            row["emulated"] = {**(row.get("emulated") or {}), **emulate_row(row, targets)}
            save()


if __name__ == "__main__":
    main()
