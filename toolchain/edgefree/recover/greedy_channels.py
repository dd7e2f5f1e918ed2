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

_IMAGES = 128  # dreams the consumers' inputs are recorded on, at most ...
_RECORDED = 2 ** 28  # ... and at most this many recorded input values in all (about 1 GB)
_CHUNK = 2 ** 24  # values of per-channel terms computed at once
_BATCH = 32  # recorded inputs per pass


def _consumer(module: nn.Module) -> bool:
    """A layer whose output is a sum of one term per input channel (not depthwise, not grouped)."""
    return isinstance(module, nn.Linear) or (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1)


def _chunks(total: int, per_item: int):
    """Slices of ``range(total)`` of at most ``_CHUNK // per_item`` items (at least one)."""
    step = max(1, _CHUNK // max(per_item, 1))
    return (slice(i, min(i + step, total)) for i in range(0, total, step))


@torch.no_grad()
def _gram(module: nn.Module, x: torch.Tensor, channels: list[int], roots: torch.Tensor, n: int) -> tuple[torch.Tensor, float]:
    """Inner products of the ``n`` root channels' terms in ``module``'s output on inputs ``x`` (input
    ``channels[j]`` belongs to root channel ``roots[j]``: a flattened map gives a root channel many inputs),
    summed over the inputs, and the squared norm of the whole output (bias left out). Computed a chunk of
    output channels at a time."""
    w = module.weight
    gram = torch.zeros(n, n, dtype=torch.float64, device=w.device)
    if isinstance(module, nn.Linear):
        x = x.reshape(-1, x.shape[-1])
        for out in _chunks(w.shape[0], len(x) * len(channels)):
            terms = x[:, channels, None] * w[out][:, channels].T[None]  # (rows, channels, outputs)
            terms = terms.new_zeros(len(x), n, terms.shape[2]).index_add_(1, roots, terms).double()
            gram += torch.einsum("bid,bjd->ij", terms, terms)
        return gram, float((x @ w.T).square().sum())
    options = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation}
    if module.padding_mode != "zeros":  # pad as the layer does, then convolve unpadded
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        options["padding"] = 0
    conv, k = (F.conv1d if w.dim() == 3 else F.conv2d), len(channels)
    for out in _chunks(w.shape[0], len(x) * k * x[0, 0].numel()):
        per_channel = w[out][:, channels].transpose(0, 1).reshape(-1, 1, *w.shape[2:])
        terms = conv(x[:, channels], per_channel, groups=k, **options).reshape(len(x), k, -1)
        terms = terms.new_zeros(len(x), n, terms.shape[2]).index_add_(1, roots, terms).double()
        gram += torch.einsum("bid,bjd->ij", terms, terms)
    return gram, float(conv(x, w, **options).square().sum())


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
    (higher: removed later, more important), from the consumers' inputs recorded on ``images`` (as many
    as ``_RECORDED`` values allow, up to ``_IMAGES``)."""

    def __init__(self, model: nn.Module, graph: tp.DependencyGraph, images: torch.Tensor):
        self.graph, self.inputs = graph, {}
        consumers = [m for m in model.modules() if _consumer(m)]
        hooks = [m.register_forward_pre_hook(lambda m, args: self.inputs.setdefault(m, []).append(args[0].detach()))
                 for m in consumers]
        was_training, device = model.training, next(model.parameters()).device
        try:
            model.eval()
            with torch.no_grad():
                model(images[:1].to(device))
                per_image = sum(xs[0].numel() for xs in self.inputs.values())
                count = max(1, min(_IMAGES, _RECORDED // max(per_image, 1)))
                for batch in images[1:count].split(_BATCH):
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
            module = item.dep.target.module
            if not (self.graph.is_in_channel_pruning_fn(item.dep.handler) and module in self.inputs):
                continue
            roots = torch.as_tensor([int(r) for r in item.root_idxs], device=module.weight.device)
            part, whole = torch.zeros(n, n, dtype=torch.float64, device=module.weight.device), 0.0
            for x in self.inputs[module].split(_BATCH):
                g, energy = _gram(module, x, [int(i) for i in item.idxs], roots, n)
                part, whole = part + g, whole + energy
            gram += part.cpu() / max(whole, 1e-12)
            consumers += 1
        if not consumers:
            names = ", ".join(type(item.dep.target.module).__name__ for item in group)
            raise EdgefreeError(f"channel importance 'greedy' found no layer that consumes this group's channels "
                                f"({names}): use importance 'l2'")
        scores = torch.empty(n)
        scores[_removal_order(gram)] = torch.arange(n, dtype=scores.dtype)
        return scores
