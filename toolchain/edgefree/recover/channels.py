"""Structured pruning: remove whole channels (Torch-Pruning's DepGraph) and whole residual blocks.

DepGraph couples the channels that must go together (a residual addition ties every layer
that writes to it; a depthwise convolution ties its input to its output). One trap: an op it
does not know is taken to keep the channel count, and the CIFAR ResNets' option-A shortcut
zero-pads channels. A group whose dependencies pass through such a pad is therefore left
alone: there only each block's inner channels are pruned, which is provably safe.

Depth: a residual block whose shortcut is the identity can be replaced by the identity. The
blocks whose removal changes the teacher's outputs on the synthetic images least go first.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from tqdm.auto import tqdm

from edgefree.config import ChannelPruning
from edgefree.cost import cost, count_macs
from edgefree.errors import EdgefreeError, MildTargetError, UnreachableTargetError
from edgefree.models import InputSpec
from edgefree.recover.greedy_channels import GreedyImportance
from edgefree.recover.student import PRUNABLE, PrunePlan, Student, set_module

_UNSAFE_OPS = ("ConstantPadNd", "ReflectionPad", "ReplicationPad")  # change the channel count unseen by DepGraph
_SCORE_IMAGES = 256


def _example(model: nn.Module, spec: InputSpec) -> torch.Tensor:
    return spec.example_inputs(2)[0].to(next(model.parameters()).device)


def identity_residual_blocks(model: nn.Module) -> list[str]:
    """Names of the residual blocks whose shortcut is the identity (so the block may become one):
    edgefree's CIFAR ResNets, torchvision's ResNet blocks without downsampling, and inverted
    residuals (MobileNetV2/V3) that use their residual connection."""
    names = []
    for name, m in model.named_modules():
        if not name:
            continue
        if (getattr(m, "use_res_connect", False) is True
                or (hasattr(m, "downsample") and hasattr(m, "conv2") and m.downsample is None)
                or isinstance(getattr(m, "shortcut", None), nn.Identity)):
            names.append(name)
    return names


@torch.no_grad()
def _block_scores(model: nn.Module, blocks: list[str], images: torch.Tensor) -> dict[str, float]:
    """KL divergence of the model's outputs with each block skipped from its outputs with all blocks."""
    reference = F.log_softmax(model(images), 1)
    scores = {}
    for name in blocks:
        handle = model.get_submodule(name).register_forward_hook(lambda _m, inputs, _out: inputs[0])
        try:
            skipped = F.log_softmax(model(images), 1)
        finally:
            handle.remove()
        scores[name] = F.kl_div(skipped, reference, log_target=True, reduction="batchmean").item()
    return scores


def _remove_blocks(model: nn.Module, depth: float, dreams) -> tuple[list[str], dict[str, float]]:
    blocks = identity_residual_blocks(model)
    count = round(depth * len(blocks))
    if not count:
        return [], {}
    if dreams is None:
        raise EdgefreeError("depth pruning ranks residual blocks on the synthetic images: pass dreams to prune()")
    scores = _block_scores(model, blocks, dreams.images[:_SCORE_IMAGES].to(next(model.parameters()).device))
    removed = sorted(sorted(blocks, key=scores.get)[:count], key=blocks.index)
    for name in removed:
        set_module(model, name, nn.Identity())
    return removed, scores


def _importance(name: str):
    return {"l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "bn_scale": tp.importance.BNScaleImportance,
            "taylor": tp.importance.GroupTaylorImportance}[name]()


def _ignored(model: nn.Module, graph: tp.DependencyGraph, config: ChannelPruning) -> list[nn.Module]:
    """Layers whose output channels stay: the filter's, first and last if asked, the classifier, and
    every layer of a group that passes through an op which changes the channel count unseen."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    ignored = {m for name, m in layers if config.filter_fn is not None and not config.filter_fn(m, name)}
    ignored.add(layers[-1][1])  # its outputs are the model's
    if config.keep_first_last_dense:
        ignored.add(layers[0][1])
    for group in graph.get_all_groups(root_module_types=list(PRUNABLE)):
        if any(op in dep.target.name for dep, _ in group for op in _UNSAFE_OPS):
            ignored.update(dep.target.module for dep, _ in group
                           if isinstance(dep.target.module, PRUNABLE) and graph.is_out_channel_pruning_fn(dep.handler))
    return list(ignored)


def _taylor_gradients(model: nn.Module, dreams) -> None:
    """Gradients of the cross-entropy to the dreams' target labels: what the Taylor criterion reads."""
    device = next(model.parameters()).device
    model.zero_grad()
    for batch, labels in zip(dreams.images[:_SCORE_IMAGES * 4].split(_SCORE_IMAGES),
                             dreams.labels[:_SCORE_IMAGES * 4].split(_SCORE_IMAGES)):
        F.cross_entropy(model(batch.to(device)), labels.to(device)).backward()


