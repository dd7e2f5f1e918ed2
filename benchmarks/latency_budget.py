"""Latency-target benchmark: `--latency-target R --pruning channel` on a CIFAR-10 ResNet, predicted against measured.

One ``edgefree.pipeline.build`` (the code behind ``edgefree build``) with the ``fast`` recipe,
target x86-64, exporting ONNX fp32 only (the runtime and precision the latency table is
measured on), benching teacher and student in turns. Records the predicted p50 ratio (from the
per-layer tables), the bench's measured one, whether the target was met, the widths and blocks
chosen, and the top-1 on the 10,000 test images, with the exact command, the git commit, the
sha256 of teacher and data, and the machine's load (the cores may be shared: absolute times
and, less so, ratios move with it).

    python benchmarks/latency_budget.py --shared ../shared                     # ResNet-20, R = 0.5
    python benchmarks/latency_budget.py --shared ../shared --arch resnet56-cifar --ratio 0.5
    python benchmarks/latency_budget.py --shared ../shared --arch resnet56-cifar --uniform 0.33 --depth 0.5
    python benchmarks/latency_budget.py --shared ../shared --max-drop 1.0      # and a magnitude stage searched

``--uniform M`` builds the uniform ``--macs-target M`` student (``--depth``: and that share of the
residual blocks removed) alike instead, for the same-latency comparison: its p50 ratio is measured
the same way, against the teacher in the same bench. ``--max-drop D`` adds a magnitude stage after the
channels (``--pruning channel,magnitude``) whose sparsity ``--max-drop`` searches on the latency
target's widths: the two budgets composed.

Results go to ``results/latency_budget.json`` (one entry per arch and ratio, merged) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import describe, run_record  # noqa: E402

from edgefree.config import (BenchConfig, BuildConfig, ChannelPruning, ExportConfig, LatencyTarget, MagnitudePruning,
                             recipe)
from edgefree.machine import machine_info
from edgefree.pipeline import build

HERE = Path(__file__).resolve().parent
TEACHERS = {"resnet20-cifar": "resnet20_cifar10jpeg.pt", "resnet56-cifar": "resnet56_cifar10jpeg.pt"}
UNIFORM = HERE / "results" / "channel_pruning.json"  # uniform --macs-target rows, for context


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(arch: str, ratio: float, shared: Path, work: Path, seed: int, progress: bool, threads: int,
        max_drop: float | None = None) -> dict:
    fast = recipe("fast")
    teacher, data = shared / "models" / TEACHERS[arch], shared / "data" / "cifar10-jpeg" / "test.zip"
    stages = (ChannelPruning(),) if max_drop is None else (ChannelPruning(), MagnitudePruning())
    config = BuildConfig(
        target="x86-64", out=work / (f"{arch}-lat{ratio}" + (f"-max-drop{max_drop:g}" if max_drop is not None else "")),
        model=teacher, arch=arch, eval_data=str(data), seed=seed, max_drop=max_drop,
        recipe="fast", cache=work / "cache", prune=stages, latency_target=LatencyTarget(ratio=ratio),
        synthesis=fast.synthesis, reconstruct=fast.reconstruct, distill=fast.distill,
        export=ExportConfig(formats=("onnx",), precisions=("fp32",)),
        bench=BenchConfig(eval_limit=500, emulate=False), threads=threads)  # top-1 per artifact: the export's pass
    load_before, started = _uptime(), time.time()
    report = build(config, progress=progress)
    load_after = _uptime()
    stats = report["pruning"]["latency"]
    rows = {f"{r['model']}/{r['runtime']}/{r['precision']}": r["latency_ms"] for r in report["bench"]["native"]["rows"]
            if not r["error"]}
    return {
        "arch": arch, "ratio": ratio, "seed": seed, "max_drop": max_drop, "budget": report.get("budget"),
        "sparsity": report["sparsity"], "estimate": {"drop": report["estimate"]["recovered"]["drop"],
                                                     "measured_drop": report["estimate"]["measured_drop"],
                                                     "warnings": report["estimate"]["warnings"]},
        "accuracy": report["accuracy"], "artifact_accuracy": {a["name"]: a.get("accuracy")
                                                              for a in report["export"]["artifacts"]},
        "latency_target": report["latency_target"], "cost": report["cost"],
        "choice": {"removed_blocks": stats["removed_blocks"],
                   "groups": [{k: g[k] for k in ("layers", "channels", "kept", "kl", "removed_with_block")}
                              for g in stats["groups"]], "sensitivity_kl": stats["sensitivity_kl"],
                   "block_kl": stats["block_kl"]},
        "prediction": {k: stats[k] for k in ("teacher_cost", "predicted_cost", "unit", "predicted_ratio",
                                             "closest_reachable_ratio", "remainder", "call", "table", "tables",
                                             "search", "seconds")},
        "bench_p50_ms": {k: v["p50"] for k, v in rows.items()}, "bench_p50_ci95": {k: v.get("p50_ci95")
                                                                                    for k, v in rows.items()},
        "bench_load_average_1min": report["bench"]["native"]["load_average_1min"],
        "uptime_before": load_before, "uptime_after": load_after, "wall_s": round(time.time() - started, 1),
        "seconds": report["seconds"], "eval_images": report["eval_data"]["images"],
        "record": run_record(__file__, files=[teacher, data]), "build_dir": str(config.out), "machine": machine_info(),
    }


def run_uniform(arch: str, macs: float, depth: float, shared: Path, work: Path, seed: int, progress: bool,
                threads: int) -> dict:
    """The uniform ``--macs-target`` student, built, exported and benched as ``run`` builds the latency target's."""
    fast = recipe("fast")
    teacher, data = shared / "models" / TEACHERS[arch], shared / "data" / "cifar10-jpeg" / "test.zip"
    config = BuildConfig(
        target="x86-64", out=work / f"{arch}-uniform{macs}-depth{depth}", model=teacher, arch=arch, eval_data=str(data),
        seed=seed, recipe="fast", cache=work / "cache", prune=(ChannelPruning(macs_target=macs, depth=depth),),
        synthesis=fast.synthesis, reconstruct=fast.reconstruct, distill=fast.distill,
        export=ExportConfig(formats=("onnx",), precisions=("fp32",)),
        bench=BenchConfig(eval_limit=500, emulate=False), threads=threads)
    load_before, started = _uptime(), time.time()
    report = build(config, progress=progress)
    rows = {f"{r['model']}/{r['runtime']}/{r['precision']}": r["latency_ms"]["p50"]
            for r in report["bench"]["native"]["rows"] if not r["error"]}
    return {"arch": arch, "macs_target": macs, "depth": depth, "seed": seed, "accuracy": report["accuracy"],
            "cost": report["cost"], "bench_p50_ms": rows,
            "measured_ratio": rows["student/onnxruntime/fp32"] / rows["teacher/onnxruntime/fp32"],
            "removed_blocks": report["pruning"].get("removed_blocks"),
            "bench_load_average_1min": report["bench"]["native"]["load_average_1min"],
            "uptime_before": load_before, "uptime_after": _uptime(), "wall_s": round(time.time() - started, 1),
            "seconds": report["seconds"], "record": run_record(__file__, files=[teacher, data])}


