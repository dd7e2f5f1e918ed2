"""The zoo: a plain dict filled by a decorator; ``create_model(name)`` builds one of its architectures.

Teachers of every kind (zoo names, torchvision models, a factory of your own, a ``.pt2``
program) come in through ``edgefree.models.load_teacher``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from edgefree.errors import EdgefreeError
from edgefree.models.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "ModelEntry", "register_model", "list_models",
           "create_model", "zoo_entry"]


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
    """Names of all registered architectures with a one-line description.

    Example:
        >>> "resnet20-cifar" in list_models()
        True
    """
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def zoo_entry(name: str) -> ModelEntry:
    """The registered architecture ``name``; an ``EdgefreeError`` listing the known ones otherwise."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise EdgefreeError(f"unknown architecture {name!r}; known: {known} (or torchvision:<name>, "
                            "path/to/file.py:factory, package.module:factory, or a .pt2 program as --model)")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build an untrained zoo model by name (``load_teacher`` adds its input spec and weights).

    Example:
        >>> model = create_model("resnet20-cifar")
        >>> model(*zoo_entry("resnet20-cifar").input_spec.example_inputs()).shape
        torch.Size([1, 10])
    """
    return zoo_entry(name).factory(num_classes=num_classes)
