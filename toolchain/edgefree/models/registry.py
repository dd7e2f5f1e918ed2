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
    """What the model expects: ``shape`` (C, H, W) of pixels in [0, 1], then normalized.

    Models take *normalized* tensors; ``normalize`` maps [0, 1] pixels to them and
    ``bounds`` gives the normalized value of pixel 0 and pixel 1 per channel.
    """

    shape: tuple[int, int, int] = (3, 32, 32)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self):
        channels = self.shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise EdgefreeError(
                f"normalization has {len(self.mean)} mean / {len(self.std)} std values for "
                f"{channels} input channels: give one value per channel"
            )
        if any(s <= 0 for s in self.std):
            raise EdgefreeError(f"normalization std must be positive, got {self.std}")

    def _view(self, values):
        return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self._view(self.mean)) / self._view(self.std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(self.std) + self._view(self.mean)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized values of black and white pixels, shaped (1, C, 1, 1)."""
        return self.normalize(torch.zeros(1, self.shape[0], 1, 1)), self.normalize(
            torch.ones(1, self.shape[0], 1, 1)
        )

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return (self.normalize(torch.rand(batch, *self.shape, generator=g)),)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "mean": list(self.mean), "std": list(self.std),
                "class_names": list(self.class_names)}


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
