"""Knowledge distillation teacher -> pruned student on synthetic images only.

The student's BatchNorm layers stay frozen (running statistics untouched: they still
describe the real data the teacher saw; their scale and shift too, unless
``DistillConfig.bn_affine``) and the pruning masks are re-applied after every step,
so the final sparsity is exact. With ``DistillConfig.ema`` the student returned is
the moving average of its weights over the steps.

Besides the logits, the student can also match the teacher's feature maps: the
pruned student is a copy of the teacher, so every BatchNorm output has a twin of
the same shape, and each synthetic image then teaches far more than 10 numbers.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgefree import distributed
from edgefree.config import DistillConfig
from edgefree.errors import DivergenceError, EdgefreeError
from edgefree.machine import bf16_autocast
from edgefree.models import Teacher
from edgefree.recover.generator import GeneratorAdversary
from edgefree.recover.inversion import held_in, layout_for
from edgefree.recover.losses import kl_divergence
from edgefree.recover.checks import stage_inputs
from edgefree.recover.prune import apply_masks
from edgefree.recover.student import Student
from edgefree.recover.synthesize import SyntheticSet

_BN = nn.modules.batchnorm._BatchNorm


def freeze_batchnorm(model: nn.Module, affine: bool = False) -> nn.Module:
    """Put every BatchNorm in eval mode (its running statistics stay as they are) and stop gradients to its
    affine parameters, unless ``affine``: then its scale and shift stay trainable."""
    for m in model.modules():
        if isinstance(m, _BN):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(affine)
    return model


def _parameter_groups(model: nn.Module, params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """``params`` (``model``'s trainable ones) in groups: BatchNorm's scale and shift without weight decay
    (decay would pull a channel's scale towards zero, which its frozen statistics do not follow)."""
    bn = {id(p) for m in model.modules() if isinstance(m, _BN) for p in m.parameters()}
    groups = [{"params": [p for p in params if id(p) not in bn], "weight_decay": weight_decay},
              {"params": [p for p in params if id(p) in bn], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


class _Average:
    """An exponential moving average of a model's trainable parameters, copied into it by ``load``. Its decay
    at update ``t`` is at most ``(1 + t) / (10 + t)``, so the starting weights do not linger in a short run."""

    def __init__(self, params: list[torch.Tensor], decay: float):
        self.params, self.decay, self.updates = params, decay, 0
        self.average = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def load(self) -> None:
        for p, a in zip(self.params, self.average):
            p.copy_(a)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop (reflect-padded by 1/8 of the last side) per batch; images are also mirrored at random,
    signals (N x C x L) only shifted in time: reversed, they are not what the sensor records."""
    sizes = x.shape[2:]
    pad = max(1, sizes[-1] // 8)
    padded = F.pad(x, (pad, pad) * len(sizes), mode="reflect")
    starts = torch.randint(0, 2 * pad + 1, (len(sizes),), generator=g).tolist()
    x = padded[(..., *(slice(start, start + size) for start, size in zip(starts, sizes)))]
    return x.flip(-1) if len(sizes) == 2 and torch.rand(1, generator=g).item() < 0.5 else x


def _mix(x: torch.Tensor, alpha: float, g: torch.Generator) -> torch.Tensor:
    """Mixup of each input with a random partner: new inputs for free, labelled by the teacher."""
    seed = int(torch.randint(2**62, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):  # Beta takes no generator: drawn from g's seed, the global one untouched
        torch.default_generator.manual_seed(seed)  # the CPU's alone (torch.manual_seed would seed every GPU's too)
        lam = torch.distributions.Beta(alpha, alpha).sample((len(x), *[1] * (x.dim() - 1))).to(x.device, x.dtype)
    return lam * x + (1 - lam) * x[torch.randperm(len(x), generator=g)]


class _BatchNormOutputs:
    """Collects the outputs of the named BatchNorm layers of a model in one forward pass (the features to match)."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.outputs: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [modules[name].register_forward_hook(self._keep(name)) for name in names]

    def _keep(self, name: str):
        def hook(_module, _inputs, output):
            self.outputs[name] = output
        return hook

    def take(self) -> dict[str, torch.Tensor]:
        outputs, self.outputs = self.outputs, {}
        return outputs

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def feature_pairs(teacher: nn.Module, student: Student) -> dict[str, list[int] | None]:
    """The BatchNorm layers whose outputs the student can match, each with the teacher's channels it kept
    (None: all). Layers of removed blocks have no twin and are left out."""
    teacher_bns = {name: m for name, m in teacher.named_modules() if isinstance(m, _BN)}
    pairs = {}
    for name, m in student.model.named_modules():
        if isinstance(m, _BN) and name in teacher_bns:
            size = teacher_bns[name].num_features
            pairs[name] = None if m.num_features == size else student.plan.kept(name, size)
    return pairs


def feature_loss(student_features: dict[str, torch.Tensor], teacher_features: dict[str, torch.Tensor],
                 pairs: dict[str, list[int] | None]) -> torch.Tensor:
    """Mean over paired layers of the mean squared difference of their feature maps (on the kept channels)."""
    total = 0.0
    for name, kept in pairs.items():
        t = teacher_features[name] if kept is None else teacher_features[name][:, kept]
        total = total + F.mse_loss(student_features[name].float(), t.float())
    return total / len(pairs)


def _schedule(opt: torch.optim.Optimizer, steps: int, warmup: int):
    """Cosine decay over ``steps``; its first ``warmup`` steps instead rise linearly from ~0 to the full rate
    (large first steps can throw a refit student, which starts close to the teacher, far from it)."""
    if warmup <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rise = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps - warmup))
    return torch.optim.lr_scheduler.SequentialLR(opt, [rise, decay], milestones=[warmup])


def distill(teacher: Teacher, pruned: Student, synthetic: SyntheticSet,
            config: DistillConfig = DistillConfig(), seed: int = 0, device: str = "cpu",
            progress: bool = True) -> Student:
    """Train a copy of the pruned student to match the teacher on ``synthetic`` images (a set that
    carries its generator gives new images every epoch after the first; with ``config.adversarial_steps``
    a copy of that generator first trains against the student, ``GeneratorAdversary``).

    Returns a ``Student`` (the student in eval mode, with ``config.ema`` the average of its weights; its
    masks; and ``stats``: seconds, loss per epoch, whether bf16 ran, each adversarial refresh's BN loss and
    KL); the input is untouched.
    Raises ``DivergenceError`` if the loss becomes NaN or infinite, or the student's logits end far beyond the
    teacher's (weights that ran away under too high a rate).

    Example:
        >>> from edgefree.demo import default_teacher
        >>> from edgefree.config import MagnitudePruning, SynthesisConfig
        >>> from edgefree.recover import prune, synthesize
        >>> teacher = default_teacher()
        >>> dreams = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=5), progress=False)
        >>> student = distill(teacher, prune(teacher), dreams, DistillConfig(epochs=1), progress=False).model
    """
    stage_inputs(teacher, synthetic, pruned, config, DistillConfig)
    g = torch.Generator().manual_seed(distributed.rank_seed(seed))
    teacher_source, spec, teacher = teacher, teacher.spec, teacher.module.eval().to(device)
    memory_format = layout_for(config.channels_last, spec.rank)
    student = copy.deepcopy(pruned.model).to(device, memory_format=memory_format)
    student.train()
    freeze_batchnorm(student, affine=config.bn_affine)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.SGD(_parameter_groups(student, params, config.weight_decay), lr=config.lr, momentum=config.momentum,
                          nesterov=True)
    average = _Average(params, config.ema) if config.ema else None
    batches = distributed.EpochBatches(len(synthetic), config.batch_size, g, seed)  # this rank's share
    steps_per_epoch = len(batches)
    sched = _schedule(opt, config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch))
    bf16, autocast = bf16_autocast(config.bf16, device, teacher)
    draw_autocast = bf16_autocast(config.bf16, device)[1]  # a set's generator: no depthwise convolutions
    if config.feature_weight and not any(isinstance(m, _BN) for m in teacher.modules()):
        raise EdgefreeError("distillation feature_weight matches BatchNorm outputs, and this teacher has no "
                            "BatchNorm layers: set feature_weight to 0")
    adversary = None
    if config.adversarial_steps:  # a generator's set whose generator keeps training against the student
        adversary = GeneratorAdversary(teacher_source, synthetic, config.adversarial_steps, config.adversarial_weight,
                                       device)
    pairs = feature_pairs(teacher, pruned) if config.feature_weight else {}
    features = (_BatchNormOutputs(student, list(pairs)), _BatchNormOutputs(teacher, list(pairs))) if pairs else None
    history, started, trained = [], time.perf_counter(), distributed.data_parallel(student)  # DDP on several ranks
    bar = tqdm(range(config.epochs), desc="distill", unit="epoch", disable=not progress, leave=False)
    try:
        with held_in(teacher, memory_format):  # and back in its own layout after
            for epoch in bar:
                total = 0.0
                images = synthetic.images
                if adversary is not None and epoch:  # new images where the student disagrees
                    adversary.step(student, g)
                    images = adversary.sample(synthetic.labels, g)
                elif synthetic.generator is not None and epoch:  # a generator's set: new images every epoch
                    images = synthetic.generator.to(device).sample(spec, synthetic.labels, g, autocast=draw_autocast)
                for idx in batches.epoch(epoch):
                    x = images[idx].to(device)
                    if config.augment:
                        x = _augment(x, g)
                    if config.mixup:
                        x = _mix(x, config.mixup, g)
                    x = x.contiguous(memory_format=memory_format)
                    with autocast:
                        with torch.no_grad():
                            target = teacher(x).float()
                        loss = kl_divergence(trained(x).float(), target, config.temperature)
                        if features:
                            student_features, teacher_features = features[0].take(), features[1].take()
                            matched = feature_loss(student_features, teacher_features, pairs)
                            loss = loss + config.feature_weight * matched
                    if not torch.isfinite(loss):
                        raise DivergenceError(
                            f"distillation diverged in epoch {epoch} (loss {loss.item()}): the student is not "
                            "usable. Lower --distill-lr or check the teacher's outputs are finite")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    opt.step()
                    sched.step()
                    apply_masks(student, pruned.masks)
                    if average is not None:  # the masked student's average keeps its zeros
                        average.update()
                    total += loss.item() * len(idx)
                history.append(batches.mean(total))
                bar.set_postfix(loss=f"{history[-1]:.4f}")
    finally:
        bar.close()
        for hooks in features or ():
            hooks.remove()
    if average is not None:
        average.load()
        apply_masks(student, pruned.masks)
    student = student.to(memory_format=torch.contiguous_format).eval()
    with autocast:  # as it was trained: a teacher of bf16 weights computes as it did
        _require_bounded(student, teacher, synthetic.images[:config.batch_size].to(device), config.lr)
    stats = {"seconds": time.perf_counter() - started, "loss_per_epoch": history, "bf16": bf16,
             "channels_last": memory_format == torch.channels_last}
    if adversary is not None:
        stats["adversarial"] = adversary.history  # per epoch after the first: the generator's BN loss and KL
    return pruned.with_model(student, stats)


_RUNAWAY = 1e4  # student logits this many times the teacher's largest: its weights ran away


@torch.no_grad()
def _require_bounded(student: nn.Module, teacher: nn.Module, x: torch.Tensor, lr: float) -> None:
    """Raise ``DivergenceError`` where the distilled student's logits on ``x`` are not finite or have run away
    from the teacher's: a learning rate too high for the loss to turn non-finite can still wreck the weights."""
    reached, bound = student(x).float().abs().max().item(), teacher(x).float().abs().max().item()
    if not math.isfinite(reached) or reached > _RUNAWAY * max(bound, 1.0):
        raise DivergenceError(f"distillation diverged: the student's logits reach {reached:.3g} where the teacher's "
                              f"stay within {bound:.3g}; the student is not usable. Lower the learning rate "
                              f"(--distill-lr; this distillation ran at {lr:g})")
