"""``latency_budget()``: channel widths per layer group, and residual blocks, chosen for a p50 budget.

The student must run in at most ``ratio`` times the teacher's p50 on the target's runtime and
precision. Instead of one ratio for every layer (``ChannelPruning(ratio=...)``), as HALP and SPDY do:

1. **Latency tables** (``edgefree.latency_tables``): every conv and linear layer whose width a
   group sets is measured alone at each candidate width, and the residual addition of every
   identity block; the teacher is measured whole. On an x86-64 target that is the p50 on this
   machine; on an aarch64 one, guest instructions per inference counted under QEMU as the target's
   core (when the emulator is set up), the ratio of counts standing in for the ratio of p50s.
   A student's predicted cost is ``offset + scale x`` the sum of its table entries (each less the
   cost of an empty call) ``+ node_cost x`` the layers it keeps, the three fixed by the teacher, the
   narrowest student and the thin one (narrowest widths, every block kept), all measured whole:
   ``offset`` holds what the tables do not (stem, pooling), ``scale`` what one-layer models pay
   that a whole model does not (INT8: the conversions at each layer's input and output),
   ``node_cost`` what a whole model pays per layer that one-layer models do not show.
2. **Sensitivities**, on the dreams: the KL divergence of the teacher's outputs when only one
   group is narrowed to a width (its least important channels' inputs zeroed, which is exactly
   what removing them does to the outputs), or only one block is skipped.
3. **A multiple-choice knapsack** (dynamic programme over a discretised latency axis) picks one
   option per item (a group's width; an identity block with its inner group: removed or kept at
   a width) of least total sensitivity whose latency fits. Layers shared by two groups make the
   latency not quite separable: the programme is solved around the last choice until it
   repeats, every choice is checked with the exact sum, and an over-budget one is repaired by
   the cheapest steps. A budget that even the cheapest student (every block removed, each group
   at its cheapest width: timed tables need not fall with width) misses is refused, with the
   closest reachable ratio.
4. **The choice measured whole** (untrained: its weights do not change its cost): a student that
   measures over the target less ``MARGIN``, or more than ``SLACK`` under it, moves the budget by
   that much (from the second miss on, along the line through the two nearest tries) and is
   searched again, at most ``CORRECTIONS`` times (NetAdapt measures each proposal the same way);
   summed tables miss what a whole model does differently (kernels chosen per shape, fusions
   across layers). The least sensitive choice measured within the target is kept; if none is, a
   warning names the closest.

The bench checks the prediction at the end (``check``): the student's measured p50 over the
teacher's on the same runtime and precision (under QEMU: its instruction count over the teacher's).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgefree.bench import runner
from edgefree.config import ChannelPruning, LatencyTarget, MagnitudePruning
from edgefree.errors import EdgefreeError, warn
from edgefree.latency_tables import CALL, Meter, layer_tables, models_latency
from edgefree.models import Teacher
from edgefree.recover.channels import _block_scores, channel_groups, identity_residual_blocks
from edgefree.recover.prune import PRUNABLE, Student, prune
from edgefree.targets import RUNTIME_OF_FORMAT, load_target

UNITS = 2000  # the knapsack's latency axis: the teacher's p50 in this many steps
MIN_SCALE, MAX_SCALE = 0.25, 4.0  # a calibration outside these says the tables and the whole models disagree
CORRECTIONS = 3  # searches again after the first choice, each with the budget moved by what the whole student measured
SLACK = 0.03  # a student measured this share or less under the target is kept without searching again
MIN_STEP = 0.002  # of the teacher's cost: the least a budget moves between searches
# what a measured student must stay under the target by: counts under QEMU repeat to a few hundredths of a percent,
# native p50s move by a percent or so between processes (the bench measures again in its own)
MARGIN = {"counted": 0.002, "timed": 0.01}


@dataclass
class _Layer:
    name: str
    signature: dict
    cin: int
    cout: int
    out_group: int | None = None
    in_group: int | None = None
    depthwise: bool = False
    table: dict = field(default_factory=dict)


@dataclass
class _Item:
    """One choice of the knapsack (a block or a group, ``label``): ``options`` are (group widths, blocks removed,
    sensitivity)."""

    label: str
    options: list[tuple[dict, frozenset, float]]


def _signature(module: nn.Module, x: torch.Tensor) -> dict:
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "rows": int(np.prod(x.shape[:-1]))}
    spatial = list(x.shape[2:])
    kernel, dilation = list(module.kernel_size), list(module.dilation)
    padding = module.padding
    if isinstance(padding, str):  # "same" or "valid"
        padding = [d * (k - 1) // 2 for k, d in zip(kernel, dilation)] if padding == "same" else [0] * len(kernel)
    return {"kind": "conv", "kernel": kernel, "stride": list(module.stride), "pads": list(padding) * 2,
            "dilation": dilation, "spatial": spatial,
            "depthwise": module.groups > 1 and module.groups == module.in_channels == module.out_channels}


@torch.no_grad()
def _shapes(model: nn.Module, example: torch.Tensor, names: list[str]) -> dict[str, tuple]:
    """Input (conv/linear) or output (blocks) of each named module on ``example``."""
    seen, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        handles.append(modules[name].register_forward_hook(
            lambda m, inputs, out, name=name: seen.__setitem__(name, (inputs[0], out))))
    try:
        model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return seen


def _choices(size: int, round_to: int, levels: int) -> list[int]:
    """Widths a group may keep: multiples of ``round_to`` up to ``size``, at most ``levels`` of them, widest first."""
    steps = list(range(round_to, size, round_to)) + [size]
    if len(steps) > levels:
        steps = [steps[round(i * (len(steps) - 1) / (levels - 1))] for i in range(levels)]
    return sorted(set(steps), reverse=True)


def _layer_widths(layer: _Layer, groups, widths: dict) -> tuple[int, int]:
    """``(in, out)`` channels of ``layer`` when each group ``i`` keeps ``widths[i]`` (absent: all)."""
    cin, cout = layer.cin, layer.cout
    if layer.out_group is not None:
        cout = widths.get(layer.out_group, groups[layer.out_group].size)
    if layer.depthwise:
        return cout, cout
    if layer.in_group is not None:
        size = groups[layer.in_group].size
        cin = layer.cin * widths.get(layer.in_group, size) // size  # a flattened input: in proportion
    return cin, cout


class _Model:
    """The latency model: tables, groups, blocks, and the exact predicted cost of any choice.

    A choice's prediction is ``offset + scale x`` its table entries' sum ``+ node_cost x`` the layers
    (and residual additions) it keeps. Measured whole, the teacher, the narrowest student and the
    thin one (every group at its narrowest, every block kept) fix the three: a one-layer entry also
    carries what the whole model does not pay per layer (INT8: quantizing its input and dequantizing
    its output), which ``scale`` < 1 takes out in proportion; a runtime may pay per layer inside a
    whole model what a one-layer model does not show beside an empty call (OpenVINO: layout changes
    between layers), which ``node_cost`` holds. Without blocks to remove ``node_cost`` is 0 and the
    teacher and the narrowest student fix the other two; without any whole figure ``scale`` is 1 and
    ``offset`` the teacher's remainder (what the tables do not hold)."""

    def __init__(self, layers, groups, choices, blocks, adds, call, teacher_cost):
        self.layers, self.groups, self.choices, self.blocks, self.adds = layers, groups, choices, blocks, adds
        self.call, self.teacher_cost = call, teacher_cost
        self.full = self.tables_cost({}, frozenset())
        self.scale, self.node_cost, self.remainder = 1.0, 0.0, teacher_cost - self.full

    def narrowest(self) -> tuple[dict, frozenset]:
        return _narrowest(self.choices, self.blocks)

    def lowest(self) -> tuple[dict, frozenset, float]:
        """The least predicted cost the search can reach, and its choice: from the narrowest choice, each group
        moved to its cheapest width while that lowers the prediction (timed tables need not fall with width)."""
        widths, removed = self.narrowest()
        cost, moved = self.predict(widths, removed), True
        while moved:
            moved = False
            for i, options in enumerate(self.choices):
                for w in options:
                    trial = {**widths, i: w}
                    here = self.predict(trial, removed)
                    if here < cost - 1e-12:
                        widths, cost, moved = trial, here, True
        return widths, removed, cost

    def thin(self) -> tuple[dict, frozenset]:
        return self.narrowest()[0], frozenset()

    def nodes(self, removed: frozenset) -> int:
        """Layers and residual additions a choice that removes ``removed`` keeps."""
        return (sum(not any(layer.name.startswith(b + ".") for b in removed) for layer in self.layers)
                + sum(b not in removed for b in self.adds))

    def calibrate(self, narrowest_cost: float, thin_cost: float | None = None) -> float | None:
        """Fit ``scale``, ``node_cost`` and ``offset`` to the teacher, the narrowest and the thin student measured
        whole (without the thin one, or where it gives a negative ``node_cost``: ``scale`` and ``offset`` from the
        other two); the scale, or None (kept at 1) where the figures cannot fix it (``MIN_SCALE`` to ``MAX_SCALE``)."""
        narrowest, full_nodes = self.narrowest(), self.nodes(frozenset())
        narrowest_tables, narrowest_nodes = self.tables_cost(*narrowest), self.nodes(narrowest[1])
        thin_tables = self.tables_cost(*self.thin())
        if thin_cost is not None and thin_tables < self.full and narrowest_nodes < full_nodes:
            scale = (self.teacher_cost - thin_cost) / (self.full - thin_tables)
            node_cost = ((thin_cost - narrowest_cost - scale * (thin_tables - narrowest_tables))
                         / (full_nodes - narrowest_nodes))
            if MIN_SCALE <= scale <= MAX_SCALE and node_cost >= 0:
                self.scale, self.node_cost = scale, node_cost
                self.remainder = self.teacher_cost - scale * self.full - node_cost * full_nodes
                return scale
        span = self.full - narrowest_tables
        scale = (self.teacher_cost - narrowest_cost) / span if span > 0 else 0.0
        if not MIN_SCALE <= scale <= MAX_SCALE:
            return None
        self.scale, self.node_cost, self.remainder = scale, 0.0, self.teacher_cost - scale * self.full
        return scale

    def tables_cost(self, widths: dict, removed: frozenset) -> float:
        total = 0.0
        for layer in self.layers:
            if not any(layer.name.startswith(b + ".") for b in removed):
                total += max(layer.table[_layer_widths(layer, self.groups, widths)] - self.call, 0.0)
        return total + sum(max(ms - self.call, 0.0) for b, ms in self.adds.items() if b not in removed)

    def predict(self, widths: dict, removed: frozenset) -> float:
        return (self.remainder + self.scale * self.tables_cost(widths, removed)
                + (self.node_cost * self.nodes(removed) if self.node_cost else 0.0))


