"""``prune(teacher, config)``: the config type picks the pruning, and the result is a ``Student``.

* ``MagnitudePruning``: magnitude pruning of conv and linear weights (ranked globally or per layer), exact masks.
  Storage shrinks; dense runtimes still compute every zero.
* ``ChannelPruning``: whole channels and residual blocks go (``edgefree.recover.channels``), so
  the student is smaller *and* faster on every runtime.
* Both, channel first: ``prune(teacher, [ChannelPruning(...), MagnitudePruning(...)])``.

Every later stage reads the student's ``plan`` (what was removed) instead of assuming the
student has the teacher's shapes.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from edgefree.config import ChannelPruning, MagnitudePruning
from edgefree.errors import EdgefreeError, warn
from edgefree.models import Teacher
from edgefree.recover.channels import prune_channels
from edgefree.recover.checks import stage_inputs
from edgefree.recover.student import PRUNABLE, PrunePlan, Student

__all__ = ["PRUNABLE", "PrunePlan", "Student", "prune", "with_magnitude", "apply_masks", "magnitude_masks",
           "prunable_weights", "sparsity_report", "narrowed_widths"]

def prunable_weights(model: nn.Module, keep_first_last_dense: bool = False, filter_fn=None) -> dict[str, torch.Tensor]:
    """Weights of every conv and linear layer, in module order, optionally without the first and last,
    and without the layers ``filter_fn(module, name)`` returns False for."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if keep_first_last_dense and len(layers) > 2:
        layers = layers[1:-1]
    return {f"{name}.weight": m.weight for name, m in layers if filter_fn is None or filter_fn(m, name)}


def prune(teacher: Teacher, config: MagnitudePruning | ChannelPruning | Sequence = MagnitudePruning(),
          dreams=None, progress: bool = False, layout: dict | None = None) -> Student:
    """Prune a copy of the teacher's module as ``config`` says (a sequence: each in turn); the input is untouched.

    ``dreams`` (a SyntheticSet) is needed by the criteria measured on synthetic images: channel
    importance "taylor" and "greedy", and the choice of residual blocks to remove (``depth``). A
    ``ChannelPruning`` of ``steps`` > 1 is ``edgefree.recover.gradual.prune_gradually``'s (it refits between steps). ``layout`` gives
    channel pruning per-layer widths and the blocks removed, chosen elsewhere (``edgefree.latency_budget``):
    ``{"blocks": [...], "widths": {layer name: channels kept}}``.

    Example:
        >>> from edgefree.models import load_teacher
        >>> student = prune(load_teacher("digits-cnn"), MagnitudePruning(sparsity=0.5))
        >>> round(sparsity_report(student.model)["overall"], 2)
        0.5
    """
    stage_inputs(teacher, dreams, dreams_optional=True)
    configs = list(config) if isinstance(config, (list, tuple)) else [config]
    student = Student(copy.deepcopy(teacher.module).eval(), PrunePlan(), spec=teacher.spec)
    for i, step in enumerate(configs):
        if isinstance(step, ChannelPruning):
            if i:
                raise EdgefreeError("channel pruning comes first: prune(teacher, [ChannelPruning(...), "
                                    "MagnitudePruning(...)]), so the masks are made on the smaller model")
            if step.steps > 1 and layout is None:
                raise EdgefreeError(f"ChannelPruning(steps={step.steps}) refits the kept weights between its steps, "
                                    "which prune() does not: call edgefree.recover.gradual.prune_gradually(teacher, "
                                    "config, dreams, ReconstructConfig()), or leave steps at 1 for one shot")
            student = prune_channels(teacher.module, teacher.spec, step, dreams, progress, layout)
        elif isinstance(step, MagnitudePruning):
            if any(isinstance(c, MagnitudePruning) for c in configs[:i]):
                raise EdgefreeError("magnitude pruning comes once: pass one MagnitudePruning with the sparsity "
                                    "the student should have")
            _mask(student, step)
        else:
            raise EdgefreeError(f"unknown pruning config {type(step).__name__}: use MagnitudePruning or ChannelPruning")
    return student


def with_magnitude(student: Student, config: MagnitudePruning) -> Student:
    """A copy of ``student`` (its channels already chosen) with ``config``'s magnitude stage on it, as ``prune``
    applies one after a channel stage: for channels chosen once and kept (a latency target's widths)."""
    return _mask(student.with_model(copy.deepcopy(student.model), dict(student.stats)), config)


def _mask(student: Student, config: MagnitudePruning) -> Student:
    """``student`` itself with ``config``'s masks made on its model and applied."""
    student.plan.masks = magnitude_masks(student.model, config)
    apply_masks(student.model, student.plan.masks)
    return student


def magnitude_masks(model: nn.Module, config: MagnitudePruning) -> dict[str, torch.Tensor]:
    """Masks keeping all but the ``round(sparsity * n)`` smallest of the ``n`` eligible weights (ties by
    position), ranked over all layers together (``scope="global"``) or within each layer (``"layer"``)."""
    weights = prunable_weights(model, config.keep_first_last_dense, config.filter_fn)
    if not weights:
        raise EdgefreeError("the model has no Conv1d, Conv2d or Linear layers to prune")
    groups = [weights] if config.scope == "global" else [{name: w} for name, w in weights.items()]
    masks = {}
    for group in groups:
        magnitudes = torch.cat([w.detach().abs().flatten() for w in group.values()])
        n_pruned = round(config.sparsity * magnitudes.numel())
        keep = torch.ones_like(magnitudes, dtype=torch.bool)
        if n_pruned:
            keep[torch.argsort(magnitudes, stable=True)[:n_pruned]] = False
        offset = 0
        for name, w in group.items():
            masks[name] = keep[offset:offset + w.numel()].view_as(w).clone()
            offset += w.numel()
    emptied = [name.removesuffix(".weight") for name, m in masks.items() if not m.any()]
    if emptied:
        warn(f"magnitude pruning zeroed every weight of {', '.join(emptied)} (their weights are the smallest when "
             "ranked globally): the student cannot recover from that; prune each layer by the same fraction "
             "(--magnitude-scope layer), or leave the first and last dense (--keep-first-last-dense; filter_fn in "
             "Python for others)")
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights in place (after every optimiser step keeps sparsity exact).

    ``masked_fill`` writes +0.0; multiplying by the mask would leave -0.0 for negative
    weights, whose sign bit a packed artifact would then have to store.
    """
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].masked_fill_(~mask.to(params[name].device), 0.0)


def output_widths(model: nn.Module) -> dict[str, int]:
    """The output channels (or features) of every conv and linear layer of ``model``."""
    return {name: m.weight.shape[0] for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def narrowed_widths(teacher: nn.Module, student: nn.Module) -> dict[str, list[int]]:
    """``{layer: [teacher's output channels, student's]}`` for every conv and linear layer that channel pruning
    narrowed (a layer of a removed block is absent from the student, and left out here)."""
    kept = output_widths(student)
    return {name: [width, kept[name]] for name, width in output_widths(teacher).items() if kept.get(name, width) != width}


def sparsity_report(model: nn.Module) -> dict:
    """Fraction of zero weights overall and per conv/linear layer."""
    layers, zeros, total = {}, 0, 0
    for name, w in prunable_weights(model).items():
        z = int((w == 0).sum())
        layers[name] = {"params": w.numel(), "sparsity": z / w.numel()}
        zeros, total = zeros + z, total + w.numel()
    return {"overall": zeros / total if total else 0.0, "params": total, "zeros": zeros, "layers": layers}
