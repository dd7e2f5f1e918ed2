"""Gradual channel pruning: the target reached in steps, the kept weights refit after each.

One-shot pruning ranks every channel once, on the teacher's weights, and the refit afterwards can
only repair what that ranking left. With ``ChannelPruning.steps`` = K, the one-shot search first
fixes the student's architecture (the blocks removed and every layer's width, so the MACs are the
one-shot student's). The widths then shrink in K equal steps from the teacher's to those, each step
ranking channels on the weights that the layer-wise least-squares refit
(``edgefree.recover.reconstruct``) gave after the step before: iterative pruning, with the cheap
refit in place of retraining between steps. Residual blocks go in the first step. The last step's
refit is the pipeline's own reconstruct stage, so K steps cost K - 1 extra refits.
"""

from __future__ import annotations

import time
from typing import Sequence

from edgefree.config import ChannelPruning, MagnitudePruning, ReconstructConfig
from edgefree.cost import cost
from edgefree.models import Teacher
from edgefree.recover.channels import prune_channels
from edgefree.recover.prune import apply_masks, magnitude_masks, output_widths, prune
from edgefree.recover.reconstruct import reconstruct
from edgefree.recover.student import PrunePlan, Student


def _cost(model, example) -> dict:
    """``cost`` with the example on the model's device (the teacher may sit on the GPU after synthesis)."""
    return cost(model, example.to(next(model.parameters()).device))


def _between(start: int, end: int, share: float, round_to: int) -> int:
    """A width ``share`` of the way from ``start`` channels to ``end``, a multiple of ``round_to`` where it may be."""
    if start == end:
        return end
    width = start - (start - end) * share
    return min(start, max(end, round(width / round_to) * round_to))


def prune_gradually(teacher: Teacher, config: ChannelPruning | MagnitudePruning | Sequence, dreams,
                    refit: ReconstructConfig, device: str = "cpu", progress: bool = False) -> Student:
    """``prune(teacher, config, dreams)``, with a ``ChannelPruning`` of ``steps`` > 1 reached in steps, the
    kept weights refit by ``refit`` on ``dreams`` between them (the module docstring says how). The
    student's plan lists every step's operations in order, so it replays on the teacher's architecture
    like a one-shot plan; a magnitude stage after it prunes the final student.
    """
    stages = list(config) if isinstance(config, (list, tuple)) else [config]
    channel = stages[0] if stages and isinstance(stages[0], ChannelPruning) else None
    if channel is None or channel.steps == 1:
        return prune(teacher, stages, dreams, progress)
    started = time.perf_counter()
    one_shot = prune(teacher, channel.replace(steps=1), dreams, progress)
    blocks, start, end = one_shot.plan.removed_blocks, output_widths(teacher.module), output_widths(one_shot.model)
    example = teacher.spec.example_inputs(2)[0]
    whole = _cost(teacher.module, example)["macs"]
    model, plan, steps = teacher.module, PrunePlan(removed_blocks=list(blocks)), []
    for k in range(1, channel.steps + 1):
        if k > 1:  # refit the last step's student before ranking its channels again
            model = reconstruct(teacher, Student(model, plan, {}, teacher.spec), dreams, refit.replace(block_steps=0),
                                device=device, progress=False).model.cpu()  # layer-wise only: blocks at the end
        widths = {name: _between(start[name], end[name], k / channel.steps, channel.round_to) for name in end}
        layout = {"blocks": list(blocks) if k == 1 else [], "widths": widths}
        step = prune_channels(model, teacher.spec, channel.replace(steps=1), dreams, progress, layout)
        model, plan = step.model, PrunePlan(channels=plan.channels + step.plan.channels, removed_blocks=plan.removed_blocks)
        steps.append({"macs_kept": _cost(model, example)["macs"] / whole})
    for stage in stages[1:]:  # magnitude, on the final student
        plan.masks = magnitude_masks(model, stage)
        apply_masks(model, plan.masks)
    stats = {**one_shot.stats, **_cost(model, example), "seconds": time.perf_counter() - started,
             "macs_kept": steps[-1]["macs_kept"], "steps": steps}
    return Student(model, plan, stats, teacher.spec)
