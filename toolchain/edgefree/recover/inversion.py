"""What both synthesis methods share: the dreams' container and the teacher's BatchNorm hooks.

DeepInversion (``edgefree.recover.synthesize``) optimises pixels and a dream generator
(``edgefree.recover.generator``) trains a network; both look at the teacher through the same
hooks (how far each BatchNorm input's batch statistics are from the stored running ones),
see the same jittered and mirrored views, draw the same balanced labels, and return a
``SyntheticSet``, which carries its ``DreamGenerator`` when there is one.
"""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgefree.config import SynthesisConfig
from edgefree.digests import tensor_bytes
from edgefree.errors import EdgefreeError, NoBatchNormError, first_line
from edgefree.models import Teacher, output_count


class DreamGenerator(nn.Module):
    """Noise and a class label -> an input in [0, 1] of the model's ``shape`` (C x H x W, an image, or
    C x L, a signal): a linear layer to a map a quarter of the size along each spatial dimension (rounded
    up), then two 2x upsampling convolutions (DCGAN-like, ``width`` channels at full size), cropped to
    the size. An image's maps are channels-last (oneDNN's and the tensor cores' fast layout), whatever
    layout its weights were loaded in; run it under bf16 autocast where the hardware has bf16
    (``sample``'s ``autocast``)."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, width: int = 32, latent: int = 128):
        super().__init__()
        if len(shape) not in (2, 3):
            raise EdgefreeError(f"the dream generator makes images (C x H x W) or signals (C x L), and this model "
                                f"takes {'x'.join(map(str, shape))}: use synthesis method 'deepinversion'")
        channels, *self.size = shape
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if len(self.size) == 2 else (nn.Conv1d, nn.BatchNorm1d)
        self.settings = {"shape": tuple(shape), "num_classes": num_classes, "width": width, "latent": latent}
        self.start = tuple(-(-s // 4) for s in self.size)
        self.project = nn.Linear(latent + num_classes, 2 * width * math.prod(self.start))
        self.body = nn.Sequential(
            norm(2 * width), nn.Upsample(scale_factor=2),
            conv(2 * width, 2 * width, 3, padding=1, bias=False), norm(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            conv(2 * width, width, 3, padding=1, bias=False), norm(width), nn.LeakyReLU(0.2),
            conv(width, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([noise, F.one_hot(labels, self.settings["num_classes"]).float()], 1))
        h = h.view(len(noise), -1, *self.start)
        if h.dim() == 4:
            h = h.contiguous(memory_format=torch.channels_last)
        out = self.body(h)
        return out[(..., *(slice(0, s) for s in self.size))]

    @torch.no_grad()
    def sample(self, spec, labels: torch.Tensor, generator: torch.Generator, batch_size: int = 256,
               autocast=None) -> torch.Tensor:
        """Normalized fp32 images (what the model sees), one per label, from fresh noise (``spec``: the model's
        input), drawn under ``autocast`` (a context, e.g. ``machine.bf16_autocast``'s; None: fp32)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        images = []
        for y in labels.split(batch_size):
            noise = torch.randn(len(y), self.settings["latent"], generator=generator).to(device)
            with autocast or nullcontext():
                pixels = self(noise, y.to(device))
            images.append(spec.normalize(spec.from_unit(pixels.float().cpu())).contiguous())
        self.train(was_training)
        return torch.cat(images)


@dataclass
class SyntheticSet:
    """Normalized images (what the model sees), their target labels, and how they were made."""

    images: torch.Tensor
    labels: torch.Tensor
    stats: dict = field(default_factory=dict)
    generator: nn.Module | None = None  # a DreamGenerator that draws new images like these (method "generator")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # a notebook shows the set, not its tensors
        shape = "x".join(map(str, self.images.shape[1:]))
        made = ", ".join(f"{k}={self.stats[k]!r}" for k in ("seed", "teacher_agreement") if k in self.stats)
        return (f"SyntheticSet({len(self)} images of {shape}{', ' + made if made else ''}"
                f"{', with its generator' if self.generator is not None else ''})")

    def save(self, path: str | Path) -> None:
        """Write through ``<path>.part`` and a rename: the file is whole or absent, and another name linked to
        an older file at ``path`` keeps that file. The temporary name is this process's:
        two builds may cache the same set at once. The file holds the sha256 of the images, labels and
        generator weights, which ``load`` checks."""
        part = Path(f"{path}.{os.getpid()}.part")
        generator = {"settings": self.generator.settings, "state": self.generator.state_dict()} if self.generator else None
        torch.save({"images": self.images, "labels": self.labels, "stats": self.stats, "generator": generator,
                    "sha256": _digest(self.images, self.labels, generator)}, part)
        os.replace(part, path)

    @classmethod
    def load(cls, path: str | Path, require_digest: bool = False) -> "SyntheticSet":
        """The set saved at ``path``, read with ``weights_only`` (no pickled code runs). ``require_digest``: the
        file must carry the sha256 ``save`` stores (every cached set does; a build folder's set written by an
        older edgefree may not, and its own sha256 in report.json is checked before it is read).

        Raises ``EdgefreeError`` for a file that is damaged (its tensors no longer give the sha256 stored with
        them, it lacks one where ``require_digest``, or it does not read at all), or holds anything but a saved set.
        """
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if require_digest and "sha256" not in saved:
                raise ValueError("it carries no sha256 of its tensors")
            if "sha256" in saved and saved["sha256"] != _digest(saved["images"], saved["labels"], saved.get("generator")):
                raise ValueError("its images, labels or generator differ from the sha256 stored with them")
            generator = None
            if saved.get("generator"):
                generator = DreamGenerator(**saved["generator"]["settings"])
                generator.load_state_dict(saved["generator"]["state"])
                generator.eval()
            return cls(saved["images"], saved["labels"], saved.get("stats", {}), generator)
        except Exception as exc:  # torch.load raises many types for a damaged or unsafe file
            first = first_line(exc, 120) or type(exc).__name__
            raise EdgefreeError(f"{path} cannot be read as synthetic images ({first}): it is damaged or "
                                "holds objects other than tensors; build again to write it anew") from exc


def _digest(images: torch.Tensor, labels: torch.Tensor, generator: dict | None) -> str:
    """The sha256 of a saved set's tensors: its images, labels and generator weights, each with its dtype and
    shape, byte for byte."""
    h = hashlib.sha256()
    tensors = [images, labels, *((generator or {}).get("state") or {}).values()]
    for tensor in tensors:
        h.update(f"{tensor.dtype} {tuple(tensor.shape)};".encode())
        h.update(tensor_bytes(tensor))
    return h.hexdigest()


class BatchNormMatcher:
    """Forward hooks that measure how far each BN input's batch statistics are from the running ones.

    Layers whose maps hold fewer than ``min_positions`` positions per image (a MobileNet's 2x2 and
    1x1 maps at CIFAR size) are left out: their statistics come from a handful of values per image."""

    def __init__(self, model: nn.Module, min_positions: int = 1):
        self.min_positions = min_positions
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module, inputs, _output):
        x = inputs[0]
        if x[0, 0].numel() < self.min_positions:
            self.losses.append(x.new_zeros((), dtype=torch.float32))
            return
        # channels last, flattened: one column reduction per moment (2x faster than var over dims)
        x = x.movedim(1, -1).reshape(-1, x.shape[1]).float()
        mean = x.mean(0)
        var = (x * x).mean(0) - mean * mean
        self.losses.append(torch.linalg.vector_norm(mean - module.running_mean, 2)
                           + torch.linalg.vector_norm(var - module.running_var, 2))

    def take(self, first_multiplier: float) -> torch.Tensor:
        losses, self.losses = self.losses, []
        return first_multiplier * losses[0] + sum(losses[1:])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def require_batchnorm(teacher: nn.Module, name: str, min_positions: int = 1) -> BatchNormMatcher:
    """Hooks on every BatchNorm of ``teacher`` (called ``name`` in errors); ``NoBatchNormError`` if it has none."""
    matcher = BatchNormMatcher(teacher, min_positions)
    if not matcher.layers:
        matcher.remove()
        raise NoBatchNormError(
            f"{name} has no BatchNorm layers: DeepInversion "
            "synthesizes images by matching the running mean/variance stored in BatchNorm layers, so it "
            "cannot invert this model. Use a model trained with BatchNorm."
        )
    return matcher