def _narrowest(choices: list[list[int]], blocks: list[str]) -> tuple[dict, frozenset]:
    """The narrowest choice: every group at its last (narrowest) width, every identity block removed."""
    return {i: c[-1] for i, c in enumerate(choices)}, frozenset(blocks)


def _layout(groups, blocks, widths: dict, removed: frozenset) -> dict:
    """``prune``'s layout of a choice: the blocks removed, and each narrowed layer's width."""
    return {"blocks": [b for b in blocks if b in removed],
            "widths": {name: widths[i] for i, g in enumerate(groups) if widths.get(i, g.size) < g.size
                       for name in g.layers if not any(name.startswith(b + ".") for b in removed)}}


def _measure(teacher: Teacher, config: LatencyTarget, channel: ChannelPruning, meter: Meter, dreams,
             progress: bool) -> tuple[_Model, list, dict]:
    model = copy.deepcopy(teacher.module).eval().cpu()
    example = teacher.spec.example_inputs(2)[0]
    groups = [g for g in channel_groups(model, teacher.spec, channel, dreams)
              if len(_choices(g.size, channel.round_to, config.widths)) > 1]
    choices = [_choices(g.size, channel.round_to, config.widths) for g in groups]
    out_group = {name: i for i, g in enumerate(groups) for name in g.layers}
    modules = dict(model.named_modules())
    in_group = {}
    for i, g in enumerate(groups):
        for name, op, _ in g.operations(1):
            if op == "prune_in_channels" and isinstance(modules.get(name), PRUNABLE) and name not in g.layers:
                in_group[name] = i
    blocks = identity_residual_blocks(model) if config.blocks else []
    prunable = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    touched = [n for n in prunable if n in out_group or n in in_group or any(n.startswith(b + ".") for b in blocks)]
    shapes = _shapes(model, example, touched + blocks)
    layers = []
    for name in touched:
        m = modules[name]
        cin = m.in_features if isinstance(m, nn.Linear) else m.in_channels
        cout = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        layers.append(_Layer(name, _signature(m, shapes[name][0]), cin, cout, out_group.get(name), in_group.get(name),
                             getattr(m, "groups", 1) > 1 and m.groups == cin == cout))
    if not layers:
        raise EdgefreeError("channel pruning found nothing it may narrow or remove in this model, so no latency "
                            "target can be met: use --pruning magnitude")
    requests = []
    for layer in layers:  # every (in, out) width a layer can take: the product of its groups' choices
        ins = [None] if layer.in_group is None else choices[layer.in_group]
        outs = [None] if layer.out_group is None else choices[layer.out_group]
        requests.append((layer.signature, sorted({_layer_widths(layer, groups, {
            k: v for k, v in ((layer.in_group, i), (layer.out_group, o)) if k is not None}) for i in ins for o in outs})))
    for b in blocks:
        out = shapes[b][1]
        requests.append(({"kind": "add", "spatial": list(out.shape[2:])}, [(out.shape[1], out.shape[1])]))
    requests.append((CALL, [(1, 1)]))
    tables, measured = layer_tables(requests, meter, progress)
    for layer, table in zip(layers, tables):
        layer.table = table
    adds = {b: table[shapes[b][1].shape[1], shapes[b][1].shape[1]] for b, table in zip(blocks, tables[len(layers):])}
    narrow_widths, every_block = _narrowest(choices, blocks)
    wholes = [model, prune(teacher, channel, dreams, layout=_layout(groups, blocks, narrow_widths, every_block)).model]
    if blocks:  # the thin student: every group at its narrowest, every block kept
        wholes.append(prune(teacher, channel, dreams, layout=_layout(groups, blocks, narrow_widths, frozenset())).model)
    teacher_cost, narrowest_cost, *thin_cost = models_latency(wholes, example, meter)
    lat = _Model(layers, groups, choices, blocks, adds, tables[-1][1, 1], teacher_cost)
    scale = lat.calibrate(narrowest_cost, thin_cost[0] if thin_cost else None)
    if scale is None:
        warn(f"the latency tables ({meter.describe()}) and the whole models disagree: the narrowest student measured "
             f"{narrowest_cost:.4g} {meter.unit} against the teacher's {lat.teacher_cost:.4g}, which the tables' "
             "sums cannot fit; predictions use the tables uncalibrated")
    return lat, groups, {"entries": sum(len(t) for t in tables), "measured_now": measured, "unit": meter.unit,
                         "scale": scale, "node_cost": lat.node_cost, "narrowest_cost": narrowest_cost,
                         "thin_cost": thin_cost[0] if thin_cost else None}


