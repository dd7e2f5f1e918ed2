"""Baselines the recovery benchmark compares DeepInversion against (not part of edgefree's API).

- ``gaussian_noise_set``: clipped Gaussian noise in place of dreams (does synthesis matter?);
- ``recalibrate_batchnorm``: BatchNorm statistics re-estimated on the dreams, no gradient steps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgefree.recover import SyntheticSet
from edgefree.recover.inversion import balanced_labels


def gaussian_noise_set(spec, n: int, num_classes: int, seed: int = 0) -> SyntheticSet:
    """``n`` images of Gaussian noise in normalized space, clipped to valid pixels, with balanced labels."""
    g = torch.Generator().manual_seed(seed)
    low, high = spec.bounds()
    images = torch.maximum(torch.minimum(torch.randn(n, *spec.shape, generator=g), high), low)
    return SyntheticSet(images, balanced_labels(n, num_classes, g), {"kind": "gaussian-noise"})


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on ``images``."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    model.train()
    for batch in images.split(batch_size):
        model(batch)
    return model.eval()
