"""Latency tables on every runtime: the tables alone, and the student kept after measuring whole, against the teacher.

For each case (teacher, x86-64 runtime, precision, latency target), ``latency_budget`` chooses
channel widths from per-layer tables timed natively on that runtime (onnxruntime and OpenVINO:
one-node ONNX models; ExecuTorch: layers exported as programs), measures each choice whole and
searches again where it missed (step 4 of ``edgefree.latency_target``). The teacher and the kept
student are then exported and timed whole once more, in interleaved rounds in one process: the
`measured` ratio, what the build's bench would check. Sensitivities are measured on random inputs
(nothing is trained: the widths, not the timing, depend on them). Native p50s move with load: run
it alone; the load is recorded.

    python benchmarks/runtime_tables.py --shared ../shared                      # every case
    python benchmarks/runtime_tables.py --shared ../shared --cases r20-executorch-int8-0.5

Results go to ``results/runtime_tables.json`` (one entry per case, merged) and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import case_parser, records, run_cases  # noqa: E402
from provenance import run_record  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "runtime_tables.json"
TEACHERS = {"r20": ("resnet20-cifar", "resnet20_cifar10jpeg.pt")}
CASES = [f"r20-{runtime}-{precision}-0.5" for runtime in ("onnxruntime", "openvino", "executorch")
         for precision in ("fp32", "int8")]


def _case(name: str) -> tuple[str, str, str, float]:
    teacher, runtime, precision, ratio = name.split("-")
    return teacher, runtime, precision, float(ratio)


def run(name: str, args) -> dict:
    import torch

    from edgefree.config import ChannelPruning, LatencyTarget
    from edgefree.latency_target import latency_budget
    from edgefree.latency_tables import Meter, models_latency
    from edgefree.models import load_teacher
    from edgefree.recover import SyntheticSet

    key, runtime, precision, ratio = _case(name)
    arch, file = TEACHERS[key]
    path = args.shared / "models" / file
    teacher = load_teacher(arch, path, 10)
    images = SyntheticSet(teacher.spec.example_inputs(256, seed=3)[0], torch.arange(256) % 10)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    student = latency_budget(teacher, images, LatencyTarget(ratio=ratio, runtime=runtime, precision=precision),
                             ChannelPruning(), target="x86-64", progress=not args.quiet)
    seconds = time.perf_counter() - started
    stats = student.stats["latency"]
    tried = stats["search"]["corrections"]
    teacher_ms, student_ms = models_latency([teacher.module, student.model], teacher.spec.example_inputs(2)[0],
                                            Meter(runtime, precision, 1))
    return {"case": name, "arch": arch, "runtime": runtime, "precision": precision, "ratio": ratio,
            "table": stats["table"], "entries": stats["tables"]["entries"], "measured_now": stats["tables"]["measured_now"],
            "scale": stats["tables"]["scale"], "first_predicted_ratio": tried[0]["predicted_ratio"],
            "first_measured_ratio": tried[0]["measured_ratio"], "searches": len(tried),
            "chosen_measured_ratio": stats["measured_ratio"], "teacher_ms": teacher_ms, "student_ms": student_ms,
            "measured_ratio": student_ms / teacher_ms, "search_seconds": round(seconds, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "record": run_record(__file__, files=[path])}


def render(results: dict) -> str:
    lines = ["# Latency tables on every runtime (x86-64, timed natively)", "",
             "Each case: `latency_budget` chooses ResNet-20's channel widths for the target from per-layer tables "
             "timed on the runtime (1 thread, batch 1), measures each choice whole and searches again where it "
             "missed. `tables alone` is the first choice, predicted / measured whole; `searches` how many choices "
             "were measured; `measured` is the kept student's p50 over the teacher's, timed again together in one "
             "process afterwards. Native p50s move with load (1-minute load average recorded). Sensitivities on "
             "random inputs (nothing trained). `python benchmarks/runtime_tables.py` with each record's command.", "",
             "| case | runtime | precision | target | tables alone: predicted / measured | searches | measured "
             "| met | teacher ms | search s (entries timed now / in tables) | scale | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(results, key=lambda n: CASES.index(n) if n in CASES else len(CASES)):
        e = results[name]
        scale = "-" if e["scale"] is None else f"{e['scale']:.2f}"
        lines.append(f"| {name} | {e['runtime']} | {e['precision']} | {e['ratio']:.2f} | "
                     f"{e['first_predicted_ratio']:.3f} / {e['first_measured_ratio']:.3f} | {e['searches']} | "
                     f"**{e['measured_ratio']:.3f}** | {'yes' if e['measured_ratio'] <= e['ratio'] else 'no'} | "
                     f"{e['teacher_ms']:.3f} | {e['search_seconds']} ({e['measured_now']} / {e['entries']}) | {scale} | "
                     f"{e['load_before']} -> {e['load_after']} |")
    return "\n".join(lines + records(results)) + "\n"


def parser() -> argparse.ArgumentParser:
    p = case_parser(__doc__, CASES)
    return p


def written(args) -> list[str]:
    """The results files a command writes (``reproduce.py --check``)."""
    return ["runtime_tables.json"]


def _summary(e: dict) -> str:
    return (f"measured {e['measured_ratio']:.3f} (tables alone {e['first_predicted_ratio']:.3f} / "
            f"{e['first_measured_ratio']:.3f}, {e['searches']} searches)")


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    run_cases(parser().parse_args(argv), CASES, RESULTS, run, render, _summary)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