@torch.no_grad()
def _group_sensitivity(model: nn.Module, groups, choices, images: torch.Tensor, progress: bool) -> list[dict]:
    """KL divergence of ``model``'s outputs on ``images`` with each group alone narrowed to each width.

    Removing channels from a group changes the outputs only through the layers that read them:
    zeroing those inputs of every (non-depthwise) conv and linear layer gives the same outputs
    without rebuilding the model."""
    reference = F.log_softmax(model(images), 1)
    modules = dict(model.named_modules())
    found = []
    total = sum(len(c) - 1 for c in choices)
    with tqdm(total=total, desc="sensitivity", unit="width", disable=not progress, leave=False) as bar:
        for group, widths in zip(groups, choices):
            scores = {group.size: 0.0}
            for width in widths[1:]:
                saved = []
                for name, op, idxs in group.operations(group.size - width):
                    m = modules[name]
                    if op == "prune_in_channels" and isinstance(m, PRUNABLE) and getattr(m, "groups", 1) == 1:
                        saved.append((m.weight, m.weight.detach().clone()))
                        m.weight[:, idxs] = 0
                try:
                    narrowed = F.log_softmax(model(images), 1)
                finally:
                    for weight, value in reversed(saved):  # a layer listed twice gets its first copy back last
                        weight.copy_(value)
                scores[width] = F.kl_div(narrowed, reference, log_target=True, reduction="batchmean").item()
                bar.update()
            found.append(scores)
    return found


