"""Block-wise reconstruction: train each block of the refit student to give the teacher's block output.

The layer-wise refit solves every layer alone and linearly; the nonlinearity between two pruned
layers of a block is out of its sight. Here each block (a child of a plain ``nn.Sequential`` that
holds two or more conv or linear layers: a residual block, an inverted residual) is trained by
gradient, in forward order, to reproduce the teacher's output of that block, on the channels the
student keeps, from the *student's* input to it, so each block also absorbs the error of the blocks
before it. Only conv and linear weights move: BatchNorm stays frozen as in distillation, and masks
stay exact. A block whose error over all the images does not fall keeps its refit weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgefree import distributed
from edgefree.recover.student import PRUNABLE, PrunePlan
from edgefree.recover.walk import LayerInputs, call_counts, chained

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of ``model``'s blocks in forward order: children of chained Sequentials (outer ones first)
    holding two or more conv or linear layers. A single layer is already solved exactly by the refit."""
    chosen: list[str] = []
    for _name, _seq, children in chained(model, call_counts(model, example)):
        for _i, name, child in children:
            inside = any(name.startswith(f"{c}.") for c in chosen)
            if not inside and sum(isinstance(m, PRUNABLE) for m in child.modules()) >= 2:
                chosen.append(name)
    return chosen


def kept_outputs(plan: PrunePlan, teacher_block: nn.Module, name: str, size: int, student_size: int) -> list[int] | None:
    """The teacher's output channels of block ``name`` (``size`` of them) that the student's block gives
    (``student_size``): those of the block's last layer or norm of that width. None: all of them."""
    if student_size == size:
        return None
    for sub, module in reversed(list(teacher_block.named_modules(prefix=name))):
        width = module.weight.shape[0] if isinstance(module, PRUNABLE + NORMS) and module.weight is not None else None
        if width == size:
            kept = plan.kept(sub, size)
            if len(kept) == student_size:
                return kept
    raise ValueError(f"block {name}: no layer says which {student_size} of its {size} output channels the student keeps")


def _error(block: nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor], scale: float) -> float:
    with torch.no_grad():
        total = sum(F.mse_loss(block(x), y, reduction="sum").item() for x, y in zip(inputs, targets))
        count = sum(y.numel() for y in targets)
    return distributed.sum_over_ranks(total) / distributed.sum_over_ranks(count) / scale


def _train(block: nn.Module, inputs: list[torch.Tensor], targets: list[torch.Tensor], masks: dict[str, torch.Tensor],
           steps: int, lr: float, seed: int) -> tuple[float, float]:
    """Adam on the block's conv and linear weights, a cosine from ``lr``; returns the error before and after
    (mean squared error over the teacher's mean square), the weights put back if it did not fall."""
    params = {n: p for n, p in block.named_parameters() if isinstance(block.get_submodule(n.rpartition(".")[0]), PRUNABLE)}
    scale = distributed.sum_over_ranks(sum(y.pow(2).sum().item() for y in targets))
    scale = max(scale / distributed.sum_over_ranks(sum(y.numel() for y in targets)), 1e-12)
    before = _error(block, inputs, targets, scale)
    saved = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    g = torch.Generator().manual_seed(seed)  # every rank picks the same batch index: steps stay in lockstep
    size = distributed.world().size
    with torch.enable_grad():
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            i = int(torch.randint(len(inputs), (1,), generator=g))
            loss = F.mse_loss(block(inputs[i]), targets[i]) / scale
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            if size > 1:
                grads = [p.grad for p in params.values()]
                distributed.all_reduce_sum(*grads)
                for grad in grads:
                    grad /= size
            optimizer.step()
            with torch.no_grad():
                for n, mask in masks.items():
                    params[n].mul_(mask)
    after = _error(block, inputs, targets, scale)
    if not after < before:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
        after = before
    return before, after


@torch.no_grad()
def refine_blocks(teacher: nn.Module, student: nn.Module, plan: PrunePlan, batches: list[torch.Tensor], steps: int,
                  lr: float, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Train every block of ``student`` (in place, eval mode) to reproduce ``teacher``'s, in forward order.

    ``batches``: the images (this rank's). Returns each block's error before and after, relative to
    the teacher's mean square output there (a block left as it was has the two equal).
    """
    example = batches[0][:2]
    modules_t, modules_s = dict(teacher.named_modules()), dict(student.named_modules())
    teacher_inputs, student_inputs = LayerInputs(teacher, batches), LayerInputs(student, batches)
    errors = {}
    for index, name in enumerate(blocks(student, example)):
        if name not in modules_t:
            continue
        inputs_t, inputs_s = teacher_inputs(name), student_inputs(name)
        if inputs_t is None or inputs_s is None:
            continue
        block_t, block_s = modules_t[name], modules_s[name]
        targets = [block_t(x) for x in inputs_t]
        size, student_size = targets[0].shape[1], block_s(inputs_s[0][:1]).shape[1]
        kept = kept_outputs(plan, block_t, name, size, student_size)
        if kept is not None:
            targets = [y[:, kept] for y in targets]
        masks = {n[len(name) + 1:]: m.to(targets[0].device) for n, m in plan.masks.items() if n.startswith(f"{name}.")}
        errors[name] = _train(block_s, inputs_s, targets, masks, steps, lr, seed + index)
    return errors
