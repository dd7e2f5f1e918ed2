"""``load_teacher``: the one door for teachers, whatever their source (``edgefree.models.sources``).

A ``Teacher`` is the module, the ``InputSpec`` of what it takes and the name of its source:
every stage reads the input's shape and normalization from it, never from the module.
"""

from __future__ import annotations

import copy

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgefree.errors import EdgefreeError, first_line
from edgefree.models.checkpoint import load_checkpoint
from edgefree.models.program import load_program
from edgefree.models.sources import ModelSourceError, Source, build_architecture, is_program, parse_source
from edgefree.models.spec import InputSpec, parse_field


@dataclass(frozen=True)
class Teacher:
    """A trained classifier (``module``, in eval mode), the input it takes (``spec``) and its source's ``name``;
    ``range_assumed``: a signal model whose raw value range neither its source nor the caller gave, so
    ``spec.value_range`` is ``default_value_range``'s (mean +- 5 std); ``normalization_assumed``: a model whose
    per-channel mean or std neither its source nor the caller gave, so ``spec`` holds the default's."""

    module: nn.Module
    spec: InputSpec
    name: str
    range_assumed: bool = False  # a signal whose raw range nobody gave: ``spec.value_range`` is the default
    normalization_assumed: bool = False  # a mean or std nobody gave: the default's for its channels
    outputs: int | None = None  # its class count where loading already measured it

    def classes(self) -> int:
        """How many classes the teacher scores (its outputs)."""
        return self.outputs or output_count(self.module, self.spec)


def output_count(module: nn.Module, spec: InputSpec) -> int:
    """How many classes ``module`` (in eval mode) scores: its output width on two example inputs."""
    with torch.no_grad():
        return module(spec.example_inputs(2)[0].to(next(module.parameters()).device)).shape[1]


def _source_of(source: str | None, checkpoint) -> Source:
    if source is not None and is_program(checkpoint):
        raise ModelSourceError(f"{checkpoint} is a torch.export program and carries its own architecture: leave out "
                               f"--arch {source}")
    if source is None:
        if checkpoint is None or not is_program(checkpoint):
            raise ModelSourceError("--model needs --arch: name the architecture of the checkpoint (a zoo name, "
                                   "torchvision:<name>, path/to/file.py:factory) or pass a .pt2 program")
        source = str(checkpoint)
    return parse_source(source)


def _spec(base: InputSpec | None, given, name: str, shape=None) -> tuple[InputSpec, bool, bool]:
    """The source's spec with ``given`` applied: an InputSpec replaces it, a mapping changes the fields it
    names. ``base`` None: the source says nothing but maybe its ``shape`` (a program's). Also returns
    whether a signal's value range was assumed (``default_value_range``) because nobody gave it, and
    whether its normalization was (the default mean or std for its channels: an image's, or 0 and 1 for a
    signal's)."""
    if isinstance(given, InputSpec):
        return given, False, False
    changes = {k: v for k, v in dict(given or {}).items() if v is not None}
    unknown = sorted(set(changes) - {"shape", "mean", "std", "value_range"})
    if unknown:
        raise EdgefreeError(f"input spec changes {unknown} are not shape, mean, std or value_range")
    changes.update({k: parse_field(k, v) for k, v in changes.items() if isinstance(v, str)})  # "3x32x32", "0.5,0.5"
    if base is not None:
        return base.replace(**changes), False, False
    shape = changes.get("shape", shape)
    if shape is None:
        raise EdgefreeError(f"{name} does not say what input it takes: pass its shape with --input-shape "
                            "(e.g. 3x32x32 for an image, 12x1000 for a signal; input_spec= in Python)")
    spec = InputSpec(tuple(shape), changes.get("mean"), changes.get("std"), value_range=changes.get("value_range"))
    return spec, spec.rank == 1 and "value_range" not in changes, not {"mean", "std"} <= set(changes)


def _in_memory(module: nn.Module, checkpoint, input_spec) -> Teacher:
    """A teacher built in Python: a copy of ``module`` (the caller's stays as it is), its input given by
    ``input_spec``."""
    name = type(module).__name__
    module = copy.deepcopy(module)
    if checkpoint is not None:
        load_checkpoint(module, checkpoint, name)
    spec, *assumed = _spec(None, input_spec, name)
    outputs = check_forward(module.eval(), spec, name)
    return Teacher(module, spec, name, *assumed, outputs=outputs)


