"""What pruning hands on: the ``Student`` (a compressed copy of the teacher) and its ``PrunePlan``.

Every later stage reads the plan (what was removed) instead of assuming the student has the
teacher's shapes, and ``PrunePlan.apply`` shrinks a fresh instance of the teacher's architecture
to the student's shapes, so a saved student loads without the pruning code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from edgefree.errors import EdgefreeError
from edgefree.models import InputSpec

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
PLAN_OPERATIONS = {"prune_out_channels", "prune_in_channels"}  # Torch-Pruning's handlers, the plan records


@dataclass
class PrunePlan:
    """What pruning removed from the teacher.

    ``removed_blocks``: residual blocks replaced by the identity (module names). ``channels``: the
    Torch-Pruning operations applied after that, in order, as (module name, operation, removed
    indices), e.g. ``("layer1.0.conv1", "prune_out_channels", [3, 7])``. ``masks``: the weights
    kept (True) by magnitude pruning, keyed by the *student's* parameter names.
    """

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    channels: list[tuple[str, str, list[int]]] = field(default_factory=list)
    removed_blocks: list[str] = field(default_factory=list)

    def kept(self, module: str, size: int, operation: str = "prune_out_channels") -> list[int]:
        """Indices of the teacher's ``size`` channels of ``module`` that the student keeps. Operations
        apply in order, each to the channels the ones before it left (gradual pruning prunes a layer
        more than once)."""
        kept = list(range(size))
        for name, op, idxs in self.channels:
            if name == module and op == operation:
                removed = set(idxs)
                kept = [k for position, k in enumerate(kept) if position not in removed]
        return kept

    def to_json(self) -> dict:
        """The structural part (masks excluded: the student's zeros carry them)."""
        return {"removed_blocks": list(self.removed_blocks),
                "channels": [[name, op, list(map(int, idxs))] for name, op, idxs in self.channels]}

    @classmethod
    def from_json(cls, values: dict) -> "PrunePlan":
        try:
            plan = cls(channels=[(str(n), str(op), [int(i) for i in idxs]) for n, op, idxs in values["channels"]],
                       removed_blocks=[str(b) for b in values["removed_blocks"]])
            unknown = sorted({op for _, op, _ in plan.channels} - PLAN_OPERATIONS)
            if unknown:  # replay calls the pruner's method of this name: only Torch-Pruning's two
                raise ValueError(f"unknown operation(s) {unknown}")
            return plan
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgefreeError(f"the pruning plan is malformed ({exc!r}): it must hold 'removed_blocks' and "
                                "'channels' as written by edgefree") from exc

    def apply(self, model: nn.Module) -> nn.Module:
        """Shrink a fresh copy of the teacher's architecture, in place, to the student's shapes."""
        return replay(model, self)


@dataclass
class Student:
    """A compressed copy of the teacher: ``model``, its ``plan``, and ``stats`` of the stage that made it."""

    model: nn.Module
    plan: PrunePlan
    stats: dict = field(default_factory=dict)
    spec: InputSpec | None = None  # the input it takes: the teacher's

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return self.plan.masks

    def with_model(self, model: nn.Module, stats: dict) -> "Student":
        """A new Student with ``model`` and the same plan (masks copied)."""
        plan = PrunePlan({k: v.clone() for k, v in self.plan.masks.items()}, list(self.plan.channels),
                         list(self.plan.removed_blocks))
        return Student(model, plan, stats, self.spec)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in ``model`` in place of its submodule called ``name``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def replay(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Apply ``plan`` to a fresh instance of the teacher's architecture (in place): the student's shapes."""
    modules = dict(model.named_modules())
    try:
        for name in plan.removed_blocks:
            modules[name]  # noqa: B018 (KeyError: the plan names a block this model lacks)
            set_module(model, name, nn.Identity())
        modules = dict(model.named_modules())
        for name, operation, idxs in plan.channels:
            module = modules[name]
            getattr(tp.pruner.function.PrunerBox[tp.ops.module2type(module)], operation)(module, idxs)
    except (KeyError, IndexError, AttributeError, RuntimeError) as exc:
        raise EdgefreeError(f"the pruning plan does not fit this architecture ({type(exc).__name__}: {exc}): "
                            "use the plan written with this checkpoint, and the teacher's --arch") from exc
    return model
