"""Channel importance "greedy": ThiNet's criterion, measured on the dreams.

A channel matters by what it feeds: the outputs of the layers that consume it (the next
convolution, a classifier, every layer on a residual stream). Each consumer's output is a sum of
one term per input channel, so removing a set of channels changes it by the sum of their terms.
The criterion removes channels one at a time, each time the channel whose removal, together with
those already removed, changes the consumers' outputs on the dreams least (ThiNet, Luo et al.
2017, greedy selection; terms that cancel are removed together). The order of removal is the
ranking: the first removed is the least important. The layer-wise refit then solves for the kept
weights, which is ThiNet's second step.

Each consumer counts by its change relative to its whole output, so a layer with large
activations does not outweigh the others on a residual stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from edgefree.errors import EdgefreeError

_IMAGES = 128  # dreams the consumers' inputs are recorded on
_BATCH = 32  # of them per pass through the per-channel terms
_CONV = {1: F.conv1d, 2: F.conv2d}


def _consumer(module: nn.Module) -> bool:
    """A layer whose output is a sum of one term per input channel (not depthwise, not grouped)."""
    return isinstance(module, nn.Linear) or (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1)


@torch.no_grad()
def _terms(module: nn.Module, x: torch.Tensor, channels: list[int]) -> tuple[torch.Tensor, float]:
    """Each of ``channels``' term in ``module``'s output on inputs ``x``, flattened per input
    (``(N, len(channels), D)``), and the squared norm of the whole output (bias left out)."""
    w = module.weight
    if isinstance(module, nn.Linear):
        x = x.reshape(-1, x.shape[-1])
        return x[:, channels, None] * w[:, channels].T[None], float((x @ w.T).square().sum())
    conv, n = _CONV[w.dim() - 2], len(channels)
    options = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation}
    whole = conv(x, w, **options)
    per_channel = w[:, channels].transpose(0, 1).reshape(n * w.shape[0], 1, *w.shape[2:])
    terms = conv(x[:, channels], per_channel, groups=n, **options)
    return terms.reshape(len(x), n, -1), float(whole.square().sum())


def _removal_order(gram: torch.Tensor) -> list[int]:
    """Channels in the greedy order: each next the one that adds least to the squared norm of the sum of
    the removed channels' terms (``gram``: their inner products)."""
    n = len(gram)
    shared, taken, order = torch.zeros(n, dtype=gram.dtype), torch.zeros(n, dtype=torch.bool), []
    for _ in range(n):
        cost = (2 * shared + gram.diagonal()).masked_fill(taken, float("inf"))
        c = int(cost.argmin())
        order.append(c)
        taken[c] = True
        shared += gram[:, c]
    return order


class GreedyImportance:
    """Torch-Pruning importance: a group's channels scored by their place in the greedy removal order
    (higher: removed later, more important), from the consumers' inputs recorded on ``images``."""

    def __init__(self, model: nn.Module, graph: tp.DependencyGraph, images: torch.Tensor):
        self.graph, self.inputs = graph, {}
        hooks = [m.register_forward_pre_hook(lambda m, args: self.inputs.setdefault(m, []).append(args[0].detach()))
                 for m in model.modules() if _consumer(m)]
        was_training, device = model.training, next(model.parameters()).device
        try:
            model.eval()
            with torch.no_grad():
                for batch in images[:_IMAGES].split(_BATCH):
                    model(batch.to(device))
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        self.inputs = {m: torch.cat(xs) for m, xs in self.inputs.items()}

    def __call__(self, group) -> torch.Tensor:
        n = len(group[0].idxs)
        gram = torch.zeros(n, n, dtype=torch.float64)
        consumers = 0
        for item in group:
            module, channels = item.dep.target.module, [int(i) for i in item.idxs]
            if not (self.graph.is_in_channel_pruning_fn(item.dep.handler) and module in self.inputs
                    and len(channels) == n):
                continue
            part, whole = torch.zeros_like(gram), 0.0
            for x in self.inputs[module].split(_BATCH):
                terms, energy = _terms(module, x, channels)
                terms = terms.double()
                part += torch.einsum("bid,bjd->ij", terms, terms).cpu()
                whole += energy
            gram += part / max(whole, 1e-12)
            consumers += 1
        if not consumers:
            names = ", ".join(type(item.dep.target.module).__name__ for item in group)
            raise EdgefreeError(f"channel importance 'greedy' found no layer that consumes this group's channels "
                                f"({names}): use importance 'l2'")
        scores = torch.empty(n)
        scores[_removal_order(gram)] = torch.arange(n, dtype=scores.dtype)
        return scores