def _same_latency(arch: str, entry: dict, uniform: dict) -> list[str]:
    """This benchmark's uniform rows of ``arch`` beside the latency target's student."""
    mine = [u for u in uniform.values() if u["arch"] == arch]
    if not mine:
        return []
    ours = entry["latency_target"]["measured_ratio"]
    lines = ["", "Uniform `--macs-target` students built, exported and benched the same way by this benchmark "
             "(`--uniform`; each ratio against the teacher in its own bench):", "",
             "| uniform student | MACs kept | measured p50 ratio (onnxruntime fp32) | recovered | latency target's "
             f"student ({ours:.3f}x) minus it |", "|---|---|---|---|---|"]
    for u in mine:
        lines.append(f"| macs {u['macs_target']:g}, depth {u['depth']:g} | {u['cost']['macs_ratio']:.2f} | "
                     f"{u['measured_ratio']:.3f} | {u['accuracy']['recovered']:.2f} | "
                     f"{entry['accuracy']['recovered'] - u['accuracy']['recovered']:+.2f} |")
    lines += [""] + [f"- macs {u['macs_target']:g}, depth {u['depth']:g}: `{u['record']['command']}`. "
                     f"{describe(u['record'])} Load `{u['uptime_before']}` before, `{u['uptime_after']}` after; "
                     f"p50 ms: " + ", ".join(f"{k} {v:.4f}" for k, v in u["bench_p50_ms"].items()) + "."
                     for u in mine]
    return lines