def check_forward(module: nn.Module, spec: InputSpec, name: str, num_classes: int | None = None) -> int:
    """Run ``module`` on a batch of 2 of ``spec``'s inputs; returns its number of classes.

    Raises an ``EdgefreeError`` naming the shape tried when the forward pass fails or does not give
    (batch, classes) logits, or gives another number of classes than ``num_classes``.
    """
    shape = f"{'x'.join(map(str, spec.shape))} (a batch of 2)"
    if min(spec.shape[1:]) < 2:
        raise EdgefreeError(f"input shape {'x'.join(map(str, spec.shape))} has a length of 1: synthesis shifts "
                            "and compares neighbouring values, so each of H and W (or L) must be at least 2; pass "
                            "the shape the model was trained on with --input-shape")
    try:
        with torch.no_grad():
            out = module(spec.example_inputs(2)[0].to(next(module.parameters()).device))
    except Exception as exc:  # a user's module raises anything when the shape does not fit
        text = first_line(exc, limit=None)
        if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text \
                or "out of memory" in text.lower():
            raise EdgefreeError(f"{name} ran out of memory on an input of shape {shape} ({text[:120]}): this "
                                "machine cannot hold the model at this input size; pass a smaller --input-shape "
                                "or free memory") from exc
        raise EdgefreeError(f"{name} fails on an input of shape {shape} ({type(exc).__name__}: {text[:200]}): pass "
                            "the shape it takes with --input-shape (CxHxW or CxL, without the batch)") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgefreeError(f"{name} gives {got} for an input of shape {shape}, not logits of shape (batch, classes): "
                            "edgefree compresses classifiers; return the logits alone")
    if out.shape[1] < 2:
        raise EdgefreeError(f"{name} gives {out.shape[1]} output for an input of shape {shape}: edgefree compresses "
                            "classifiers of 2 or more classes (a binary one gives 2 logits)")
    if num_classes is not None and out.shape[1] != num_classes:
        raise EdgefreeError(f"{name} gives {out.shape[1]} classes, not --num-classes {num_classes}: pass "
                            f"--num-classes {out.shape[1]}")
    return out.shape[1]


def load_teacher(source: str | nn.Module | None, checkpoint: str | Path | None = None, num_classes: int = 10,
                 input_spec: InputSpec | Mapping | None = None) -> Teacher:
    """The teacher named by ``source``, its weights loaded from ``checkpoint``, checked on its input.

    Args:
        source: a zoo name (``edgefree models``); ``torchvision:<name>`` (any classification model
            of ``torchvision.models``, built with ``weights=None``); ``path/to/file.py:factory`` or
            ``package.module:factory``, a function of yours returning an ``nn.Module`` (called with
            ``num_classes=`` when it takes it); **that imports and runs your code**. None, or a ``.pt2``
            path: a ``torch.export`` program, which is its own architecture and weights. An ``nn.Module``
            built in Python: a copy of it is the teacher (its shape must be given by ``input_spec``).
        checkpoint: a ``state_dict`` file (read with ``weights_only=True``; ``module.`` prefixes
            stripped; every key must fit), or the ``.pt2`` program. None: untrained weights.
        num_classes: outputs of the classifier (a program, and a module given itself, have their own).
        input_spec: what the model takes. An ``InputSpec`` replaces the source's; a mapping
            (``{"shape": (3, 96, 96)}``, ``mean``, ``std``, ``value_range``) changes only what it names. Zoo models
            bring theirs, torchvision models take 3x224x224 with ImageNet normalization, a program
            the shape it was exported with; a factory's shape must be given. A signal model whose
            source and mapping give no ``value_range`` gets mean +- 5 std (``range_assumed``).

    Example:
        >>> teacher = load_teacher("torchvision:mobilenet_v3_small", input_spec={"shape": (3, 64, 64)})
        >>> teacher.spec.shape, teacher.name
        ((3, 64, 64), 'torchvision:mobilenet_v3_small')
    """
    if isinstance(source, nn.Module):
        return _in_memory(source, checkpoint, input_spec)
    parsed = _source_of(source, checkpoint)
    if parsed.kind == "program":
        module, shape = load_program(parsed.target, name_left=True)
        if checkpoint is not None and not is_program(checkpoint):
            load_checkpoint(module, checkpoint, parsed.name)
        spec, *assumed = _spec(None, input_spec, parsed.name, shape)
        outputs = check_forward(module, spec, parsed.name)
    else:
        module, base = build_architecture(parsed, num_classes)
        if checkpoint is not None:
            load_checkpoint(module, checkpoint, parsed.name)
        spec, *assumed = _spec(base, input_spec, parsed.name)
        outputs = check_forward(module.eval(), spec, parsed.name, num_classes)
    return Teacher(module.eval(), spec, parsed.name, *assumed, outputs=outputs)
