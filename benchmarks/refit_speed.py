"""The layer-wise refit of a wide network: which rows are solved exactly, and what that costs.

A row of a magnitude-pruned layer is refit by least squares over the inputs it keeps: exactly
(Cholesky of its own sub-system) or by conjugate gradients shared by all the layer's rows. Times
``reconstruct`` on a torchvision ResNet-18 at 3x224x224 (untrained weights, random images: the cost
does not depend on them) at 75% magnitude sparsity under two rules, taking turns over ``--rounds``:

- ``fixed-512``: rows keeping more than 512 inputs go to conjugate gradients (200 steps at most);
- ``now``: the limit grows with the layer's inputs (``recover.reconstruct._exact_limit``), so the
  3x3 layers over 256 and 512 channels are solved exactly.

It records the seconds of the refit and of its solves, and how far the two refits' weights and
outputs are apart (the exact solve reaches the least-squares optimum; conjugate gradients get close).

    python benchmarks/refit_speed.py

Writes ``results/refit_speed.{json,md}``. Run it alone: two cores shared with another job give noise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from pathlib import Path

from provenance import describe, run_record

HERE = Path(__file__).resolve().parent
RULES = ("fixed-512", "now")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="torchvision:resnet18")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--images", type=int, default=32, help="random images the refit reads")
    parser.add_argument("--sparsity", type=float, default=0.75)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return ["refit_speed.json", "refit_speed.md"] if args.results.resolve() == (HERE / "results").resolve() else []


def _refit(teacher, pruned, dreams, rule: str):
    """``reconstruct`` under ``rule``: its student, its seconds and its solves' seconds."""
    from edgefree.config import ReconstructConfig
    from edgefree.recover import reconstruct

    module = importlib.import_module("edgefree.recover.reconstruct")  # the package's attribute is the function
    limit, solve, solves = module._exact_limit, module._solve, []

    def timed_solve(*args, **kwargs):
        started = time.perf_counter()
        fitted = solve(*args, **kwargs)
        solves.append(time.perf_counter() - started)
        return fitted

    module._solve = timed_solve
    if rule == "fixed-512":
        module._exact_limit = lambda inputs: 512
    try:
        started = time.perf_counter()
        student = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=len(dreams)), progress=False)
        return student, time.perf_counter() - started, sum(solves)
    finally:
        module._solve, module._exact_limit = solve, limit


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    import torch

    from edgefree.config import MagnitudePruning
    from edgefree.machine import machine_info
    from edgefree.models import load_teacher
    from edgefree.recover import prune
    from edgefree.recover.inversion import SyntheticSet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = load_teacher(args.arch, None, input_spec={"shape": (3, args.size, args.size)})
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    dreams = SyntheticSet(images, torch.zeros(args.images, dtype=torch.long))
    pruned = prune(teacher, MagnitudePruning(args.sparsity))
    load_before = os.getloadavg()
    seconds = {rule: [] for rule in RULES}
    solves = {rule: [] for rule in RULES}
    students = {}
    for _ in range(args.rounds):
        for rule in RULES:
            students[rule], total, solved = _refit(teacher, pruned, dreams, rule)
            seconds[rule].append(total)
            solves[rule].append(solved)
            print(f"{rule}: {total:.1f} s, solves {solved:.1f} s", flush=True)
    with torch.no_grad():
        reference = teacher.module(images)
        gaps = {rule: float((students[rule].model(images) - reference).pow(2).mean()) for rule in RULES}
        weights = max(float((a - b).abs().max()) for a, b in zip(students["fixed-512"].model.parameters(),
                                                                  students["now"].model.parameters()))
    module = importlib.import_module("edgefree.recover.reconstruct")
    widest = {name: int(m.weight[0].numel()) for name, m in teacher.module.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    run = run_record(__file__, argv)
    result = {"benchmark_command": run["command"], "run": run, **{k: v for k, v in vars(args).items() if k != "results"},
              "load_before": load_before, "load_after": os.getloadavg(),
              "seconds": {rule: statistics.median(v) for rule, v in seconds.items()},
              "solve_seconds": {rule: statistics.median(v) for rule, v in solves.items()},
              "output_mse": gaps, "max_weight_difference": weights,
              "exact_limits": {inputs: module._exact_limit(inputs) for inputs in sorted(set(widest.values()))},
              "machine": machine_info()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / "refit_speed"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    m = result["machine"]
    s, v = result["seconds"], result["solve_seconds"]
    lines = ["# The layer-wise refit of a wide network: exact solves against conjugate gradients", "",
             f"Produced by `{result['benchmark_command']}`. " + describe(run),
             f"{args.arch} at 3x{args.size}x{args.size}, untrained weights, {args.images} random images, "
             f"{args.sparsity:.0%} magnitude sparsity (global); {args.threads} thread(s), median of {args.rounds} "
             f"round(s), the rules in turns. Machine: {m['cpu']}, {m['cores']} cores; load average "
             f"{load_before[0]:.2f} before, {result['load_after'][0]:.2f} after.", "",
             "| rule | refit s | of it, solves s | output MSE to the teacher |", "|---|---|---|---|"]
    for rule in RULES:
        lines.append(f"| {rule} | {s[rule]:.1f} | {v[rule]:.1f} | {gaps[rule]:.6g} |")
    lines += ["", f"`now` / `fixed-512`: refit **{s['now'] / s['fixed-512']:.2f}x** the seconds, solves "
              f"**{v['now'] / v['fixed-512']:.2f}x**. Largest difference between the two refits' weights: "
              f"{weights:.3g}. Rows solved exactly keep at most (inputs of the layer: limit): "
              + ", ".join(f"{k}: {lim}" for k, lim in result["exact_limits"].items()) + ".", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