def _kept_count(channels: int, ratio: float, round_to: int) -> int:
    """Channels a layer keeps: ``1 - ratio`` of them, rounded to a multiple of ``round_to`` (at least one multiple)."""
    if channels <= round_to:
        return channels
    return min(channels, max(round_to, round(channels * (1 - ratio) / round_to) * round_to))


def _grouped(group) -> bool:
    """A group through a grouped (not depthwise) convolution: removing single channels would break its groups."""
    return any(isinstance(dep.target.module, (nn.Conv1d, nn.Conv2d))
               and 1 < dep.target.module.groups < dep.target.module.out_channels for dep, _ in group)


def _out_layers(graph: tp.DependencyGraph, group, names: dict) -> list[str]:
    """The conv and linear layers whose output channels ``group`` removes: the names a width is given by."""
    return [names[dep.target.module] for dep, _ in group
            if isinstance(dep.target.module, PRUNABLE) and graph.is_out_channel_pruning_fn(dep.handler)]


@dataclass
class ChannelGroup:
    """Channels that go together (one DepGraph group): ``layers`` lose output channels, ``size`` of them,
    least important first in ``ranked``; ``operations(k)`` are the pruning operations that remove the
    ``k`` least important, as (module name, operation, indices), without applying them."""

    layers: list[str]
    size: int
    ranked: list[int]
    operations: Callable[[int], list[tuple[str, str, list[int]]]]