def _uniform_rows(arch: str) -> list[str]:
    if not UNIFORM.is_file():
        return []
    rows = json.loads(UNIFORM.read_text())["rows"].values()
    lines = []
    for row in rows:
        stage = row["pruning"][0]
        if row["model"] != arch or len(row["pruning"]) != 1 or stage["kind"] != "channel" or stage.get("depth"):
            continue
        ratio = row["latency"]["student_over_teacher"].get("onnxruntime/fp32")
        lines.append(f"| {row['row']} (uniform, macs {stage['macs_target']}) | {row['cost']['macs_ratio']:.2f} | "
                     f"{ratio:.2f} | {row['accuracy']['recovered']:.2f} |")
    return lines


def _cost(prediction: dict, name: str) -> str:
    """One figure of the search's latency model with its unit (records before the unit was stored hold ms)."""
    if "unit" in prediction:
        return f"{prediction[name if name in ('remainder', 'call') else name + '_cost']:.4f} {prediction['unit']}"
    return f"{prediction[name + ('_ms' if name in ('remainder', 'call') else '_p50_ms')]:.4f} ms"


def render(results: dict) -> str:
    uniform = results.get("uniform", {})
    lines = ["# Latency target: per-layer widths for a p50 budget, predicted and measured", "",
             "Each entry is one `edgefree.pipeline.build` with `LatencyTarget(ratio=R)` and `ChannelPruning()` "
             "(`--latency-target R --pruning channel`), recipe `fast`, seed 0, target x86-64, ONNX fp32 only; the "
             "latency table is onnxruntime fp32, 1 thread, batch 1, measured natively on this machine. Top-1 on the "
             "10,000 CIFAR-10 test images. The bench times teacher and student in turns; the cores were shared "
             "with other processes while it ran (load below), so the measured ratio carries that noise.", ""]
    for entry in results["entries"].values():
        lt, p, a, c = entry["latency_target"], entry["prediction"], entry["accuracy"], entry["choice"]
        budget = entry.get("budget")
        title = f"## {entry['arch']}, latency target {entry['ratio']:.2f}x" + (
            f", --max-drop {entry['max_drop']:g} (channel, then magnitude)" if entry.get("max_drop") is not None else "")
        lines += [title, "",
                  f"Command: `{entry['record']['command']}`. {describe(entry['record'])}", "",
                  "| target | predicted p50 ratio | measured when chosen (searches) | measured p50 ratio "
                  "(onnxruntime fp32) | met | MACs kept | teacher | pruned | refit | recovered |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| {lt['target_ratio']:.2f} | {lt['predicted_ratio']:.3f} | "
                  + (f"{lt['chosen_ratio']:.3f} ({lt['searches']})" if lt.get("chosen_ratio") else "- (not measured)")
                  + " | "
                  + ("-" if lt["measured_ratio"] is None else f"{lt['measured_ratio']:.3f}")
                  + f" | {'yes' if lt['met'] else 'no'} | {entry['cost']['macs_ratio']:.2f} | {a['teacher']:.2f} | "
                  f"{a['pruned']:.2f} | {a.get('reconstructed') or float('nan'):.2f} | **{a['recovered']:.2f}** |", "",
                  f"- p50 ms: {', '.join(f'{k} {v:.4f}' for k, v in entry['bench_p50_ms'].items())}; the latency "
                  f"search timed the teacher at {_cost(p, 'teacher')} and predicted {_cost(p, 'predicted')} "
                  f"(tables' remainder {_cost(p, 'remainder')}, empty call {_cost(p, 'call')}); narrowest "
                  f"reachable {p['closest_reachable_ratio']:.2f}x.",
                  f"- Load: `{entry['uptime_before']}` before the build, `{entry['uptime_after']}` after; 1-min "
                  f"load average {entry['bench_load_average_1min'][0]:.2f} / {entry['bench_load_average_1min'][1]:.2f} "
                  "at the start / end of the bench.",
                  f"- Removed blocks: {', '.join(c['removed_blocks']) or 'none'}. Widths kept per group: "
                  + ", ".join(f"{g['layers'][0]} {g['kept']}/{g['channels']}" for g in c["groups"]
                              if not g["removed_with_block"]) + ".",
                  f"- Latency search: {p['seconds']} s ({p['tables']['entries']} table entries, "
                  f"{p['tables']['measured_now']} measured in this build); stage seconds: "
                  + ", ".join(f"{k} {v}" for k, v in entry["seconds"].items()) + "."]
        if budget:
            lines += [f"- Budget: `--max-drop {budget['max_drop']:g}` searched the magnitude sparsity on the latency "
                      f"target's widths in {budget['seconds']:.0f} s, candidates "
                      + ", ".join(f"{c['value']:g} (~{c['estimated_drop']:.1f})" for c in budget["candidates"])
                      + f"; {'met' if budget['met'] else 'NOT met by any candidate'}, chose {budget['chosen']:g}. "
                      f"The recovered student ({100 * entry['sparsity']:.1f}% of its weights zero) is estimated at "
                      f"~{entry['estimate']['drop']:.1f} points lost, measured {entry['estimate']['measured_drop']:.2f}."]
            lines += [f"- Warning printed: {w}" for w in entry["estimate"]["warnings"]]
        if entry.get("max_drop") is None:
            lines += _same_latency(entry["arch"], entry, uniform)
        context = _uniform_rows(entry["arch"])
        if context:
            lines += ["", "Uniform channel ratios on the same teacher, from `channel_pruning.md` (other builds, "
                      "other benches and load: context, not a same-latency comparison):", "",
                      "| row | MACs kept | p50 ratio onnxruntime fp32 | recovered |", "|---|---|---|---|", *context]
        lines.append("")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, required=True, help="folder holding data/ and models/")
    p.add_argument("--arch", choices=sorted(TEACHERS), default="resnet20-cifar")
    p.add_argument("--ratio", type=float, default=0.5, help="the latency target")
    p.add_argument("--uniform", type=float, help="build the uniform --macs-target student of this MACs target instead")
    p.add_argument("--depth", type=float, default=0.0, help="with --uniform: the share of residual blocks removed")
    p.add_argument("--max-drop", type=float, help="also a magnitude stage, its sparsity searched for this budget")
    p.add_argument("--work", type=Path, default=Path("/tmp/edgefree-latency-bench"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="threads of the build's training stages")
    p.add_argument("--quiet", action="store_true")
    return p


def written(args) -> list[str]:
    """The results files a command writes (``reproduce.py --check``)."""
    return ["latency_budget.json"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if not (args.shared / "models" / TEACHERS[args.arch]).is_file():
        sys.exit(f"{args.shared / 'models' / TEACHERS[args.arch]} not found: pass --shared with the shared teachers")
    path = HERE / "results" / "latency_budget.json"
    if args.uniform is not None:
        entry = run_uniform(args.arch, args.uniform, args.depth, args.shared.resolve(), args.work, args.seed,
                            not args.quiet, args.threads)
    else:
        entry = run(args.arch, args.ratio, args.shared.resolve(), args.work, args.seed, not args.quiet, args.threads,
                    args.max_drop)
    results = json.loads(path.read_text()) if path.is_file() else {"entries": {}}
    if args.uniform is not None:
        results.setdefault("uniform", {})[f"{args.arch}@{args.uniform:g},{args.depth:g}"] = entry
    else:
        budget = "" if args.max_drop is None else f"+max-drop{args.max_drop:g}"
        results["entries"][f"{args.arch}@{args.ratio}{budget}"] = entry
    path.write_text(json.dumps(results, indent=2))
    path.with_suffix(".md").write_text(render(results))
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