@contextmanager
def teacher_for_inversion(teacher: Teacher, config: SynthesisConfig, device: str):
    """The teacher's module in eval mode on ``device``, its weights without gradients (only the images, or the
    generator, need them), in ``config``'s memory format, with hooks on every BatchNorm: the hooks, the
    gradients and the memory format are undone on exit (it stays in eval mode on ``device``, as a teacher is
    only ever evaluated). Yields (teacher, BatchNorm matcher, number of classes, memory format)."""
    name, spec, teacher = teacher.name, teacher.spec, teacher.module.eval().to(device)
    num_classes = output_count(teacher, spec)  # before the hooks: that forward pass is not a step
    matcher = require_batchnorm(teacher, name, config.bn_min_positions)
    was_grad = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    memory_format = layout_for(config.channels_last, spec.rank)
    try:
        with held_in(teacher, memory_format):  # distillation may hold it channels-last: it gets that back
            yield teacher, matcher, num_classes, memory_format
    finally:
        matcher.remove()
        for p, grad in zip(teacher.parameters(), was_grad):
            p.requires_grad_(grad)


def layout_for(channels_last: bool, rank: int) -> torch.memory_format:
    """Channels-last where asked for and the input is an image (it is a layout of 4-D tensors), else NCHW."""
    return torch.channels_last if channels_last and rank == 2 else torch.contiguous_format


