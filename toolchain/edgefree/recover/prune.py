"""Global magnitude pruning over all conv and linear weights, with exact masks."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from edgefree.config import PruneConfig
from edgefree.errors import EdgefreeError

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass
class Pruned:
    """A pruned copy of the teacher and its masks (True = weight kept), keyed by parameter name."""

    model: nn.Module
    masks: dict[str, torch.Tensor]
    stats: dict = field(default_factory=dict)  # what a later stage (reconstruct) did to the weights


def prunable_weights(model: nn.Module, keep_first_last_dense: bool = False) -> dict[str, torch.Tensor]:
    """Weights of every conv and linear layer, in module order, optionally without the first and last."""
    weights = {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
    if keep_first_last_dense and len(weights) > 2:
        names = list(weights)
        weights = {n: weights[n] for n in names[1:-1]}
    return weights


def prune(model: nn.Module, config: PruneConfig = PruneConfig()) -> Pruned:
    """Zero the ``config.sparsity`` fraction of smallest-magnitude weights, ranked globally.

    Exactly ``round(sparsity * n)`` of the ``n`` eligible weights are masked (ties broken
    by position), so the reported sparsity is the requested one. The input model is untouched.

    Example:
        >>> from edgefree.models import create_model
        >>> pruned = prune(create_model("digits-cnn"), PruneConfig(sparsity=0.5))
        >>> round(sparsity_report(pruned.model)["overall"], 2)
        0.5
    """
    student = copy.deepcopy(model).eval()
    weights = prunable_weights(student, config.keep_first_last_dense)
    if not weights:
        raise EdgefreeError("the model has no Conv2d or Linear layers to prune")
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    n_pruned = round(config.sparsity * magnitudes.numel())
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    if n_pruned:
        keep[torch.argsort(magnitudes, stable=True)[:n_pruned]] = False
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = keep[offset:offset + w.numel()].view_as(w).clone()
        offset += w.numel()
    apply_masks(student, masks)
    return Pruned(student, masks)


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights in place (after every optimiser step keeps sparsity exact).

    ``masked_fill`` writes +0.0; multiplying by the mask would leave -0.0 for negative
    weights, whose sign bit a packed artifact would then have to store.
    """
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].masked_fill_(~mask.to(params[name].device), 0.0)


def sparsity_report(model: nn.Module) -> dict:
    """Fraction of zero weights overall and per conv/linear layer."""
    layers, zeros, total = {}, 0, 0
    for name, w in prunable_weights(model).items():
        z = int((w == 0).sum())
        layers[name] = {"params": w.numel(), "sparsity": z / w.numel()}
        zeros, total = zeros + z, total + w.numel()
    return {"overall": zeros / total if total else 0.0, "params": total, "zeros": zeros, "layers": layers}
