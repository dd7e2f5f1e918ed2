"""What one step of synthesis and of distillation costs, in bf16 or fp32, in the NCHW or channels-last layout.

Times, for each model, the two steps that dominate a build's CPU time:

- a distillation step: the teacher's forward pass and a student's forward and backward pass and
  SGD step on a batch (the student a copy of the teacher: a magnitude-pruned student's cost);
- an inversion step: the teacher's forward and backward pass to its input (what a DeepInversion
  step or a generator step costs the teacher).

Each in fp32 and under bf16 autocast, in the NCHW and the channels-last layout, the four settings
taking turns over ``--rounds`` rounds (the median of each). Weights do not change a step's cost, so
the models are untrained and nothing is read from disk. The table also gives what the recipes
(`fast`, `generator`, `thorough`) compute in on this machine, and what they computed before a
model's depthwise convolutions kept it in fp32 (bf16 wherever the CPU has it, distillation in NCHW).

    python benchmarks/step_speed.py

Writes ``results/step_speed.{json,md}``. Run it alone: two cores shared with another job give noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from provenance import describe, run_record

HERE = Path(__file__).resolve().parent
MODELS = {"resnet20-cifar": {}, "resnet56-cifar": {}, "torchvision:mobilenet_v3_small": {"shape": [3, 32, 32]},
          "torchvision:mobilenet_v2": {"shape": [3, 32, 32]}}
SETTINGS = [(bf16, layout) for bf16 in (True, False) for layout in ("nchw", "channels_last")]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting and round (after one untimed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return ["step_speed.json", "step_speed.md"] if args.results.resolve() == (HERE / "results").resolve() else []


def _time(step, steps: int) -> float:
    step()  # untimed: the first call allocates and picks kernels
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _steps(teacher, student, x, bf16: bool, layout: str):
    """The distillation step and the inversion step of one setting (models converted in place)."""
    import torch

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    teacher.to(memory_format=fmt)
    student.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def distill_step():
        with autocast():
            with torch.no_grad():
                target = teacher(x).float()
            loss = torch.nn.functional.kl_div(student(x).float().log_softmax(1), target.softmax(1),
                                              reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def inversion_step():
        pixels = x.detach().clone().requires_grad_(True)
        with autocast():
            loss = teacher(pixels).float().logsumexp(1).mean()
        torch.autograd.grad(loss, pixels)

    return distill_step, inversion_step


def measure(name: str, shape_changes: dict, args) -> dict:
    import copy

    import torch

    from edgefree.models import load_teacher

    teacher = load_teacher(name, None, input_spec=shape_changes or None)
    module = teacher.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(module).train()
    for p in student.parameters():
        p.requires_grad_(True)
    x = torch.randn(args.batch, *teacher.spec.shape, generator=torch.Generator().manual_seed(0))
    times = {f"{kind}/{'bf16' if bf16 else 'fp32'}/{layout}": [] for kind in ("distill", "inversion")
             for bf16, layout in SETTINGS}
    for _ in range(args.rounds):
        for bf16, layout in SETTINGS:
            distill_step, inversion_step = _steps(module, student, x, bf16, layout)
            precision = "bf16" if bf16 else "fp32"
            times[f"distill/{precision}/{layout}"].append(_time(distill_step, args.steps))
            times[f"inversion/{precision}/{layout}"].append(_time(inversion_step, args.steps))
    ms = {key: round(1000 * statistics.median(values), 1) for key, values in times.items()}
    return {"model": name, "ms": ms, **_choices(module, ms)}


def _choices(module, ms: dict) -> dict:
    """The setting the recipes use on this machine now, and before depthwise models kept fp32 and distillation
    went channels-last, with each step's ms under both."""
    from edgefree.config import recipe
    from edgefree.machine import native_bf16, resolve_bf16

    fast = recipe("fast")
    now = {"distill": ("bf16" if resolve_bf16(fast.distill.bf16, "cpu", module) else "fp32",
                       "channels_last" if fast.distill.channels_last else "nchw"),
           "inversion": ("bf16" if resolve_bf16(fast.synthesis.bf16, "cpu", module) else "fp32",
                         "channels_last" if fast.synthesis.channels_last else "nchw")}
    native = "bf16" if native_bf16("cpu") else "fp32"
    before = {"distill": (native, "nchw"), "inversion": (native, "channels_last")}
    return {"now": {k: "/".join(v) for k, v in now.items()}, "before": {k: "/".join(v) for k, v in before.items()},
            "now_ms": {k: ms[f"{k}/{'/'.join(v)}"] for k, v in now.items()},
            "before_ms": {k: ms[f"{k}/{'/'.join(v)}"] for k, v in before.items()}}


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    import torch

    from edgefree.machine import machine_info, native_bf16

    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}: choose from {list(MODELS)}")
    load_before = os.getloadavg()
    rows = []
    for name in names:
        rows.append(measure(name, MODELS[name], args))
        print(json.dumps(rows[-1]), flush=True)
    run = run_record(__file__, argv)
    result = {"benchmark_command": run["command"], "run": run, "batch": args.batch, "steps": args.steps,
              "rounds": args.rounds, "threads": args.threads, "native_bf16": native_bf16("cpu"),
              "load_before": load_before, "load_after": os.getloadavg(), "rows": rows, "machine": machine_info()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / "step_speed"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    m = result["machine"]
    lines = ["# One step of distillation and of inversion: bf16 or fp32, NCHW or channels-last", "",
             f"Produced by `{result['benchmark_command']}`. " + describe(run),
             f"Batch {args.batch}, {args.threads} threads, median over {args.rounds} rounds (the settings in turns) of "
             f"the median of {args.steps} steps; untrained weights. Machine: {m['cpu']} (flags "
             f"{', '.join(m['cpu_flags'])}; bf16 native: {result['native_bf16']}), {m['cores']} cores; load average "
             f"{load_before[0]:.2f} before, {result['load_after'][0]:.2f} after.", "",
             "Distillation step: teacher forward, student forward, backward and SGD step (the student a copy of the "
             "teacher). Inversion step: teacher forward and backward to the input.", "",
             "| model | step | bf16 NCHW | bf16 channels-last | fp32 NCHW | fp32 channels-last | recipes now | "
             "before | before / now |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for kind in ("distill", "inversion"):
            ms = r["ms"]
            cells = [ms[f"{kind}/{p}/{layout}"] for p in ("bf16", "fp32") for layout in ("nchw", "channels_last")]
            lines.append(f"| {r['model']} | {kind} | " + " | ".join(f"{c} ms" for c in cells)
                         + f" | {r['now'][kind]}: {r['now_ms'][kind]} ms | {r['before'][kind]}: {r['before_ms'][kind]} ms"
                         f" | **{r['before_ms'][kind] / r['now_ms'][kind]:.2f}x** |")
    lines += ["", "`recipes now`: `fast`'s settings as this machine resolves them for the model (`bf16 = \"auto\"`: "
              "bf16 where the CPU has it natively, except a model with depthwise convolutions; distillation and "
              "synthesis channels-last). `before`: bf16 wherever the CPU has it, distillation in NCHW.", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