def layout(model: nn.Module) -> torch.memory_format:
    """The memory format ``model``'s 4-D weights are held in: channels-last if any is only that, else NCHW."""
    four_d = [p for p in model.parameters() if p.dim() == 4]
    last = any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in four_d)
    return torch.channels_last if last else torch.contiguous_format


@contextmanager
def held_in(model: nn.Module, memory_format: torch.memory_format):
    """``model`` in ``memory_format`` inside the block, and in the layout it had before after it."""
    was = layout(model)
    model.to(memory_format=memory_format)
    try:
        yield model
    finally:
        model.to(memory_format=was)


def random_view(x: torch.Tensor, config: SynthesisConfig, g: torch.Generator) -> torch.Tensor:
    """The view the teacher sees at one step: with ``config.crop_scale`` < 1 a random crop of at least that share
    of the area (of an image, at an aspect ratio from 3/4 to 4/3; of a signal, of its length) resized back;
    rolled by up to ``config.jitter`` steps along each spatial dimension (pixels, or samples of a signal: a time
    shift); maybe mirrored along the last."""
    dims = tuple(range(2, x.dim()))
    if config.crop_scale < 1:
        x = _resized_crop(x, config.crop_scale, g)
    shift = torch.randint(-config.jitter, config.jitter + 1, (len(dims),), generator=g).tolist()
    view = torch.roll(x, shifts=shift, dims=dims) if config.jitter else x
    return view.flip(-1) if mirrors(config, x.dim() - 2) and torch.rand(1, generator=g).item() < 0.5 else view


def crop_size(sizes: tuple[int, ...], share: float, aspect: float) -> tuple[int, ...]:
    """The sides of a crop of at least ``share`` of ``sizes``' area (an image: height over width near ``1 / aspect``,
    the other side widened where one reaches the edge; a signal: of its length), within ``sizes``."""
    if len(sizes) == 1:
        return (min(sizes[0], math.ceil(share * sizes[0])),)
    area = share * sizes[0] * sizes[1]
    height = min(sizes[0], max(1, math.ceil(math.sqrt(area / aspect))))
    width = min(sizes[1], math.ceil(area / height))
    return min(sizes[0], math.ceil(area / width)), width


def _resized_crop(x: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
    """One random crop of the batch, of a share from ``scale`` to 1 of its area (an image's at an aspect ratio from
    3/4 to 4/3), resized to the batch's size: a signal's crop is a piece of it stretched in time."""
    sizes = tuple(x.shape[2:])
    share = scale + (1 - scale) * torch.rand(1, generator=g).item()
    aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(1, generator=g).item())
    crop = crop_size(sizes, share, aspect)
    starts = [torch.randint(0, n - c + 1, (1,), generator=g).item() for n, c in zip(sizes, crop)]
    cropped = x[(..., *(slice(s, s + c) for s, c in zip(starts, crop)))]
    return F.interpolate(cropped, size=sizes, mode="bilinear" if len(sizes) == 2 else "linear", align_corners=False)


def mirrors(config: SynthesisConfig, rank: int) -> bool:
    """Whether synthesis mirrors its views: ``config.flip``, or by default images (rank 2) but not signals
    (rank 1), since a signal reversed in time (an ECG beat backwards) is not one the sensor records."""
    return config.flip if config.flip is not None else rank == 2


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` labels, each class ``n // num_classes`` or one more times, in a seeded random order."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=generator)]


@torch.no_grad()
def label_fidelity(teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, matcher: BatchNormMatcher,
                   device: str, batch_size: int = 512) -> dict:
    """How well dreams carry their labels: the share the teacher classifies as their target
    (``teacher_agreement``) and its mean softmax probability of the target (``teacher_confidence``)."""
    hits, confidence = 0, 0.0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        p = torch.softmax(teacher(x.to(device)).float(), 1).cpu()
        hits += int((p.argmax(1) == y).sum())
        confidence += float(p.gather(1, y[:, None]).sum())
    matcher.losses.clear()  # those passes are a check, not a step
    return {"teacher_agreement": hits / len(labels), "teacher_confidence": confidence / len(labels)}