def _items(lat: _Model, groups, sensitivity: list[dict], block_scores: dict) -> list[_Item]:
    """An item per identity block (removed, or kept with its one inner group at each width), and per other group."""
    def inside(i: int, block: str) -> bool:
        names = groups[i].layers + [layer.name for layer in lat.layers if layer.in_group == i]
        return all(n.startswith(block + ".") for n in names)

    items, claimed = [], set()
    for block in lat.blocks:
        inner = [i for i in range(len(groups)) if i not in claimed and inside(i, block)]  # nested: the outer's
        removed = (({}, frozenset([block]), block_scores[block]))
        if len(inner) == 1:
            i = inner[0]
            claimed.add(i)
            items.append(_Item(block, [({i: w}, frozenset(), sensitivity[i][w]) for w in lat.choices[i]] + [removed]))
        else:
            items.append(_Item(block, [({}, frozenset(), 0.0), removed]))
    for i, group in enumerate(groups):
        if i not in claimed:
            items.append(_Item(group.layers[0], [({i: w}, frozenset(), sensitivity[i][w]) for w in lat.choices[i]]))
    return items


def _compose(items: list[_Item], picks) -> tuple[dict, frozenset, float]:
    widths, removed, total = {}, frozenset(), 0.0
    for item, k in zip(items, picks):
        w, r, s = item.options[k]
        widths, removed, total = {**widths, **w}, removed | r, total + s
    return widths, removed, total


