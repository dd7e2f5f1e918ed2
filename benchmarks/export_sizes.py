"""Export benchmark: artifact sizes dense vs packed (fp32, INT8), parity and INT8 accuracy per runtime.

For the built-in digits teacher and the shared CIFAR-10 ResNet-20, each pruned to 75%
(global magnitude, no distillation: sizes and parity do not need it), this runs
``edgefree.export.export_student`` (the code behind the build's export stage) for every
format and precision, with INT8 calibrated on DeepInversion images only. As a control,
the *unpruned* teacher's ONNX fp32 artifact is packed too: packing wins come from the zeros.

    python benchmarks/export_sizes.py --shared ../shared      # writes results/export_sizes.{json,md}
    python benchmarks/export_sizes.py --cases digits          # without the shared CIFAR-10 files
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from edgefree.config import ExportConfig, MagnitudePruning, SynthesisConfig
from edgefree.data import load_eval_data
from edgefree.demo import DEMO_EVAL, default_teacher
from edgefree.evaluate import accuracy
from edgefree.export import export_student
from edgefree.machine import machine_info
from edgefree.models import load_teacher
from edgefree.recover import prune, synthesize
from edgefree.targets import FORMATS
from provenance import describe, digits_files, run_record

HERE = Path(__file__).resolve().parent


def _case(name: str, shared: Path):
    """(teacher, evaluation set, synthesis budget for the calibration dreams) of a case."""
    if name == "digits":
        teacher = default_teacher()
        return teacher, load_eval_data(DEMO_EVAL, teacher.spec), SynthesisConfig(
            images=256, batch_size=128, iterations=100, jitter=1)
    teacher = load_teacher("resnet20-cifar", shared / "models" / "resnet20_cifar10jpeg.pt")
    return teacher, load_eval_data(shared / "data" / "cifar10-jpeg" / "test.zip", teacher.spec), SynthesisConfig(
        images=256, batch_size=128, iterations=100)


def _row(manifest: dict) -> dict:
    figures = {}
    for a in manifest["artifacts"]:
        default = a["parity"].get("default_precision")
        figures[a["name"]] = {
            "bytes": a["bytes"], "packed_bytes": a["packed_bytes"], "max_abs_diff": a["parity"]["max_abs_diff"],
            "top1_agreement": a["parity"]["top1_agreement"], "accuracy": a["accuracy"], "seconds": a["seconds"],
            **({"default_precision": default} if default else {}),
        }
    return figures


def measure(name: str, shared: Path) -> dict:
    teacher, eval_data, budget = _case(name, shared)
    started = time.perf_counter()
    dreams = synthesize(teacher, budget, seed=0, progress=False)
    synthesis_s = time.perf_counter() - started
    pruned = prune(teacher, MagnitudePruning(sparsity=0.75)).model
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = export_student(pruned, teacher.spec, ExportConfig(formats=FORMATS, precisions=("fp32", "int8")),
                                  Path(tmp) / "pruned", dreams, eval_data, arch=teacher.name)
        export_s = time.perf_counter() - started
        control = export_student(teacher.module, teacher.spec, ExportConfig(formats=("onnx",), precisions=("fp32",)),
                                 Path(tmp) / "teacher", dreams)["artifacts"][0]
    return {
        "model": teacher.name, "sparsity": 0.75, "eval_images": len(eval_data),
        "calibration": {"kind": "DeepInversion", "images": len(dreams), "iterations": budget.iterations,
                        "synthesis_s": round(synthesis_s, 1)},
        "pytorch_accuracy": {"teacher": accuracy(teacher.module, eval_data, teacher.spec), "pruned_fp32": manifest["reference"]["accuracy"]},
        "artifacts": _row(manifest), "failed": manifest["failed"], "export_s": round(export_s, 1),
        "unpruned_teacher_onnx_fp32": {"bytes": control["bytes"], "packed_bytes": control["packed_bytes"]},
    }


def _x(a: int, b: int) -> str:
    return f"{a / b:.2f}x"


def render(results: dict) -> str:
    lines = ["# Export sizes, parity and INT8 accuracy (75% unstructured sparsity)", "",
             f"Command: `{results['command']}`" + (f". {describe(results['run'])}" if "run" in results else ""), "",
             "Models pruned to 75% by global magnitude, *not* distilled (accuracy below is the pruned model's, "
             "fp32 vs INT8 of the same model). INT8 is calibrated on DeepInversion images only. Sizes in bytes; "
             "'x' = how many times smaller than the dense fp32 artifact of the same format. The runtimes load "
             "the dense file and compute every zero: packing saves storage and transfer, not time.", ""]
    for case in results["cases"].values():
        arts = case["artifacts"]
        torch_acc = case["pytorch_accuracy"]
        lines += [f"## {case['model']} ({case['eval_images']} evaluation images; PyTorch accuracy: teacher "
                  f"{torch_acc['teacher']:.2f}%, pruned fp32 {torch_acc['pruned_fp32']:.2f}%)", "",
                  "| format | fp32 dense | fp32 packed | INT8 dense | INT8 packed | fp32 max abs diff | "
                  "INT8 top-1 agreement | INT8 max abs diff | accuracy fp32 % | accuracy INT8 % |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for fmt in FORMATS:
            f32, i8 = arts.get(f"{fmt}-fp32"), arts.get(f"{fmt}-int8")
            if not (f32 and i8):
                lines.append(f"| {fmt} | not built: see failed | | | | | | | | |")
                continue
            lines.append(
                f"| {fmt} | {f32['bytes']:,} | {f32['packed_bytes']:,} ({_x(f32['bytes'], f32['packed_bytes'])}) | "
                f"{i8['bytes']:,} | {i8['packed_bytes']:,} ({_x(f32['bytes'], i8['packed_bytes'])}) | "
                f"{f32['max_abs_diff']:.2g} | {i8['top1_agreement']:.4f} | {i8['max_abs_diff']:.3g} | "
                f"{f32['accuracy']:.2f} | {i8['accuracy']:.2f} |")
        control = case["unpruned_teacher_onnx_fp32"]
        lines += ["", f"Control: the unpruned teacher's ONNX fp32 ({control['bytes']:,} bytes) packs to "
                      f"{control['packed_bytes']:,} ({_x(control['bytes'], control['packed_bytes'])}).", ""]
        for name, a in arts.items():
            if "default_precision" in a:
                d = a["default_precision"]
                lines.append(f"- {name} at OpenVINO's default precision here ({d['hint']}): max abs diff "
                             f"{d['max_abs_diff']:.3g}, top-1 agreement {d['top1_agreement']:.4f} (gated figures use f32).")
        lines += ["", f"Calibration: {case['calibration']['images']} DeepInversion images x "
                      f"{case['calibration']['iterations']} steps ({case['calibration']['synthesis_s']} s); "
                      f"export of all six artifacts incl. parity and accuracy runs: {case['export_s']} s.", ""]
        if case["failed"]:
            lines += [f"Failed: {f['name']}: {f['error']}" for f in case["failed"]] + [""]
    m = results["machine"]
    lines += [f"Machine: {m['cpu']} ({m['cores']} cores); " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared",
                        help="folder with models/ and data/ (the shared CIFAR-10 teachers and test set)")
    parser.add_argument("--cases", default="digits,resnet20", help="comma-separated: digits, resnet20")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["export_sizes.json", "export_sizes.md"]


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    cases = args.cases.split(",")
    run = run_record(__file__, argv, [*(digits_files() if "digits" in cases else []), *(
        [args.shared / "models" / "resnet20_cifar10jpeg.pt", args.shared / "data" / "cifar10-jpeg" / "test.zip"]
        if "resnet20" in cases else [])])
    results = {"command": run["command"], "run": run, "machine": machine_info(), "cases": {}}
    for name in cases:
        results["cases"][name] = measure(name, args.shared)
        print(json.dumps(results["cases"][name]["artifacts"], indent=1), flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "export_sizes.json").write_text(json.dumps(results, indent=2))
    (out / "export_sizes.md").write_text(render(results))
    print(f"wrote {out / 'export_sizes.json'} and {out / 'export_sizes.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
