"""What a model costs to run: multiply-adds and parameters, counted by ``torch.utils.flop_counter``."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one forward pass on ``example`` (a batch of 1), as PyTorch's FLOP counter sees them.

    The counter counts a multiply-add as 2 FLOPs (convolutions, matrix products); BatchNorm, ReLU and
    additions are not counted, as is usual for MACs.

    Example:
        >>> from edgefree.models import load_teacher
        >>> teacher = load_teacher("resnet20-cifar")
        >>> 40_000_000 < count_macs(teacher.module, *teacher.spec.example_inputs()) < 42_000_000
        True
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(example[:1])
    model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    """Parameters (weights and biases; BatchNorm's running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def cost(model: nn.Module, example: torch.Tensor) -> dict:
    """``{"macs": ..., "params": ...}`` of ``model`` at batch 1."""
    return {"macs": count_macs(model, example), "params": count_params(model)}
