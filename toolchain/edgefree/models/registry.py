"""A registry is a plain dict filled by a decorator; ``create_model`` is the one door."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from edgefree.errors import EdgefreeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: ``shape`` (C, H, W) for an image or (C, L) for a signal, of raw values
    in ``value_range`` (pixels in [0, 1]; a sensor's range for a signal), then normalized per channel.

    Models take *normalized* tensors; ``normalize`` maps raw values to them and ``bounds`` gives
    the normalized value of the lowest and highest raw value per channel.
    """

    shape: tuple[int, ...] = (3, 32, 32)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: tuple[str, ...] = field(default=())
    value_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        channels = self.shape[0]
        if len(self.shape) not in (2, 3):
            raise EdgefreeError(f"input shape {tuple(self.shape)} is neither (C, H, W) nor (C, L): give an image's "
                                "channels, height and width, or a signal's channels and length")
        if len(self.mean) != channels or len(self.std) != channels:
            raise EdgefreeError(
                f"normalization has {len(self.mean)} mean / {len(self.std)} std values for "
                f"{channels} input channels: give one value per channel"
            )
        if any(s <= 0 for s in self.std):
            raise EdgefreeError(f"normalization std must be positive, got {self.std}")
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            raise EdgefreeError(f"value range {self.value_range} must be (low, high) with low < high")

    @property
    def rank(self) -> int:
        """2 for an image (H, W), 1 for a signal (L): the spatial dimensions after the channels."""
        return len(self.shape) - 1

    def _view(self, values) -> torch.Tensor:
        """``values`` per channel, shaped to broadcast over a batch: (1, C, 1, 1) or (1, C, 1)."""
        return torch.tensor(values, dtype=torch.float32).view(1, -1, *([1] * self.rank))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self._view(self.mean).to(raw.device)) / self._view(self.std).to(raw.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.std).to(x.device) + self._view(self.mean).to(x.device)

    def to_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw values mapped from ``value_range`` onto [0, 1] (for pictures of them)."""
        low, high = self.value_range
        return (raw - low) / (high - low)

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """Values in [0, 1] (an image's pixels / 255, a generator's sigmoid) mapped onto ``value_range``."""
        low, high = self.value_range
        return low + (high - low) * unit

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized values of the lowest and the highest raw value per channel, shaped (1, C, 1[, 1])."""
        low, high = self.value_range
        ones = torch.ones(1, self.shape[0], *([1] * self.rank))
        return self.normalize(ones * low), self.normalize(ones * high)

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return (self.normalize(self.from_unit(torch.rand(batch, *self.shape, generator=g))),)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "mean": list(self.mean), "std": list(self.std),
                "class_names": list(self.class_names), "value_range": list(self.value_range)}


@dataclass(frozen=True)
class ModelEntry:
    factory: Callable[..., nn.Module]
    input_spec: InputSpec
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, input_spec: InputSpec, description: str):
    """Decorator: ``@register_model("resnet20-cifar", spec, "...")`` on a factory."""

    def decorate(factory):
        _REGISTRY[name] = ModelEntry(factory, input_spec, description)
        return factory

    return decorate


def list_models() -> dict[str, str]:
    """Names of all registered architectures with a one-line description."""
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def create_model(name: str, num_classes: int = 10, input_spec: InputSpec | None = None) -> nn.Module:
    """Build an untrained model by name; it carries ``input_spec`` and ``arch``.

    Example:
        >>> model = create_model("resnet20-cifar")
        >>> model(*model.input_spec.example_inputs()).shape
        torch.Size([1, 10])
    """
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise EdgefreeError(f"unknown architecture {name!r}; known: {known}")
    entry = _REGISTRY[name]
    model = entry.factory(num_classes=num_classes)
    model.input_spec = input_spec or entry.input_spec
    model.arch = name
    return model
