"""Walk a model's layers in forward order, with the inputs each one receives over a set of batches.

The walk keeps the inputs of the current child of a plain ``nn.Sequential`` (a residual block, say)
and moves them one child on when it gets there, so one walk over a network costs about one forward
pass, not one per layer. Layer-wise refit and block-wise reconstruction both walk this way.
"""

from __future__ import annotations

import torch
from torch import nn


class _Stop(Exception):
    pass


def layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The input ``layer`` receives when ``model`` runs on ``x`` (the rest of the model is skipped);
    None if the forward pass never reaches it."""
    captured = []

    def hook(_module, inputs):
        captured.append(inputs[0])
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0] if captured else None


def call_counts(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, int]:
    """How many times one forward pass of ``model`` on ``example`` calls each of its modules."""
    calls: dict[nn.Module, int] = {}

    def count(module, _inputs):
        calls[module] = calls.get(module, 0) + 1

    handles = [m.register_forward_pre_hook(count) for m in model.modules()]
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def chained(model: nn.Module, calls: dict[nn.Module, int]):
    """(Sequential's name, Sequential, [(index, child's full name, child)]) for every plain ``nn.Sequential``
    of ``model`` whose chaining holds, outer ones first: the Sequential and the children listed are called
    exactly once per forward pass, so child i + 1's input is child i's output."""
    for name, seq in model.named_modules():
        if type(seq).forward is not nn.Sequential.forward or calls.get(seq) != 1:
            continue
        children = [(i, f"{name}.{child_name}" if name else child_name, child)
                    for i, (child_name, child) in enumerate(seq.named_children()) if calls.get(child) == 1]
        yield name, seq, children


def anchors(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[str, int]]:
    """For each module: (name, index) of the innermost plain ``nn.Sequential`` child that holds it.

    A plain Sequential feeds child i's output to child i + 1, so child i + 1's input costs one
    child's forward once child i's is known. Only Sequentials (and children) that one forward pass
    calls exactly once qualify: for any other, that chaining is not guaranteed.
    """
    found = {}
    for name, _seq, children in chained(model, call_counts(model, example)):  # an inner one overrides an outer
        for i, prefix, child in children:
            found.update({sub: (name, i) for sub, _ in child.named_modules(prefix=prefix)})
    return found


class LayerInputs:
    """The inputs a model's layers receive over the batches, for layers taken in forward order.

    Keeps the inputs of the current Sequential child and moves them one child on when the walk
    gets there, so it runs each child about once; a layer outside any anchor costs a forward pass
    from the images. The model may change between calls (the student is refit as the walk goes):
    a child is run only when every layer before it is done.
    """

    def __init__(self, model: nn.Module, batches: list[torch.Tensor]):
        self.model, self.batches = model, batches
        self.modules = dict(model.named_modules())
        self.anchors = anchors(model, batches[0][:2])
        self.at: tuple[str, int] | None = None
        self.cached: list[torch.Tensor] | None = []  # the current child's inputs (None: never called)

    def __call__(self, name: str) -> list[torch.Tensor] | None:
        layer, anchor = self.modules[name], self.anchors.get(name)
        if anchor is None:
            return inputs(self.model, layer, self.batches)
        seq_name, i = anchor
        seq = self.modules[seq_name]
        if self.at == (seq_name, i - 1):
            self.cached = [seq[i - 1](x) for x in self.cached]
        elif self.at != anchor:
            self.cached = inputs(self.model, seq[i], self.batches)
        self.at = anchor
        if self.cached is None:  # the child is never called
            self.at, self.cached = None, []
            return None
        return self.cached if seq[i] is layer else inputs(seq[i], layer, self.cached)


def inputs(model: nn.Module, layer: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor] | None:
    inputs = [layer_input(model, layer, b) for b in batches]
    return None if inputs[0] is None else inputs