def _knapsack(costs: list[list[float]], values: list[list[float]], budget: float, unit: float) -> list[int] | None:
    """One option per item, least total value, total cost <= ``budget`` (costs rounded up to ``unit``); None: none fits."""
    base = sum(min(c) for c in costs)
    capacity = math.floor((budget - base) / unit + 1e-9)
    if capacity < 0:
        return None
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    choices, units = [], []
    for cost, value in zip(costs, values):
        low = min(cost)
        steps = [math.ceil((c - low) / unit - 1e-9) for c in cost]
        new, arg = np.full_like(best, np.inf), np.full(capacity + 1, -1)
        for k, (step, v) in enumerate(zip(steps, value)):
            if step > capacity:
                continue
            candidate = best[:capacity + 1 - step] + v
            better = candidate < new[step:]
            new[step:][better], arg[step:][better] = candidate[better], k
        best = new
        choices.append(arg)
        units.append(steps)
    j = int(np.argmin(best))
    if not np.isfinite(best[j]):
        return None
    picks = []
    for arg, steps in zip(reversed(choices), reversed(units)):
        k = int(arg[j])
        picks.append(k)
        j -= steps[k]
    return picks[::-1]


def _search(lat: _Model, items: list[_Item], budget: float) -> tuple[list[int], dict]:
    """The knapsack solved around the last choice until it repeats; the best choice within budget, repaired if none."""
    unit = lat.teacher_cost / UNITS
    picks = [0] * len(items)  # every item's first option: full width, kept
    best, seen, rounds = None, [], 0
    while picks not in seen and rounds < 10:
        seen.append(picks)
        rounds += 1
        widths, removed, _ = _compose(items, picks)
        here = lat.predict(widths, removed)
        costs = []
        for i, item in enumerate(items):
            costs.append([lat.predict(*_compose(items, picks[:i] + [k] + picks[i + 1:])[:2]) - here
                          for k in range(len(item.options))])
        chosen = _knapsack(costs, [[o[2] for o in item.options] for item in items], budget - here, unit)
        if chosen is None:
            break
        widths, removed, value = _compose(items, chosen)
        if lat.predict(widths, removed) <= budget and (best is None or value < best[1]):
            best = (chosen, value)
        picks = chosen
    repaired = best is None
    if repaired:
        picks = _repair(lat, items, picks, budget)
    else:
        picks = best[0]
    return picks, {"rounds": rounds, "repaired": repaired}


def _measured_ratio(teacher: Teacher, student: nn.Module, lat: _Model, meter: Meter) -> float:
    """The untrained ``student``'s cost over the teacher's, both measured whole (under QEMU the teacher's count is
    the one the model holds: counts repeat; natively the two are timed together, in interleaved rounds)."""
    example = teacher.spec.example_inputs(2)[0]
    if meter.cpu is not None:
        return models_latency([student], example, meter)[0] / lat.teacher_cost
    teacher_ms, student_ms = models_latency([teacher.module, student], example, meter)
    return student_ms / teacher_ms


def _next_budget(tried: list[dict], aim: float, budget: float) -> float:
    """The budget ratio of the next search: where the line through the two tries measured nearest ``aim``
    (measured against predicted) reaches it; with one try, or a line that does not rise, ``budget`` moved by the
    last try's miss."""
    if len(tried) >= 2:
        a, b = sorted(tried, key=lambda t: abs(t["measured_ratio"] - aim))[:2]
        run = b["predicted_ratio"] - a["predicted_ratio"]
        slope = (b["measured_ratio"] - a["measured_ratio"]) / run if abs(run) > 1e-9 else 0.0
        if slope > 0:
            return a["predicted_ratio"] + (aim - a["measured_ratio"]) / slope
    return budget - (tried[-1]["measured_ratio"] - aim)


