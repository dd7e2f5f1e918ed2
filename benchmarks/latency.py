"""Latency benchmark: teacher vs student per runtime and precision, measured on x86-64 and emulated on arm64.

Cases: the built-in default (a real ``edgefree build``: recovered student) and the shared
CIFAR-10 ResNet-20 / ResNet-56 (student = the teacher pruned to 75% by global magnitude and
NOT distilled, as no recovered checkpoint is committed yet: latency and instruction counts
do not depend on the weights' values, accuracy does). Both models are exported by the
build's export stage (INT8 calibrated on DeepInversion images only) and measured by the
build's bench stage (``edgefree.bench.bench``):

* ``x86-64``: measured here, ``--repeat`` times, to show how well p50 repeats;
* each arm64 target: under qemu-aarch64 with the target's CPU model: logits against x86 and
  guest instructions per inference (the first arm64 target also ``--repeat`` times).

    python benchmarks/latency.py --shared ../shared       # writes results/latency/<case>/<target>/bench.*
    python benchmarks/latency.py --cases digits           # without the shared CIFAR-10 files

and renders ``results/latency.md`` from every bench.json found there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from edgefree.bench import bench
from edgefree.bench.teacher import export_teacher
from edgefree.config import BenchConfig, BuildConfig, ExportConfig, MagnitudePruning, SynthesisConfig
from edgefree.data import load_eval_data
from edgefree.export import export_student
from edgefree.models import load_teacher
from edgefree.pipeline import build
from edgefree.recover import prune, synthesize
from edgefree.markdown import markdown_table
from edgefree.targets import load_target
from provenance import describe, digits_files, run_record

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latency"
ARM_TARGETS = ("raspberry-pi-4", "raspberry-pi-5", "medical-sensor-a53")
CIFAR = {"resnet20": ("resnet20-cifar", "resnet20_cifar10jpeg.pt"), "resnet56": ("resnet56-cifar", "resnet56_cifar10jpeg.pt")}


def _cifar(name: str, shared: Path, work: Path):
    arch, checkpoint = CIFAR[name]
    teacher = load_teacher(arch, shared / "models" / checkpoint)
    eval_data = load_eval_data(shared / "data" / "cifar10-jpeg" / "test.zip", teacher.spec)
    dreams = synthesize(teacher, SynthesisConfig(images=256, batch_size=128, iterations=100), seed=0, progress=False)
    student = prune(teacher, MagnitudePruning(sparsity=0.75)).model
    config = ExportConfig().for_target(load_target("x86-64"))
    manifests = {"student": work / name / "artifacts" / "manifest.json",
                 "teacher": export_teacher(teacher, config, dreams, eval_data).manifest}
    export_student(student, teacher.spec, config, manifests["student"].parent, dreams, eval_data, arch=teacher.name)
    return {"teacher": teacher.module, "student": student}, manifests, eval_data, teacher.spec


def _save(result_dir: Path, produced: Path, note: str, run: dict) -> None:
    """Move bench.* from ``produced`` to ``result_dir`` and record how they were made."""
    result_dir.mkdir(parents=True, exist_ok=True)
    for name in ("bench.json", "bench.md", "bench.png"):
        shutil.copy(produced / name, result_dir / name)
    result = json.loads((result_dir / "bench.json").read_text())
    result["benchmark"] = {"command": run["command"], "run": run, "student": note}
    (result_dir / "bench.json").write_text(json.dumps(result, indent=2, default=str))


def _attempts(target: str, targets: list[str], repeat: int) -> list[tuple[int, str]]:
    """(run number, folder suffix) per run of ``target``: x86-64 and the first arm64 target ``repeat`` times."""
    times = repeat if target == "x86-64" or target == next((t for t in targets if t != "x86-64"), None) else 1
    return [(attempt, "" if attempt == 1 else f"-repeat{attempt}") for attempt in range(1, times + 1)]


def written(args) -> list[str]:
    """The files under results/ that this command writes."""
    if args.summary_only:
        return ["latency.md"]
    targets = args.targets.split(",")
    return ["latency.md", *(f"latency/{case}/{target}{suffix}/{name}" for case in args.cases.split(",") if case
                            for target in targets for _, suffix in _attempts(target, targets, args.repeat)
                            for name in ("bench.json", "bench.md", "bench.png"))]


def run_case(name: str, shared: Path, work: Path, targets: list[str], runs: int, repeat: int, eval_limit,
             argv=None) -> None:
    if name == "digits":
        out = work / "digits"
        build(BuildConfig(out=out, bench=BenchConfig(runs=runs, eval_limit=eval_limit)), progress=False)
        from edgefree.bench.build_dir import bench_build

        note = "recovered by `edgefree build` (demo recipe: DeepInversion + distillation), 75% sparse"
        measure = lambda target, config, into: bench_build(out, target, config, into)  # noqa: E731
        run = run_record(__file__, argv, digits_files())
    else:
        models, manifests, eval_data, spec = _cifar(name, shared, work)
        run = run_record(__file__, argv, [shared / "models" / CIFAR[name][1], shared / "data" / "cifar10-jpeg" / "test.zip"])
        note = "the teacher pruned to 75% (global magnitude), NOT distilled: no recovered checkpoint yet"
        measure = lambda target, config, into: bench(models, manifests, spec, load_target(target), into, config,  # noqa: E731
                                                     eval_data)
    for target in targets:
        emulated = load_target(target).emulated
        for attempt, suffix in _attempts(target, targets, repeat):
            config = (BenchConfig(runs=runs, eval_limit=eval_limit, native=False, emulated_runs=2,
                                  emulated_inputs=4 if name != "digits" else 8) if emulated
                      else BenchConfig(runs=runs, eval_limit=eval_limit))
            with tempfile.TemporaryDirectory() as tmp:
                measure(target, config, Path(tmp))
                _save(RESULTS / name / f"{target}{suffix}", Path(tmp), note, run)
            print(f"{name} {target} run {attempt} done", flush=True)


def _by_key(rows: list[dict]) -> dict:
    return {(r["model"], r["runtime"], r["precision"]): r for r in rows if not r["error"]}


def _x86(case: Path) -> list[str]:
    first = json.loads((case / "x86-64" / "bench.json").read_text())
    rows = _by_key(first["native"]["rows"])
    keys = [(r["runtime"], r["precision"]) for r in first["native"]["rows"] if r["model"] == "teacher"]
    table = []
    for runtime, precision in keys:
        t, s = rows.get(("teacher", runtime, precision)), rows.get(("student", runtime, precision))
        if not (t and s):
            continue
        acc = lambda r: "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}"  # noqa: E731
        table.append([runtime, precision, f"{t['latency_ms']['p50']:.3f}", f"{s['latency_ms']['p50']:.3f}",
                      f"{s['latency_ms']['p50'] / t['latency_ms']['p50']:.2f}x", acc(t), acc(s),
                      f"{(t['packed_bytes'] or t['bytes']) / 1024:,.1f}", f"{(s['packed_bytes'] or s['bytes']) / 1024:,.1f}"])
    lines = [f"x86-64, measured ({first['machine']['cpu']}, 1 thread, {first['native']['runs']} runs, "
             f"top-1 on {first['eval']['images']} images):", "",
             markdown_table(["runtime", "precision", "teacher p50 ms", "student p50 ms", "student/teacher", "teacher top-1 %",
                     "student top-1 %", "teacher KiB (packed)", "student KiB (packed)"], table)]
    repeats = sorted(case.glob("x86-64-repeat*/bench.json"))
    for path in repeats:
        again = _by_key(json.loads(path.read_text())["native"]["rows"])
        drift = [abs(again[k]["latency_ms"]["p50"] / r["latency_ms"]["p50"] - 1) for k, r in rows.items() if k in again]
        worst = max(drift)
        lines += ["", f"Repeat run ({path.parent.name}): p50 within {100 * worst:.1f}% of the first run for every row "
                      f"(median row {100 * sorted(drift)[len(drift) // 2]:.1f}%)."]
    return lines


def _arm(case: Path) -> list[str]:
    found = [p for p in sorted(case.glob("*/bench.json")) if "repeat" not in p.parent.name and p.parent.name != "x86-64"]
    if not found:
        return []
    benches = {p.parent.name: json.loads(p.read_text()) for p in found}
    keys = list(dict.fromkeys((r["runtime"], r["precision"]) for b in benches.values() for r in b["emulated"]["rows"]))
    header, table = ["runtime", "precision"], []
    for target, b in benches.items():
        header += [f"{target} ({b['emulated']['cpu']}) teacher", "student"]
    for runtime, precision in keys:
        row = [runtime, precision]
        for b in benches.values():
            counted = {(r["model"], r["runtime"], r["precision"]): r for r in b["emulated"]["rows"]}
            for model in ("teacher", "student"):
                r = counted.get((model, runtime, precision))
                row.append("-" if r is None else f"{r['instructions']['per_inference'] / 1e6:,.2f} M" if r["instructions"]
                           else "crashed" if "died" in (r["error"] or "") else "error")
        table.append(row)
    lines = ["", "arm64 under QEMU (emulated): guest instructions per inference, comparable only within one column "
             "pair (one CPU model); every row's logits were compared with x86-64:", "", markdown_table(header, table)]
    diffs = [r["parity_vs_x86"]["max_abs_diff"] for b in benches.values() for r in b["emulated"]["rows"]
             if r.get("parity_vs_x86") and r["precision"] == "fp32"]
    if diffs:
        lines += ["", f"fp32 logits vs x86-64: max abs diff {max(diffs):.2g} over every fp32 row and target."]
    crashed = sorted({f"{r['runtime']} on {b['emulated']['cpu']}" for b in benches.values() for r in b["emulated"]["rows"]
                      if "died" in (r["error"] or "")})
    if crashed:
        lines += ["", "Crashed (SIGILL: the aarch64 wheel needs newer instructions than the core has): "
                  + ", ".join(crashed) + "."]
    failed = sorted({f"{r['runtime']} {r['precision']} on {b['emulated']['cpu']}: "
                     + " ".join(r["error"].split())[:160] for b in benches.values() for r in b["emulated"]["rows"]
                     if r["error"] and "died" not in r["error"]})
    if failed:
        lines += ["", "Errors the runtime raised under emulation:", *[f"- {f}" for f in failed]]
    for path in sorted(case.glob("*-repeat*/bench.json")):
        if path.parent.name.startswith("x86-64"):
            continue
        target = path.parent.name.split("-repeat")[0]
        first = {(r["model"], r["artifact"]): r["instructions"]["total"] for r in benches[target]["emulated"]["rows"]
                 if r["instructions"]}
        again = {(r["model"], r["artifact"]): r["instructions"]["total"]
                 for r in json.loads(path.read_text())["emulated"]["rows"] if r["instructions"]}
        drift = {k: abs(again[k] - v) / v for k, v in first.items() if k in again}
        exact = sum(1 for d in drift.values() if d == 0)
        lines += ["", f"Repeat run on {target}: {exact} of {len(drift)} instruction counts identical; the largest "
                      f"difference {100 * max(drift.values()):.4f}%."]
    return lines


def summary(results: Path) -> str:
    """results/latency.md: per case, the x86-64 table, the arm64 instruction counts, and how well both repeat."""
    lines = ["# Latency: teacher vs student per runtime (generated by benchmarks/latency.py)", "",
             "Each folder under `latency/<case>/<target>/` holds the full bench.json, bench.md and bench.png, "
             "and the command that wrote it.", ""]
    for case in sorted(p for p in results.iterdir() if (p / "x86-64" / "bench.json").exists()):
        made = json.loads((case / "x86-64" / "bench.json").read_text())["benchmark"]
        commands = dict.fromkeys(json.loads(p.read_text())["benchmark"]["command"] for p in sorted(case.glob("*/bench.json")))
        lines += [f"## {case.name}", "", "Command: " + ", ".join(f"`{c}`" for c in commands) + ". " + (
            describe(made["run"]) if "run" in made else made["run_note"] + "."), "", f"Student: {made['student']}.", "",
            *_x86(case), *_arm(case), ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    parser.add_argument("--cases", default="digits,resnet20,resnet56")
    parser.add_argument("--targets", default=",".join(("x86-64", *ARM_TARGETS)))
    parser.add_argument("--runs", type=int, default=200, help="timed runs per runtime on x86-64")
    parser.add_argument("--repeat", type=int, default=2, help="runs of x86-64 and of the first arm64 target")
    parser.add_argument("--eval-limit", type=int, help="top-1 on the first N evaluation images (default: all)")
    parser.add_argument("--work", type=Path, help="scratch folder for builds and artifacts (default: a temp dir)")
    parser.add_argument("--summary-only", action="store_true", help="only re-render results/latency.md")
    return parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.summary_only:
        (HERE / "results" / "latency.md").write_text(summary(RESULTS))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    if any(c in CIFAR for c in cases) and not (args.shared / "models").is_dir():
        parser().error(f"the CIFAR-10 cases need the shared teachers and data in {args.shared}: pass --shared")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for case in cases:
            run_case(case, args.shared, work, args.targets.split(","), args.runs, args.repeat, args.eval_limit, argv)
    (HERE / "results" / "latency.md").write_text(summary(RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
