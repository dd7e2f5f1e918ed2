"""A dream generator: a small conditional network trained on the teacher alone.

DeepInversion optimises the pixels of each image. Here a small convolutional network learns to
turn noise and a class label into images (or, for a 1-D model, signals) whose BatchNorm
statistics, seen through the teacher, match the running statistics stored in it, with fresh
noise at every step. Its convolutions pull towards smooth, natural-looking images (sky, grass,
object-like blobs where pixel optimisation gives high-frequency texture), and once trained it
draws any number of new ones for the price of a forward pass: distillation takes a fresh set
every epoch, so the student never sees the same dream twice. DAFL, GDFQ and Fast-DFKD train
generators too, on GPUs and for far longer; this one is small enough to train on a CPU in minutes.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgefree.config import SynthesisConfig
from edgefree.errors import DivergenceError, EdgefreeError
from edgefree.machine import bf16_autocast
from edgefree.models import Teacher
from edgefree.recover.inversion import (DreamGenerator, SyntheticSet, balanced_labels, label_fidelity, random_view,
                                        teacher_for_inversion)
from edgefree.recover.losses import kl_divergence

__all__ = ["DreamGenerator", "GeneratorAdversary", "train_generator"]


def _autocasts(config: SynthesisConfig, teacher: nn.Module, device: str):
    """``((generator bf16, its autocast), (teacher bf16, its autocast))``: the generator (no depthwise
    convolutions) in bf16 wherever the hardware has it, the teacher as ``machine.resolve_bf16`` says for it."""
    return bf16_autocast(config.bf16, device), bf16_autocast(config.bf16, device, teacher)


def _generator_step(teacher: nn.Module, matcher, net: DreamGenerator, spec, config: SynthesisConfig, num_classes: int,
                    memory_format, autocasts, g: torch.Generator, device: str):
    """One batch of fresh images through the teacher: (the images' view, the teacher's logits, the
    BatchNorm-statistics loss, the generator's loss without any adversarial term). ``autocasts``: the
    generator's context and the teacher's."""
    y = torch.randint(0, num_classes, (config.batch_size,), generator=g).to(device)
    noise = torch.randn(config.batch_size, net.settings["latent"], generator=g).to(device)
    with autocasts[0]:
        pixels = net(noise, y)
    view = random_view(spec.normalize(spec.from_unit(pixels.float())), config, g)
    with autocasts[1]:
        logits = teacher(view.contiguous(memory_format=memory_format))
    bn = matcher.take(config.first_bn_multiplier)
    return view, logits, bn, config.bn_weight * bn + config.ce_weight * F.cross_entropy(logits.float(), y)


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
        (generator_bf16, autocast), (bf16, teacher_autocast) = _autocasts(config, teacher, device)
        curve, started = [], time.perf_counter()
        with tqdm(range(config.iterations), desc="train generator", unit="step", disable=not progress,
                  leave=False) as bar:
            for step in bar:
                _, _, bn, loss = _generator_step(teacher, matcher, net, spec, config, num_classes, memory_format,
                                                 (autocast, teacher_autocast), g, device)
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
        images = net.sample(spec, labels, g, autocast=autocast)
        fidelity = label_fidelity(teacher, images, labels, matcher, device)
    stats = {"seconds": time.perf_counter() - started, "bn_loss_curves": [curve], "bn_loss_first": curve[0],
             "bn_loss_last": sum(curve[-10:]) / len(curve[-10:]), **fidelity, "bn_weight": config.bn_weight, "bf16": bf16,
             "generator_bf16": generator_bf16, "steps": len(curve), "config": config.to_dict(), "seed": seed}
    return SyntheticSet(images, labels, stats, net.cpu().eval())


class GeneratorAdversary:
    """A copy of a set's dream generator that keeps training between distillation epochs towards images
    the student gets wrong (the adversarial refresh of DFAD and Fast-DFKD): its loss is the BatchNorm-
    statistics and class loss it was trained on, minus ``weight`` times the student's KL divergence from
    the teacher, so each epoch's new dreams stay teacher-like and move to where the student disagrees.

    The set's generator is left as it was (a cached set is reused by other builds); ``sample`` draws
    from the copy."""

    def __init__(self, teacher: Teacher, synthetic: SyntheticSet, steps: int, weight: float, device: str = "cpu"):
        if synthetic.generator is None:
            raise EdgefreeError("adversarial generator steps need a set drawn by a generator (synthesis method "
                                "'generator'); this one was dreamed image by image: set adversarial_steps to 0")
        # the settings it was trained with (a weight chosen by probes is recorded there as a number)
        self.config = SynthesisConfig.from_dict(synthetic.stats["config"], "the set's synthesis config")
        self.teacher, self.steps, self.weight, self.device = teacher, steps, weight, device
        self.net = copy.deepcopy(synthetic.generator).to(device)
        (_, self.autocast), (_, self.teacher_autocast) = _autocasts(self.config, teacher.module, device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr, betas=(0.5, 0.999))
        self.history: list[dict] = []

    def step(self, student: nn.Module, g: torch.Generator) -> dict:
        """Train the copy ``steps`` steps against ``student`` (in eval mode meanwhile; every module's mode,
        and the teacher, restored after). Returns the mean BatchNorm loss and student-teacher KL of the steps."""
        modes = {m: m.training for m in student.modules()}
        student.eval()
        self.net.train()
        params = list(self.net.parameters())
        bn_total = kl_total = 0.0
        try:
            with teacher_for_inversion(self.teacher, self.config, self.device) as (teacher, matcher, num_classes,
                                                                                 memory_format):
                for _ in range(self.steps):
                    view, logits, bn, loss = _generator_step(teacher, matcher, self.net, self.teacher.spec, self.config,
                                                             num_classes, memory_format,
                                                             (self.autocast, self.teacher_autocast), g, self.device)
                    with self.teacher_autocast:  # the student has the teacher's kinds of layers
                        student_logits = student(view)
                    kl = kl_divergence(student_logits.float(), logits.float())
                    loss = loss - self.weight * kl
                    if not torch.isfinite(loss):
                        raise DivergenceError(f"the adversarial generator diverged (loss {loss.item()}); lower "
                                              "distill adversarial_weight or the synthesis lr")
                    for p, grad in zip(params, torch.autograd.grad(loss, params)):  # the student's weights: no grads
                        p.grad = grad
                    self.opt.step()
                    bn_total, kl_total = bn_total + bn.item(), kl_total + kl.item()
        finally:
            for m, mode in modes.items():
                m.training = mode
        self.history.append({"bn": bn_total / self.steps, "kl": kl_total / self.steps})
        return self.history[-1]

    def sample(self, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.net.sample(self.teacher.spec, labels, g, autocast=self.autocast)
