"""DeepInversion (Yin et al. 2020): dream images from the teacher's BatchNorm statistics.

Noise is optimised so that, layer by layer, the batch mean and variance of each
BatchNorm input match the running statistics stored in the teacher, while the
teacher classifies each image as its (balanced) target label. Optional image
priors (total variation, L2), random jitter, flips and resized crops, Adam with a cosine schedule.
Cheaper variants:

* bf16 autocast (``"auto"``: where the hardware computes bf16 natively, a model with depthwise convolutions
  excepted, ``machine.resolve_bf16``) and channels_last;
* warm start: each batch after the first starts from the previous batch's images, shuffled
  against the new labels, mirrored and mixed with fresh noise (``warm_start`` is the weight
  of the old image), so it needs far fewer steps than a batch started from noise;
* shards: the batches split into ``shards`` runs fixed by the config, each its own warm-started
  chain seeded by (seed, shard index), so processes can dream shards apart
  (``edgefree.distributed``) and a seed gives the same set whatever their number;
* multi-resolution: the first ``low_res_fraction`` of steps see a 2x average-pooled image
  (a quarter of the cost). No recipe uses it: the BN loss jumps back up when full
  resolution starts.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgefree import distributed
from edgefree.config import SynthesisConfig
from edgefree.errors import DivergenceError
from edgefree.machine import bf16_autocast, resolve_bf16
from edgefree.models import InputSpec, Teacher
from edgefree.recover.checks import stage_inputs
from edgefree.recover.generator import train_generator
from edgefree.recover.signal_sheet import save_signal_sheet
from edgefree.recover.inversion import (BatchNormMatcher, SyntheticSet, balanced_labels, random_view,
                                        label_fidelity, mirrors, teacher_for_inversion)


def _total_variation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 and L2 of the differences between neighbours along each spatial dimension."""
    steps = [x.diff(dim=d) for d in range(2, x.dim())]
    return sum(s.abs().mean() for s in steps), sum(s.pow(2).mean() for s in steps)