def _corrected_search(lat: _Model, items: list[_Item], groups, config: LatencyTarget, channel: ChannelPruning,
                      teacher: Teacher, dreams, meter: Meter, floor: float, progress: bool) -> tuple[dict, dict]:
    """The search, its choice measured whole and searched again with the budget moved by what the measurement
    missed (over the target less ``MARGIN``: lowered; more than ``SLACK`` under it: raised; from the second miss
    on, along the line through the two tries measured nearest, ``_next_budget``), at most ``CORRECTIONS`` times;
    never below ``floor``, the least cost the tables predict (``_Model.lowest``).

    Tables summed are not the whole model (kernels chosen per shape, fusions across layers): the choice kept is
    the least sensitive one measured within the target less the margin, else the one measured closest to it."""
    aim = config.ratio * (1 - MARGIN["timed" if meter.cpu is None else "counted"])
    budget = config.ratio * lat.teacher_cost
    tried, search = [], {}
    with tqdm(total=CORRECTIONS + 1, desc="latency check", unit="student", disable=not progress, leave=False) as bar:
        step, searches = 0.0, 0
        while len(tried) <= CORRECTIONS and searches < 3 * (CORRECTIONS + 1):
            searches += 1
            picks, search = _search(lat, items, max(budget, floor))
            if any(t["picks"] == picks for t in tried):  # a move too small to change the choice: move on as far
                if not step or (step < 0 and budget < floor):
                    break
                budget += step
                continue
            widths, removed, value = _compose(items, picks)
            narrowed = prune(teacher, channel, dreams, layout=_layout(groups, lat.blocks, widths, removed)).model
            measured = _measured_ratio(teacher, narrowed, lat, meter)
            tried.append({"picks": picks, "budget_ratio": budget / lat.teacher_cost, "sensitivity_kl": value,
                          "predicted_ratio": lat.predict(widths, removed) / lat.teacher_cost, "measured_ratio": measured})
            bar.update()
            if (1 - SLACK) * config.ratio <= measured <= aim:
                break
            step = _next_budget(tried, aim, budget / lat.teacher_cost) * lat.teacher_cost - budget
            step = math.copysign(max(abs(step), MIN_STEP * lat.teacher_cost), step)
            budget += step
    within = [t for t in tried if t["measured_ratio"] <= aim]
    chosen = (min(within, key=lambda t: t["sensitivity_kl"]) if within
              else min(tried, key=lambda t: t["measured_ratio"]))
    search["corrections"] = [{k: v for k, v in t.items() if k != "picks"} for t in tried]
    if chosen["measured_ratio"] > config.ratio:  # said now, before minutes of recovery, and whether or not it is benched
        at_floor = min(t["budget_ratio"] for t in tried) * lat.teacher_cost <= floor  # as cheap as the tables go
        blocks = "" if config.blocks or not identity_residual_blocks(teacher.module) else \
            ", or let it remove blocks (latency_target.blocks = true)"
        fix = (f"the layer tables allow nothing cheaper (their floor: {floor / lat.teacher_cost:.3f}x), so a lower "
               f"--latency-target cannot help: accept it{blocks}" if at_floor else
               "pass a lower --latency-target to be sure")
        warn(f"latency target {config.ratio:.2f}x not reached: after {len(tried)} searches the closest student "
             f"measured whole at {chosen['measured_ratio']:.3f}x the teacher's "
             f"{'p50' if meter.cpu is None else 'instructions'} on {meter.runtime} {meter.precision} (predicted "
             f"{chosen['predicted_ratio']:.3f}x); the build goes on with it: {fix}")
    return chosen, search


def _repair(lat: _Model, items: list[_Item], picks: list[int], budget: float) -> list[int]:
    """Steps of the least sensitivity added per unit of predicted cost saved, until the prediction fits, or
    until no single step lowers it (timed tables need not fall with width, so this descent can stop above a
    budget at the floor that ``_Model.lowest`` reached by another path): the choice is then the one of
    lowest predicted cost it reached, which the caller measures whole against the target like any other."""
    picks = list(picks)
    while True:
        widths, removed, value = _compose(items, picks)
        here = lat.predict(widths, removed)
        if here <= budget:
            return picks
        step = None
        for i, item in enumerate(items):
            for k in range(len(item.options)):
                trial = picks[:i] + [k] + picks[i + 1:]
                w, r, v = _compose(items, trial)
                saved = here - lat.predict(w, r)
                if saved > 1e-12:
                    score = (v - value) / saved
                    if step is None or score < step[0]:
                        step = (score, trial)
        if step is None:
            return picks
        picks = step[1]


def _resolve(config: LatencyTarget, target_name: str) -> tuple[Meter, str]:
    """The meter of ``target_name``'s tables, and their label: an aarch64 target's are counted under QEMU as its
    core when the arm64 environment holds the runtime (else timed natively, a stand-in said so on the console)."""
    target = load_target(target_name)
    runtime = config.runtime or RUNTIME_OF_FORMAT[target.formats[0]]
    if runtime not in runner.OPENERS:
        raise EdgefreeError(f"latency tables are measured with {', '.join(runner.OPENERS)}, and target {target.name}'s "
                            f"first runtime is {runtime}: set latency_target.runtime = \"onnxruntime\"")
    precision = config.precision or target.precisions[0]
    if not target.emulated:
        meter = Meter(runtime, precision, target.threads)
        return meter, meter.describe()
    meter = Meter(runtime, precision, 1)
    why = _why_not_counted(config, target, runtime)
    if why is None:
        meter = Meter(runtime, precision, 1, target.emulation_cpu)
    else:
        warn(f"target {target.name} is a {target.cpu} (aarch64) and {why}: its latency table is {meter.describe()}, "
             "a stand-in for the device")
    return meter, f"{meter.describe()}, a stand-in for {target.name}'s {target.cpu}"


