"""torchvision classifiers through every stage at 64x64, with tiny budgets: which ones build and export.

Each model is built with random weights (BatchNorm statistics from a few train-mode passes on
noise), saved as a state_dict and given to ``edgefree.pipeline.build`` as ``torchvision:<name>``
at ``--input-shape 3x64x64``: synthesis (8 dreams, 2 steps), 50% magnitude pruning, the refit
(8 dreams), one distillation epoch, and the fp32 export with parity on ONNX, OpenVINO and
ExecuTorch. No bench. Every model runs in its own process with a time limit, so one failure or
hang does not stop the others. Accuracy means nothing here (random weights): the stages and the
parity are what is measured.

    python benchmarks/torchvision_sweep.py                       # the default list
    python benchmarks/torchvision_sweep.py --models resnet18,mobilenet_v2
    python benchmarks/torchvision_sweep.py --global-pruning     # the last layer pruned too (rows without *)

Writes ``results/torchvision_sweep.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import describe, run_record

HERE = Path(__file__).resolve().parent
# The smallest member of each torchvision classification family with BatchNorm (the families
# Torch-Pruning's authors prune in their torchvision test), and a few larger ones.
MODELS = ("resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "mobilenet_v2",
          "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf",
          "regnet_y_400mf", "shufflenet_v2_x1_0", "mnasnet1_0", "googlenet", "vgg11_bn")
STAGES = ("load", "synthesize", "prune", "reconstruct", "distill", "export")


def one(name: str, work: Path, refit_images: int, keep_dense: bool) -> dict:
    """Build ``torchvision:name`` in this process; the result row."""
    import torch

    from edgefree.config import (BuildConfig, DistillConfig, ExportConfig, MagnitudePruning, ReconstructConfig,
                                 SynthesisConfig)
    from edgefree.models import load_teacher
    from edgefree.pipeline import build

    torch.manual_seed(0)
    torch.set_num_threads(1)
    teacher = load_teacher(f"torchvision:{name}", num_classes=10, input_spec={"shape": (3, 64, 64)})
    module = teacher.module.train()
    with torch.no_grad():
        for seed in range(3):
            module(teacher.spec.example_inputs(8, seed=seed)[0])
    checkpoint = work / f"{name}.pt"
    torch.save(module.eval().state_dict(), checkpoint)
    config = BuildConfig(
        out=work / name, model=checkpoint, arch=f"torchvision:{name}", input_shape=(3, 64, 64), threads=1,
        cache=work / "cache", prune=(MagnitudePruning(0.5, keep_first_last_dense=keep_dense),),
        synthesis=SynthesisConfig(images=8, batch_size=8, iterations=2, shards=1),
        reconstruct=ReconstructConfig(images=refit_images, batch_size=8), distill=DistillConfig(epochs=1, batch_size=8),
        export=ExportConfig(formats=("onnx", "openvino", "executorch"), precisions=("fp32",), check_images=8,
                            calibration_images=8), bench=None)
    report = build(config, progress=False)
    parity = {a["format"]: a["parity"]["max_abs_diff"] for a in report["export"]["artifacts"]}
    failed = {f["name"]: f["error"] for f in report["export"].get("failed", [])}
    passed = [stage for stage in STAGES if stage != "reconstruct" or refit_images]
    return {"model": name, "passed": passed, "refit_images": refit_images, "last_layer_dense": keep_dense, "parity": parity, "export_failed": failed,
            "macs": report["cost"]["teacher"]["macs"], "seconds": report["seconds"]}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=_models, default=",".join(MODELS),
                        help="comma-separated torchvision classifier names")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model")
    parser.add_argument("--refit-images", type=int, default=8,
                        help="dreams for the refit; 0 skips it (its exact per-row solve is slow on wide layers)")
    parser.add_argument("--global-pruning", action="store_true",
                        help="rank every layer's weights together, the first and last layers included "
                             "(default: those two stay dense)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one model
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser


def _models(text: str) -> list[str]:
    names = text.split(",")
    bad = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9_]*", n)]
    if bad:
        raise argparse.ArgumentTypeError(f"not torchvision model names: {', '.join(map(repr, bad))}")
    return names


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["torchvision_sweep.json", "torchvision_sweep.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.work, args.refit_images, not args.global_pruning)))
        return
    out = HERE / "results" / "torchvision_sweep.json"
    earlier = json.loads(out.read_text()) if out.exists() else {}
    rows, commands, runs = earlier.get("rows", {}), earlier.get("commands", []), earlier.get("runs", [])
    run = run_record(__file__, argv)
    command, runs = run["command"], [*runs, run]
    commands = [c for c in commands if c != command] + [command]
    work = Path(tempfile.mkdtemp(prefix="edgefree-tv-sweep-"))
    for name in args.models:
        started = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, __file__, "--one", name, "--work", str(work),
                                   "--refit-images", str(args.refit_images),
                                   *(["--global-pruning"] if args.global_pruning else [])], text=True,
                                  capture_output=True, timeout=args.timeout)
            if done.returncode == 0:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
                row = {"model": name, "error": errors[-1] if errors else f"exit {done.returncode}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "error": f"did not finish within {args.timeout:.0f} s"
                   + (" (refit on: its exact per-row solve)" if args.refit_images else "")}
        row["refit_images"] = args.refit_images
        row["last_layer_dense"] = not args.global_pruning
        row["wall_s"] = round(time.perf_counter() - started, 1)
        rows[name if args.refit_images else f"{name} (no refit)"] = row
        print(name, row.get("error") or row["parity"], flush=True)
        results = {"commands": commands, "runs": runs, "rows": rows,
                   **({"note": earlier["note"]} if "note" in earlier else {})}
        out.write_text(json.dumps(results, indent=1) + "\n")
        out.with_suffix(".md").write_text(render(results))


def render(results: dict) -> str:
    rows, commands = results["rows"], results["commands"]
    lines = ["# torchvision classifiers through every stage at 3x64x64, tiny budgets", "",
             "Produced by " + ", then ".join(f"`{c}`" for c in commands) + ": random weights, 8 dreams, 50% "
             "magnitude pruning, the refit on 8 dreams (where the row says so), 1 distillation epoch, fp32 "
             "export with parity (max |PyTorch - runtime| on 8 dreams). Rows without a * pruned globally, "
             "the last layer included: where a random classifier's weights (std 0.01) were the smallest, it "
             "was zeroed entirely (checked for mobilenet_v2 and densenet121) and the logits are 0, so a "
             "parity of exactly 0 is weak evidence there; rows with a * keep the first and last layer dense. "
             "One process per model, 1 thread, a time limit per model." + (
                 f" {results['note']}" if results.get("note") else "")
             + "".join(" " + describe(r) for r in results.get("runs", [])), "",
             "| model | MACs (64x64) | stages passed | refit | parity ONNX | parity OpenVINO | parity ExecuTorch | wall s | why it failed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        p = r.get("parity", {})
        why = r.get("error") or "; ".join(f"{k}: {v}" for k, v in r.get("export_failed", {}).items()) or ""
        cells = [f"{p[f]:.1e}" if f in p else "-" for f in ("onnx", "openvino", "executorch")]
        refit = "on" if r.get("refit_images", 8) else "skipped"
        name = name + (" *" if r.get("last_layer_dense") else "")
        lines.append(f"| {name} | {r['macs'] / 1e6:.1f} M | {len(r.get('passed', []))}/{len(STAGES)} | {refit} | "
                     if "macs" in r else f"| {name} | - | - | {refit} | ")
        lines[-1] += " | ".join(cells) + f" | {r['wall_s']:.0f} | {why[:200]} |"
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