def shard_batches(config: SynthesisConfig) -> list[range]:
    """The batches (by index) of each synthesis shard: ``config.shards`` contiguous runs of batches,
    fewer where there are fewer batches, so every shard holds at least one batch. Fixed by the config
    alone, never by the number of processes."""
    batches = -(-config.images // config.batch_size)
    return [range(int(part[0]), int(part[-1]) + 1)
            for part in torch.arange(batches).tensor_split(min(config.shards, batches))]


# bn_weight "auto": the weights tried, strongest first, and the probe that judges each (a batch dreamed from
# noise with DeepInversion, whatever the method, so that every teacher is probed alike)
BN_WEIGHTS = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
PROBE_IMAGES, PROBE_STEPS, PROBE_LR = 64, 60, 0.2
# what a generator's training leaves out, so its probes leave it out too
GENERATOR_IGNORES = {"low_res_fraction": 0.0, "tv_l1_weight": 0.0, "tv_l2_weight": 0.0, "l2_weight": 0.0}


def choose_bn_weight(teacher: Teacher, config: SynthesisConfig, seed: int = 0, device: str = "cpu",
                     progress: bool = True) -> tuple[float, list[dict]]:
    """The strongest BatchNorm weight of ``BN_WEIGHTS`` at which the teacher still labels at least
    ``config.fidelity_floor`` of a probe batch as its target, and every probe (weight, agreement,
    confidence). The BatchNorm term pulls the dreams towards the statistics of the real data, the class
    term towards their labels; summed over a deep network's many BatchNorm layers (some on 1x1 maps)
    the first drowns the second, and the dreams then teach the student nothing about the classes.
    Where no weight reaches the floor, the one whose probe came closest. Each probe is ``config``'s own
    synthesis (its loss weights and views) made small: one batch of ``PROBE_IMAGES`` dreamed pixel by pixel
    for ``PROBE_STEPS`` steps, also where the dreams themselves come from a generator (then without the
    priors a generator does not train with, ``GENERATOR_IGNORES``).

    Example:
        >>> from edgefree.demo import default_teacher
        >>> weight, probes = choose_bn_weight(default_teacher(), SynthesisConfig(fidelity_floor=0.5), progress=False)
        >>> weight in BN_WEIGHTS and probes[-1]["bn_weight"] == weight
        True
    """
    probe_seed = int.from_bytes(hashlib.sha256(f"{seed}:bn-weight probe".encode()).digest()[:4], "little")
    probes = []
    for weight in tqdm(BN_WEIGHTS, desc="bn weight", unit="probe", disable=not progress, leave=False):
        probe = config.replace(method="deepinversion", images=PROBE_IMAGES, batch_size=PROBE_IMAGES,
                               iterations=PROBE_STEPS, lr=PROBE_LR, bn_weight=weight, warm_start=0.0, shards=1,
                               **(GENERATOR_IGNORES if config.method == "generator" else {}))
        stats = synthesize(teacher, probe, probe_seed, device, progress=False).stats
        probes.append({"bn_weight": weight, "teacher_agreement": stats["teacher_agreement"],
                       "teacher_confidence": stats["teacher_confidence"]})
        if stats["teacher_agreement"] >= config.fidelity_floor:
            return weight, probes
    best = max(probes, key=lambda p: p["teacher_agreement"])["bn_weight"]
    return best, probes


def synthesize(teacher: Teacher, config: SynthesisConfig = SynthesisConfig(), seed: int = 0,
               device: str = "cpu", progress: bool = True) -> SyntheticSet:
    """Dream ``config.images`` images from ``teacher`` alone (method "generator": see ``edgefree.recover.generator``).

    The images are dreamed in shards (``shard_batches``): each shard is its own chain of batches
    (warm-started from one another), seeded by ``seed`` and its index. Under torch.distributed each
    rank dreams its shards (``edgefree.distributed.my_shards``) and every rank gets the whole set, the
    same bit for bit whatever the number of ranks (given the same threads per rank and device).

    ``config.bn_weight="auto"`` first picks the weight of the BatchNorm term by probes
    (``choose_bn_weight``); the stats record it and the probes.

    Raises ``NoBatchNormError`` for a model without BatchNorm: there is nothing to invert.

    Example:
        >>> from edgefree.demo import default_teacher
        >>> dreams = synthesize(default_teacher(), SynthesisConfig(images=20, batch_size=20, iterations=5), progress=False)
        >>> tuple(dreams.images.shape)
        (20, 1, 8, 8)
    """
    stage_inputs(teacher, config=config, config_kind=SynthesisConfig)
    if config.bn_weight == "auto":
        started = time.perf_counter()
        weight, probes = choose_bn_weight(teacher, config, seed, device, progress)
        probing = time.perf_counter() - started
        dreams = synthesize(teacher, config.replace(bn_weight=weight), seed, device, progress)
        dreams.stats.update(bn_weight_probes=probes, bn_weight_probe_seconds=probing, fidelity_floor=config.fidelity_floor,
                            seconds=dreams.stats["seconds"] + probing)
        return dreams
    if config.method == "generator":  # one network trained step by step, as one process would: rank 0
        # trains it, every other rank takes its set (so the set does not depend on the number of processes)
        return distributed.broadcast(train_generator(teacher, config, seed, device, progress)
                                     if distributed.world().main else None)
    plan = shard_batches(config)
    mine = distributed.my_shards(len(plan))
    started = time.perf_counter()
    spec = teacher.spec
    with teacher_for_inversion(teacher, config, device) as (teacher, matcher, num_classes, memory_format):
        labels = balanced_labels(config.images, num_classes, torch.Generator().manual_seed(seed))
        batches = labels.split(config.batch_size)
        first = config.first_iterations or config.iterations
        steps = sum(first + config.iterations * (len(plan[s]) - 1) for s in mine)
        with tqdm(total=steps, desc="synthesize", unit="step", disable=not progress, leave=False) as bar:
            dreamed = [_dream_shard(teacher, spec, matcher, memory_format, [batches[b] for b in plan[s]], config,
                                    torch.Generator().manual_seed(distributed.shard_seed(seed, s)), device, bar)
                       for s in mine]
        busy = time.perf_counter() - started
        shards = {s: shard for rank in distributed.all_gather(dict(zip(mine, dreamed))) for s, shard in rank.items()}
        images = torch.cat([shards[s][0] for s in range(len(plan))])
        fidelity = label_fidelity(teacher, images, labels, matcher, device)
    curves = [curve for s in range(len(plan)) for curve in shards[s][1]]
    stats = {"seconds": time.perf_counter() - started, "bn_loss_curves": curves,  # per batch, per step
             "bn_loss_first": sum(c[0] for c in curves) / len(curves),  # mean over batches
             "bn_loss_last": sum(c[-1] for c in curves) / len(curves),
             **fidelity, "bn_weight": config.bn_weight, "bf16": resolve_bf16(config.bf16, device, teacher),
             "steps": sum(map(len, curves)),
             "shards": len(plan), "config": config.to_dict(), "seed": seed,
             "rank": {"images": sum(len(shards[s][0]) for s in mine), "seconds": busy}}  # this rank's own work
    return SyntheticSet(images, labels, stats)


def _dream_shard(teacher: nn.Module, spec: InputSpec, matcher: BatchNormMatcher, memory_format,
                 batches: list[torch.Tensor], config: SynthesisConfig, g: torch.Generator, device: str,
                 bar) -> tuple[torch.Tensor, list]:
    """One shard: its batches dreamed in turn, each after the first warm-started from the one before.
    Returns (images, one BN-loss curve per batch)."""
    low, high = (b.to(device) for b in spec.bounds())
    _, autocast = bf16_autocast(config.bf16, device, teacher)
    n_low = int(config.low_res_fraction * config.iterations)
    first = config.first_iterations or config.iterations
    images, curves = [], []
    for batch_labels in batches:
        y = batch_labels.to(device)
        x = torch.randn(len(y), *spec.shape, generator=g).to(device, memory_format=memory_format)
        if config.warm_start and images:  # the previous batch, shuffled against the new labels (and mirrored)
            previous = images[-1][torch.randperm(len(images[-1]), generator=g)[:len(y)]].to(x)
            previous = previous.flip(-1) if mirrors(config, spec.rank) else previous
            x = (config.warm_start * previous + (1 - config.warm_start ** 2) ** 0.5 * x).contiguous(
                memory_format=memory_format)
        x.requires_grad_(True)
        opt = torch.optim.Adam([x], lr=config.lr, betas=(0.5, 0.99))
        iterations = config.iterations if images else first
        curves.append([])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
        for step in range(iterations):
            view = random_view(x, config, g)
            if step < n_low:
                view = (F.avg_pool2d if spec.rank == 2 else F.avg_pool1d)(view, 2)
            with autocast:
                logits = teacher(view)
            bn = matcher.take(config.first_bn_multiplier)
            ce = F.cross_entropy(logits.float(), y)
            tv1, tv2 = _total_variation(x)
            loss = (config.bn_weight * bn + config.ce_weight * ce + config.tv_l1_weight * tv1
                    + config.tv_l2_weight * tv2 + config.l2_weight * x.pow(2).mean())
            if not torch.isfinite(loss):
                raise DivergenceError(f"synthesis diverged at step {step} (loss {loss.item()}); "
                                      "lower the synthesis lr or the loss weights")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))
            curves[-1].append(bn.item())
            bar.update()
            if step % 10 == 0:
                bar.set_postfix(bn=f"{bn.item():.3g}", ce=f"{ce.item():.3g}")
        images.append(x.detach().contiguous().cpu())
    return torch.cat(images), curves