def _why_not_counted(config: LatencyTarget, target, runtime: str) -> str | None:
    """Why an aarch64 target's tables cannot be counted under QEMU as its core, or None when they can."""
    import shutil

    from edgefree.bench.emulator_setup import ARM_CPUS, default_home, prepared

    if not config.emulate:
        return "latency_target.emulate is off"
    if runtime != "onnxruntime":
        return f"tables are counted under QEMU with onnxruntime only, not {runtime}"
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 is not installed (apt-get install qemu-user)"
    environment = prepared(default_home())
    if environment is None:
        return "the emulator is not set up (`edgefree emulator setup`)"
    if runtime not in environment["runtimes"]:
        return f"the arm64 environment has no {runtime} (`edgefree emulator setup --runtimes {runtime}`)"
    if target.emulation_cpu not in ARM_CPUS:
        return f"QEMU CPU model {target.emulation_cpu} has no /proc/cpuinfo description here (known: {sorted(ARM_CPUS)})"
    return None


def latency_budget(teacher: Teacher, dreams, config: LatencyTarget = LatencyTarget(),
                   pruning: ChannelPruning | Sequence = ChannelPruning(), target: str = "x86-64",
                   progress: bool = False) -> Student:
    """Prune a copy of ``teacher`` so its predicted cost on ``target`` (p50, or instructions counted under QEMU for
    an aarch64 target) is at most ``config.ratio`` times the teacher's.

    ``pruning``: a ``ChannelPruning`` (its importance, ``round_to``, ``filter_fn`` and
    ``keep_first_last_dense`` hold; its ratio is replaced by per-group widths), optionally followed
    by a ``MagnitudePruning`` applied after. ``dreams`` (a SyntheticSet) measure the sensitivities.
    Raises ``EdgefreeError`` when even the cheapest student misses the budget, naming the closest
    ratio reachable. The student's ``stats["latency"]`` hold the prediction, the choice and the tables' size.

    Usage, with a teacher and its dreams (``synthesize``)::

        student = latency_budget(teacher, dreams, LatencyTarget(ratio=0.6), ChannelPruning(), target="x86-64")
        student.stats["latency"]["predicted_ratio"]  # <= 0.6
    """
    started = time.perf_counter()
    stages = list(pruning) if isinstance(pruning, (list, tuple)) else [pruning]
    channel = next((p for p in stages if isinstance(p, ChannelPruning)), None)
    if channel is None or any(not isinstance(p, (ChannelPruning, MagnitudePruning)) for p in stages):
        raise EdgefreeError("a latency target chooses channel widths: pass a ChannelPruning (then, optionally, a "
                            "MagnitudePruning)")
    if channel.macs_target is not None or channel.depth or channel.steps > 1:
        raise EdgefreeError("a latency target chooses widths and blocks itself, in one step: leave ChannelPruning's "
                            "macs_target, depth and steps unset")
    if dreams is None:
        raise EdgefreeError("the latency search measures each layer's sensitivity on the synthetic images: pass dreams")
    meter, label = _resolve(config, target)
    runtime, precision = meter.runtime, meter.precision
    lat, groups, tables = _measure(teacher, config, channel, meter, dreams, progress)
    budget = config.ratio * lat.teacher_cost
    floor = lat.lowest()[2]
    if floor > budget:
        closest = math.ceil(100 * floor / lat.teacher_cost) / 100
        raise EdgefreeError(
            f"latency target {config.ratio:.2f}x cannot be met on {runtime} {precision}: the closest reachable is "
            f"{floor / lat.teacher_cost:.2f}x the teacher's {'p50' if meter.cpu is None else 'instructions'}, with every prunable group at its cheapest width"
            + (" and every identity residual block removed" if lat.blocks else "") + f" (table {label}): pass "
            f"--latency-target {closest:.2f} or more" + ("" if config.blocks or not identity_residual_blocks(
                teacher.module) else ", or let it remove blocks (latency_target.blocks = true)"))
    model = copy.deepcopy(teacher.module).eval().cpu()
    images = dreams.images[:config.images].cpu()
    sensitivity = _group_sensitivity(model, groups, lat.choices, images, progress)
    block_scores = _block_scores(model, lat.blocks, images) if lat.blocks else {}
    items = _items(lat, groups, sensitivity, block_scores)
    chosen, search = _corrected_search(lat, items, groups, config, channel, teacher, dreams, meter, floor,
                                       progress)
    widths, removed, value = _compose(items, chosen["picks"])
    layout = _layout(groups, lat.blocks, widths, removed)
    student = prune(teacher, stages, dreams, progress, layout=layout)
    predicted = lat.predict(widths, removed)
    student.stats["latency"] = {
        "target_ratio": config.ratio, "runtime": runtime, "precision": precision, "threads": meter.threads,
        "emulated_cpu": meter.cpu, "table": label, "unit": meter.unit,
        "teacher_cost": lat.teacher_cost, "predicted_cost": predicted, "predicted_ratio": predicted / lat.teacher_cost,
        "closest_reachable_ratio": min(floor, predicted) / lat.teacher_cost, "remainder": lat.remainder, "call": lat.call,
        "measured_ratio": chosen["measured_ratio"],
        "sensitivity_kl": value, "removed_blocks": layout["blocks"],
        "groups": [{"layers": g.layers, "channels": g.size, "kept": widths.get(i, g.size),
                    "kl": sensitivity[i][widths.get(i, g.size)],
                    "removed_with_block": all(any(n.startswith(b + ".") for b in removed) for n in g.layers)}
                   for i, g in enumerate(groups)],
        "block_kl": block_scores, "tables": tables, "search": search, "layout": layout,
        "seconds": round(time.perf_counter() - started, 2)}
    return student


