"""arm64 latency tables: how well per-layer counts under QEMU predict a whole student, and what the x86 stand-in misses.

For each case (teacher, aarch64 target, latency target, precision), ``latency_budget`` chooses a
student twice: with tables counted under QEMU as the target's core (what an aarch64 build does
once ``edgefree emulator setup`` ran) and with tables timed natively on this x86 machine (the
stand-in used without the emulator). Both students and the teacher are then exported to ONNX and
counted whole under QEMU on that core; the record holds the predicted ratio, the counted one,
the search's seconds and how many table entries it counted. Counts are instructions, not time,
and do not move with the machine's load; the native tables' p50s do.

The sensitivities are measured on random inputs of the teacher's normalized shape instead of
dreams (the choice of widths, not the prediction, depends on them): nothing is trained.

    python benchmarks/arm64_tables.py --shared ../shared --mobilenet T.pt   # every case
    python benchmarks/arm64_tables.py --shared ../shared --cases r20-a76-0.5-fp32

Results go to ``results/arm64_tables.json`` (one entry per case, merged) and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import case_parser, records, run_cases  # noqa: E402
from provenance import run_record  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "arm64_tables.json"
TEACHERS = {"r20": ("resnet20-cifar", "resnet20_cifar10jpeg.pt"), "r56": ("resnet56-cifar", "resnet56_cifar10jpeg.pt"),
            "mbv3": ("torchvision:mobilenet_v3_small", None)}
TARGETS = {"a76": "raspberry-pi-5", "a72": "raspberry-pi-4"}
CASES = ["r20-a76-0.5-fp32", "r20-a72-0.5-fp32", "r20-a76-0.5-int8", "r56-a76-0.5-fp32", "mbv3-a76-0.6-fp32",
         "mbv3-a76-0.7-fp32"]


def _case(name: str) -> tuple[str, str, float, str]:
    teacher, core, ratio, precision = name.split("-")
    return teacher, TARGETS[core], float(ratio), precision


def run(name: str, args) -> dict:
    import torch

    from edgefree.bench.emulator_setup import default_home, prepared
    from edgefree.config import ChannelPruning, LatencyTarget
    from edgefree.errors import EdgefreeError
    from edgefree.latency_target import latency_budget
    from edgefree.latency_tables import Meter, models_latency
    from edgefree.models import load_teacher
    from edgefree.recover import SyntheticSet
    from edgefree.targets import load_target

    key, target, ratio, precision = _case(name)
    arch, file = TEACHERS[key]
    path = args.mobilenet if key == "mbv3" else args.shared / "models" / file
    if path is None:
        raise SystemExit(f"case {name} needs --mobilenet (the MobileNetV3-small teacher's weights)")
    teacher = load_teacher(arch, path, 10, {"shape": (3, 32, 32)} if key == "mbv3" else None)
    images = SyntheticSet(teacher.spec.example_inputs(256, seed=3)[0], torch.arange(256) % 10)
    example = teacher.spec.example_inputs(2)[0]
    cpu = load_target(target).emulation_cpu
    if "onnxruntime" not in (prepared(default_home()) or {}).get("runtimes", {}):
        raise SystemExit("the arm64 environment has no onnxruntime: run `edgefree emulator setup --runtimes onnxruntime`")
    meter = Meter("onnxruntime", precision, 1, cpu)
    entry = {"case": name, "arch": arch, "target": target, "cpu": cpu, "ratio": ratio, "precision": precision}
    students = {}
    for tables in ("qemu", "native"):
        started = time.perf_counter()
        try:
            student = latency_budget(teacher, images, LatencyTarget(ratio=ratio, precision=precision,
                                                                    emulate=tables == "qemu"),
                                     ChannelPruning(), target=target, progress=not args.quiet)
        except EdgefreeError as refused:  # the budget is out of reach by these tables: what the build would say
            entry[tables] = {"refused": str(refused), "search_seconds": round(time.perf_counter() - started, 1)}
            continue
        stats = student.stats["latency"]
        students[tables] = student.model
        tried = stats["search"]["corrections"]
        entry[tables] = {"table": stats["table"], "predicted_ratio": stats["predicted_ratio"],
                         "searches": len(tried), "first_predicted_ratio": tried[0]["predicted_ratio"],
                         "first_measured_ratio": tried[0]["measured_ratio"], "chosen_measured_ratio": stats["measured_ratio"],
                         "entries": stats["tables"]["entries"], "measured_now": stats["tables"]["measured_now"],
                         "search_seconds": round(time.perf_counter() - started, 1)}
    # the teacher and both students counted whole on the core, in one emulated process
    teacher_count, *counts = models_latency([teacher.module, *students.values()], example, meter)
    for tables, count in zip(students, counts):
        entry[tables].update(counted_ratio=count / teacher_count, teacher_minstr=teacher_count, student_minstr=count)
    entry["record"] = run_record(__file__, files=[path])
    return entry


def render(results: dict) -> str:
    lines = ["# arm64 latency tables: predicted against counted under QEMU", "",
             "Each case: `latency_budget` chooses channel widths for the latency target on the aarch64 target's "
             "runtime (onnxruntime, 1 thread, batch 1) twice, with per-layer tables counted under QEMU as its core "
             "and with tables timed natively on this x86 machine (the stand-in without the emulator). Teacher and "
             "both students are then exported to ONNX and counted whole under QEMU on that core: `counted` is the "
             "student's guest instructions per inference over the teacher's. Sensitivities on random inputs "
             "(nothing trained). `python benchmarks/arm64_tables.py` with the command of each record.", "",
             "Each search's choice is also measured whole, as the build does (counted under QEMU with the QEMU "
             "tables, timed natively with the stand-in), and searched again with the budget moved by what it missed "
             "(`latency_budget`, step 4): `tables alone` is the first choice, predicted / counted; `searches` how "
             "many choices were measured; `counted` is the kept student's.", "",
             "| case | core | precision | target | QEMU tables alone: predicted / counted | searches | counted | met "
             "| x86 stand-in alone: predicted / counted | searches | counted | met | teacher M instr. "
             "| QEMU search s (entries counted) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(results, key=lambda n: CASES.index(n) if n in CASES else len(CASES)):
        e = results[name]
        cells = []
        for tables in ("qemu", "native"):
            t = e[tables]
            if "refused" in t:
                closest = re.search(r"closest reachable is (\S+)x", t["refused"])
                cells.append(f"refused (closest {closest.group(1) if closest else '?'}x) | - | - | -")
            else:
                counted = f"{t['counted_ratio']:.3f}"
                alone = (f"{t['first_predicted_ratio']:.3f} / {t['first_measured_ratio']:.3f}" if "searches" in t
                         else f"{t['predicted_ratio']:.3f} / {counted}")
                cells.append(f"{alone} | {t.get('searches', 1)} | {'**' + counted + '**' if tables == 'qemu' else counted} | "
                             f"{'yes' if t['counted_ratio'] <= e['ratio'] else 'no'}")
        q = e["qemu"]
        lines.append(f"| {name} | {e['cpu']} | {e['precision']} | {e['ratio']:.2f} | {cells[0]} | {cells[1]} | "
                     f"{q.get('teacher_minstr', float('nan')):.2f} | {q['search_seconds']} "
                     f"({q.get('measured_now', '-')} of {q.get('entries', '-')}) |")
    return "\n".join(lines + records(results)) + "\n"


def parser() -> argparse.ArgumentParser:
    p = case_parser(__doc__, CASES)
    p.add_argument("--mobilenet", type=Path, help="MobileNetV3-small teacher weights (for the mbv3 cases)")
    return p


def written(args) -> list[str]:
    """The results files a command writes (``reproduce.py --check``)."""
    return ["arm64_tables.json"]


def _summary(entry: dict) -> str:
    q = entry["qemu"]
    return q["refused"] if "refused" in q else f"counted {q['counted_ratio']:.3f} (predicted {q['predicted_ratio']:.3f})"


def main(argv=None) -> None:
    run_cases(parser().parse_args(argv), CASES, RESULTS, run, render, _summary)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