def save_contact_sheet(dreams: SyntheticSet, spec, path: str | Path, per_class: int = 8) -> None:
    """A PNG grid with a title: one row per class, named on the left, ``per_class`` dreams each, upscaled for
    small images; for signals, a plot of traces (``edgefree.recover.signal_sheet``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    if spec.rank == 1:
        return save_signal_sheet(dreams, spec, path, min(per_class, 4))

    classes = int(dreams.labels.max()) + 1
    rows = []
    for c in range(classes):
        picked = dreams.images[dreams.labels == c][:per_class]
        pad = torch.ones(per_class - len(picked), *spec.shape)  # white where a class has fewer dreams
        rows.append(torch.cat([spec.to_unit(spec.denormalize(picked)).clamp(0, 1), pad]))
    scale = max(1, 64 // spec.shape[1])
    grid = make_grid(F.interpolate(torch.cat(rows), scale_factor=scale, mode="nearest"), nrow=per_class, padding=2,
                     pad_value=1.0)
    cell = spec.shape[1] * scale + 2
    fig, ax = plt.subplots(figsize=(1.0 + per_class * cell / 72, 0.6 + classes * cell / 72))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if spec.shape[0] == 1 else None, interpolation="nearest")
    ax.set_yticks([2 + c * cell + cell / 2 - 1 for c in range(classes)],
                  [spec.class_names[c] if c < len(spec.class_names) else f"class {c}" for c in range(classes)],
                  fontsize=8)
    ax.set_xticks([])
    ax.set_title(f"dreams ({'x'.join(map(str, spec.shape))}, no training data), one row per target class", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
