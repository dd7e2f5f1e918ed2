"""The built-in default teacher: a BatchNorm CNN trained on first use on scikit-learn's digits.

It plays the model owner's part: trained once on the training split (which the
recovery pipeline never sees), cached, and deterministic for a given seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgefree.cache import cache_dir
from edgefree.data import digits_split
from edgefree.models import create_model, load_checkpoint

DEMO_ARCH = "digits-cnn"
DEMO_EVAL = "digits"
_EPOCHS = 60


def _train(model: nn.Module, seed: int) -> nn.Module:
    pixels, labels = digits_split("train")
    x = model.input_spec.normalize(torch.from_numpy(pixels).float() / 255.0)
    y = torch.from_numpy(labels).long()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(y) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=_EPOCHS * steps_per_epoch)
    model.train()
    for _ in range(_EPOCHS):
        order = torch.randperm(len(y), generator=g)
        for idx in order.split(64):
            batch = x[idx]
            # one-pixel shifts: cheap augmentation that suits 8x8 strokes
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def default_teacher(seed: int = 0) -> nn.Module:
    """The built-in default teacher, trained on first use (~10 s on 2 cores) and cached.

    Example:
        >>> teacher = default_teacher()
        >>> teacher.arch
        'digits-cnn'
    """
    path = cache_dir("models") / f"{DEMO_ARCH}-seed{seed}.pt"
    model = create_model(DEMO_ARCH)
    if path.exists():
        return load_checkpoint(model, path)
    torch.manual_seed(seed)
    model = _train(create_model(DEMO_ARCH), seed)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # never leave a half-written cache entry
    return model
