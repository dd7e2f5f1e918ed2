"""A dream generator: a small conditional image network trained on the teacher alone.

DeepInversion optimises the pixels of each image. Here a small convolutional network learns to
turn noise and a class label into images whose BatchNorm statistics, seen through the teacher,
match the running statistics stored in it, with fresh noise at every step. Its convolutions
pull towards smooth, natural-looking images (sky, grass, object-like blobs where pixel
optimisation gives high-frequency texture), and once trained it draws any number of new images
for the price of a forward pass: distillation takes a fresh set every epoch, so the student
never sees the same image twice. DAFL, GDFQ and Fast-DFKD train generators too, on GPUs and
for far longer; this one is small enough to train on a CPU in minutes.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from edgefree.config import SynthesisConfig
from edgefree.errors import DivergenceError
from edgefree.machine import bf16_autocast
from edgefree.models import Teacher
from edgefree.recover.inversion import (DreamGenerator, SyntheticSet, balanced_labels, jitter_and_flip, label_fidelity,
                                        teacher_for_inversion)

__all__ = ["DreamGenerator", "train_generator"]


def train_generator(teacher: Teacher, config: SynthesisConfig, seed: int = 0, device: str = "cpu",
                    progress: bool = True) -> SyntheticSet:
    """Train a ``DreamGenerator`` for ``config.iterations`` steps of ``config.batch_size`` fresh images,
    then draw ``config.images`` of them: a ``SyntheticSet`` that carries its generator."""
    spec = teacher.spec
    g = torch.Generator().manual_seed(seed)
    with teacher_for_inversion(teacher, config, device) as (teacher, matcher, num_classes, memory_format):
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator left alone
            torch.manual_seed(seed)
            net = DreamGenerator(spec.shape, num_classes, config.generator_width).to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.999))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.iterations)
        bf16, autocast = bf16_autocast(config.bf16, device)
        curve, started = [], time.perf_counter()
        with tqdm(range(config.iterations), desc="train generator", unit="step", disable=not progress,
                  leave=False) as bar:
            for step in bar:
                y = torch.randint(0, num_classes, (config.batch_size,), generator=g).to(device)
                noise = torch.randn(config.batch_size, net.settings["latent"], generator=g).to(device)
                view = jitter_and_flip(spec.normalize(spec.from_unit(net(noise, y))), config, g)
                with autocast:
                    logits = teacher(view.contiguous(memory_format=memory_format))
                bn = matcher.take(config.first_bn_multiplier)
                loss = config.bn_weight * bn + config.ce_weight * F.cross_entropy(logits.float(), y)
                if not torch.isfinite(loss):
                    raise DivergenceError(f"generator training diverged at step {step} (loss {loss.item()}); "
                                          "lower the synthesis lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                curve.append(bn.item())
                if step % 10 == 0:
                    bar.set_postfix(bn=f"{bn.item():.3g}")
        labels = balanced_labels(config.images, num_classes, g)
        images = net.sample(spec, labels, g)
        fidelity = label_fidelity(teacher, images, labels, matcher, device)
    stats = {"seconds": time.perf_counter() - started, "bn_loss_curves": [curve], "bn_loss_first": curve[0],
             "bn_loss_last": sum(curve[-10:]) / len(curve[-10:]), **fidelity, "bn_weight": config.bn_weight, "bf16": bf16,
             "steps": len(curve), "config": config.to_dict(), "seed": seed}
    return SyntheticSet(images, labels, stats, net.cpu().eval())