def verdict(latency: dict, bench: dict | None) -> dict:
    """``check``, with one warning line where the bench found the target missed (``missed``)."""
    checked = check(latency, bench)
    if line := missed(checked):
        warn(line)
    return checked


def missed(checked: dict) -> str | None:
    """One line for a latency target the bench found missed (``check``'s result), None where it was met or not
    measured."""
    if checked["met"] is not False:
        return None
    return (f"latency target {checked['target_ratio']:.2f}x missed: the student measured {checked['measured_ratio']:.2f}x "
            f"the teacher's {checked['measured_as']} on {checked['runtime']} {checked['precision']}"
            + (", timed in turns " if checked["measured_as"] == "p50" else " ") + f"(predicted {checked['predicted_ratio']:.2f}x): for a faster student, rebuild with a lower "
            "--latency-target")


def check(latency: dict, bench: dict | None) -> dict:
    """The prediction of ``latency`` (a student's ``stats["latency"]``) against the bench on the same runtime and
    precision: the measured p50 ratio, or under QEMU (tables counted as ``emulated_cpu``) the instruction-count
    ratio of the emulated bench on that core: ``{"target_ratio", "predicted_ratio", "measured_ratio", "met",
    "measured_as", "unmeasured"}`` (``measured_ratio`` and ``met`` None, and ``unmeasured`` saying why, when the
    bench did not measure that)."""
    from edgefree.bench.report import instruction_ratios, latency_ratios

    key, cpu = (latency["runtime"], latency["precision"]), latency.get("emulated_cpu")
    measured, measured_as, unmeasured = None, "p50", "no bench"
    if cpu is not None:
        measured_as = f"instructions under QEMU as a {cpu}"
        emulated = (bench or {}).get("emulated") or {}
        if emulated.get("cpu") == cpu and emulated.get("rows"):
            measured = instruction_ratios(emulated["rows"]).get(key)
        if bench is not None:
            unmeasured = f"the bench counted no {' '.join(key)} teacher and student under QEMU as a {cpu}"
    elif bench and bench.get("native"):
        measured = latency_ratios(bench["native"]["rows"]).get(key)
        unmeasured = f"the bench timed no {' '.join(key)} teacher and student"
    return {"target_ratio": latency["target_ratio"], "runtime": latency["runtime"], "precision": latency["precision"],
            "predicted_ratio": latency["predicted_ratio"], "chosen_ratio": latency.get("measured_ratio"),
            "searches": len(latency.get("search", {}).get("corrections", [])),
            "measured_ratio": measured, "measured_as": measured_as,
            "unmeasured": None if measured is not None else unmeasured,
            "met": None if measured is None else measured <= latency["target_ratio"], "table": latency["table"],
            "table_entries_measured_now": (latency.get("tables") or {}).get("measured_now")}