def _ranked_groups(model: nn.Module, example: torch.Tensor, config: ChannelPruning, dreams,
                   scored: dict | None = None):
    """``(graph, names, [(group, scores)])``: every group channel pruning may narrow in ``model``, ranked.
    ``scored`` keeps each group's scores by its root layer, for further copies of the same model (a search
    over ratios): a criterion measured on the dreams is measured once."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {m: name for name, m in model.named_modules()}
    groups = [group for group in graph.get_all_groups(ignored_layers=_ignored(model, graph, config),
                                                      root_module_types=list(PRUNABLE)) if not _grouped(group)]
    scored = {} if scored is None else scored
    keys = [(names[group[0].dep.target.module], group[0].dep.handler.__name__) for group in groups]
    if any(key not in scored for key in keys):
        if config.importance in ("taylor", "greedy") and dreams is None:
            raise EdgefreeError(f"channel importance {config.importance!r} is measured on the synthetic images: "
                                "pass dreams to prune()")
        if config.importance == "taylor":
            _taylor_gradients(model, dreams)
        importance = (GreedyImportance(model, graph, dreams.images) if config.importance == "greedy"
                      else _importance(config.importance))
        scored.update((key, importance(group)) for key, group in zip(keys, groups))
    ranked = [(group, scored[key]) for key, group in zip(keys, groups) if scored[key] is not None]
    return graph, names, ranked


def channel_groups(model: nn.Module, spec: InputSpec, config: ChannelPruning, dreams=None) -> list[ChannelGroup]:
    """The groups of ``model`` that channel pruning with ``config`` may narrow, each ranked by its importance.
    ``model`` itself is left unchanged (its gradients aside, for "taylor")."""
    graph, names, ranked = _ranked_groups(model, _example(model, spec), config, dreams)
    found = []
    for group, scores in ranked:
        root, order = group[0].dep, torch.argsort(scores).tolist()

        def operations(k: int, root=root, order=order) -> list[tuple[str, str, list[int]]]:
            if not k:
                return []
            pruning = graph.get_pruning_group(root.target.module, root.handler, order[:k])
            return [(names[dep.target.module], dep.handler.__name__, sorted(int(i) for i in idxs))
                    for dep, idxs in pruning if dep.target.module in names]

        found.append(ChannelGroup(_out_layers(graph, group, names), len(scores), order, operations))
    return found


def _prune_at(model: nn.Module, example: torch.Tensor, config: ChannelPruning, ratio: float,
              dreams, widths: dict[str, int] | None = None, scored: dict | None = None) -> tuple[nn.Module, list]:
    """A copy of ``model`` with ``ratio`` of every prunable group's channels removed (the least important,
    rounded to ``config.round_to``), and the operations applied. With ``widths`` (layer name -> channels
    kept), each group keeps the count given for one of its output layers instead (all, if none is named)."""
    model = copy.deepcopy(model).eval()
    if ratio == 0 and not widths:
        return model, []
    graph, names, ranked = _ranked_groups(model, example, config, dreams, scored)
    plans = []  # (root layer, its out-channel pruning function, indices): ranked before anything changes
    for group, scores in ranked:
        if widths is None:
            keep = _kept_count(len(scores), ratio, config.round_to)
        else:
            keep = next((widths[n] for n in _out_layers(graph, group, names) if n in widths), len(scores))
        if keep < len(scores):
            root = group[0].dep
            plans.append((root.target.module, root.handler, torch.argsort(scores)[:len(scores) - keep].tolist()))
    operations = []
    with torch.no_grad():
        for layer, handler, idxs in plans:
            group = graph.get_pruning_group(layer, handler, idxs)
            for dep, group_idxs in group:
                if dep.target.module in names:
                    operations.append((names[dep.target.module], dep.handler.__name__, sorted(int(i) for i in group_idxs)))
            group.prune()
    model.zero_grad(set_to_none=True)
    return model, operations


_MAX_RATIO = 0.95  # the most of each layer's channels the macs-target search removes
_MACS_SLACK = 0.02  # a target this far (as a fraction of the teacher's multiply-adds) below the lowest is refused


def lowest_macs_kept(model: nn.Module, spec: InputSpec, config: ChannelPruning) -> float:
    """The fraction of ``model``'s multiply-adds left when the search removes the most it may
    (``_MAX_RATIO`` of each prunable layer's channels; residual blocks aside). The counts depend on the
    ratio only, never on which channels go, so the weights' L2 ranks them here."""
    example = _example(model, spec)
    student, _ = _prune_at(model, example, dataclasses.replace(config, importance="l2"), _MAX_RATIO, None)
    return count_macs(student, example) / count_macs(model, example)


def check_channel_pruning(model: nn.Module, spec: InputSpec, config: ChannelPruning) -> None:
    """Refuse, before any work, channel pruning that cannot do what ``config`` asks of ``model``: a
    ``depth`` for a model without identity residual blocks, a ``macs_target`` below the lowest
    reachable (depth 0; with depth the search's result is checked after it)."""
    _check_depth(model, config)
    if config.macs_target is not None and not config.depth:
        lowest = lowest_macs_kept(model, spec, config)
        if config.macs_target < lowest - _MACS_SLACK:
            raise UnreachableTargetError(f"--macs-target {config.macs_target:g} cannot be reached: removing "
                                f"{100 * _MAX_RATIO:.0f}% of every prunable layer's channels still keeps "
                                f"{lowest:.2f}x the teacher's multiply-adds (the classifier, the layers left "
                                f"dense and rounding to --round-to stay); pass --macs-target {_ceil2(lowest)} or more")


def _check_depth(model: nn.Module, config: ChannelPruning) -> None:
    if config.depth and not identity_residual_blocks(model):
        raise EdgefreeError(f"--depth {config.depth:g} removes residual blocks whose shortcut is the identity, and "
                            "this model has none: leave out --depth (channels are still pruned)")


def _ceil2(value: float) -> str:
    return f"{math.ceil(value * 100) / 100:.2f}"


def _search_ratio(model: nn.Module, example: torch.Tensor, config: ChannelPruning, target_macs: float, within: float,
                  dreams, progress: bool, scored: dict, tried: list) -> float:
    """The channel ratio whose student's multiply-adds come closest to ``target_macs`` (bisection) among those
    within ``within`` of it or below; where none is, the closest of all. Channels go in steps, so the count
    is not monotone in the ratio: a student over the target may lie nearer to it than one under. Each
    multiply-add count it met is appended to ``tried``."""
    low, high, found = 0.0, 0.95, []
    for _ in tqdm(range(8), desc="macs target", unit="try", disable=not progress, leave=False):
        ratio = (low + high) / 2
        macs = count_macs(_prune_at(model, example, config, ratio, dreams, scored=scored)[0], example)
        tried.append(macs)
        found.append((abs(macs - target_macs), ratio, macs))
        low, high = (ratio, high) if macs > target_macs else (low, ratio)
    fitting = [f for f in found if f[2] <= target_macs + within]
    return min(fitting or found)[1]


def _target_slack(macs_target: float) -> float:
    """How far (a fraction of the teacher's multiply-adds) above ``macs_target`` a student still reaches it."""
    return max(_MACS_SLACK, 0.1 * macs_target)


def _check_not_too_mild(config: ChannelPruning, teacher_macs: int, tried: list, removed: list, operations: list):
    """Refuse a MACs target at which the search removed nothing although smaller students exist: channels
    go in steps of ``round_to``, and the target lies above the mildest step (``MildTargetError``)."""
    smaller = [m / teacher_macs for m in tried if m < teacher_macs]
    if config.macs_target is None or removed or operations or not smaller:
        return
    mildest = max(smaller)
    raise MildTargetError(f"--macs-target {config.macs_target:g} removes no channel from this model: channels go "
                          f"in steps of --round-to {config.round_to}, and the mildest step the search met keeps "
                          f"{mildest:.2f}x the teacher's multiply-adds; pass --macs-target {_floor2(mildest)} or "
                          "less, or a smaller --round-to")


def _floor2(value: float) -> str:
    return f"{math.floor(value * 100) / 100:.2f}"


def prune_channels(model: nn.Module, spec: InputSpec, config: ChannelPruning, dreams=None,
                   progress: bool = False, layout: dict | None = None) -> Student:
    """Remove ``config.depth`` of the identity residual blocks, then channels, from a copy of ``model``
    (which takes inputs of ``spec``). ``layout`` replaces both choices with ones made elsewhere
    (``edgefree.latency_budget``): ``{"blocks": [names removed], "widths": {layer name: channels kept}}``."""
    started = time.perf_counter()
    example = _example(model, spec)
    teacher = cost(model, example)
    base = copy.deepcopy(model).eval()
    if layout is not None:
        removed, scores, ratio = list(layout["blocks"]), {}, None
        for name in removed:
            set_module(base, name, nn.Identity())
        student, operations = _prune_at(base, example, config, 0.0, dreams, widths=dict(layout["widths"]))
    else:
        _check_depth(base, config)  # the pipeline checks before any work; a caller of this stage, here
        removed, scores = _remove_blocks(base, config.depth, dreams)
        ratio, scored, tried = config.ratio, {}, []
        if config.macs_target is not None:
            ratio = _search_ratio(base, example, config, config.macs_target * teacher["macs"],
                                  _target_slack(config.macs_target) * teacher["macs"], dreams, progress, scored, tried)
        student, operations = _prune_at(base, example, config, ratio, dreams, scored=scored)
        _check_not_too_mild(config, teacher["macs"], tried, removed, operations)
        reached = count_macs(student, example) / teacher["macs"]
        if config.macs_target is not None and reached > config.macs_target + _target_slack(config.macs_target):
            raise UnreachableTargetError(f"--macs-target {config.macs_target:g} cannot be reached: the closest the search came "
                                f"is {reached:.2f}x the teacher's multiply-adds (channel ratio {ratio:.2f}); pass "
                                f"--macs-target {_ceil2(reached)} or more")
    if layout is None and not removed and not operations and (config.ratio or config.macs_target):
        widest = max((m.out_channels for m in base.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))), default=0)
        if 1 < widest <= config.round_to:  # channels go in steps of round_to: no layer has one to spare
            raise EdgefreeError(f"channel pruning removes channels in steps of --round-to {config.round_to}, and the "
                                f"widest layer of this model has {widest}: pass --round-to {max(1, widest // 4)} "
                                "or less")
        raise EdgefreeError("channel pruning found nothing it may remove in this model: every layer is left alone "
                            "(the classifier, --keep-first-last-dense, filter_fn, or channels tied through an "
                            "operation that changes their count); use --pruning magnitude")
    kept = cost(student, example)
    stats = {"seconds": time.perf_counter() - started, "ratio": ratio, "removed_blocks": removed,
             "block_scores": scores, "teacher_macs": teacher["macs"], "teacher_params": teacher["params"],
             **kept, "macs_kept": kept["macs"] / teacher["macs"]}
    return Student(student, PrunePlan(channels=operations, removed_blocks=removed), stats, spec)
