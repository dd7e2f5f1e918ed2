"""Frozen, validated configs: one dataclass per stage, and named synthesis recipes.

Each config validates itself in ``__post_init__`` and round-trips through
``to_dict`` / ``from_dict`` so reports can record exactly what ran.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from edgefree.errors import EdgefreeError
from edgefree.targets import FORMATS, MAX_THREADS, PRECISIONS, RUNTIMES

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path",
               tuple: "a list", type(None): "left out"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", Path: "paths", bool: "true or false values"}


def _accepts(kind, value) -> bool:
    if kind is type(None):
        return value is None
    if isinstance(kind, type) and issubclass(kind, _Config):
        return isinstance(value, dict) or value is False  # false: an optional stage turned off
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Path:
        return isinstance(value, (str, Path))
    origin = typing.get_origin(kind) or kind
    if origin is not tuple:
        return isinstance(value, origin)
    items = _items(kind, value) if isinstance(value, (list, tuple)) else None
    return items is not None and all(_accepts(k, v) for k, v in zip(items, value))


def _items(kind, value) -> tuple | None:
    """The type of each item of ``value`` as the tuple type ``kind`` reads it (None: a count it does not take)."""
    args = typing.get_args(kind)
    if not args:
        return (object,) * len(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return (args[0],) * len(value)
    return args if len(args) == len(value) else None


def _is_a(kind, value) -> bool:
    """Whether ``value``, given in Python, is of the field type ``kind`` (a stage config given as itself)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(k, value) for k in typing.get_args(kind))
    if isinstance(kind, type) and issubclass(kind, _Config):
        return isinstance(value, kind)
    if origin is collections.abc.Callable:
        return callable(value)
    return _accepts(kind, value)


def _type_name(kind) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is collections.abc.Callable:
        return "a function"
    if isinstance(kind, type) and issubclass(kind, _Config):
        return f"a {kind.__name__}"
    origin = typing.get_origin(kind) or kind
    args = [a for a in typing.get_args(kind) if a is not Ellipsis]
    if origin is tuple and args and len(set(args)) == 1 and args[0] in _PLURALS:
        count = "" if Ellipsis in typing.get_args(kind) else f"{len(args)} "
        return f"a list of {count}{_PLURALS[args[0]]}"
    return _TYPE_NAMES.get(origin, "a table of options")


def _rebuild(hint, value, where: str):
    """``value`` read from a file, as the field typed ``hint`` takes it (nested configs rebuilt)."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | str)) else (hint,)
    kind = next((k for k in kinds if _accepts(k, value)), None)
    if kind is None:
        table = next((k for k in kinds if isinstance(k, type) and issubclass(k, _Config)), None)
        wanted = " or ".join(map(_type_name, kinds)) if not table else "a table of options" + (
            ", or false to turn it off" if type(None) in kinds else "")
        shown = json.dumps(value) if isinstance(value, (bool, int, float, str)) else repr(value)  # as TOML writes it
        first = fields(table)[0] if table and not isinstance(value, (dict, list)) else None
        hint = f": write it as the table [{where.rsplit('.', 1)[-1]}] with {first.name} = {shown} below it" \
            if first and _accepts(typing.get_type_hints(table)[first.name], value) else ""
        raise EdgefreeError(f"{where} must be {wanted}, got {shown}{hint}")
    if isinstance(kind, type) and issubclass(kind, _Config):
        return None if value is False else kind.from_dict(value, where)
    return Path(value) if kind is Path else value


class _Config:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str | None = None):
        """The config that ``to_dict`` gave ``values`` (from a TOML file or a report), nested configs too."""
        where = where or cls.__name__
        if not isinstance(values, dict):
            raise EdgefreeError(f"{where} must be a table of options, got {values!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            elsewhere = getattr(cls, "_ELSEWHERE", {})
            moved = [f"{name} goes in {elsewhere[name]}" for name in unknown if name in elsewhere]
            meant = [f"{name}: did you mean {close[0]}?" for name in unknown if name not in elsewhere and (
                close := difflib.get_close_matches(name.replace("-", "_"), known, n=1))]
            raise EdgefreeError(f"{where} has no option(s) {unknown}" + (f" ({'; '.join(moved + meant)})"
                                                                          if moved or meant else "")
                                + f"; known: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _rebuild(hints[name], value, f"{where}.{name}") for name, value in values.items()})

    def replace(self, **changes):
        """A copy with ``changes`` applied; ``None`` values are ignored (unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def _require_fields(self) -> None:
        """Every field of the type it is declared with (an integer where it counts, true or false for a
        switch, a list for a tuple), and every number finite."""
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if not _is_a(hints[f.name], value):
                raise EdgefreeError(f"{type(self).__name__}.{f.name} must be {_type_name(hints[f.name])}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise EdgefreeError(f"{type(self).__name__}.{f.name} must be a finite number, got {value}")
            if any(isinstance(v, int) and abs(v) > LARGEST_INT for v in (value if isinstance(value, tuple) else (value,))):
                raise EdgefreeError(f"{type(self).__name__}.{f.name} must lie within +-{LARGEST_INT} (int64), got {value}")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


LARGEST_INT = 2**63 - 1  # the libraries' integers (int64) overflow beyond it
MAX_RUNS = 100_000  # timed runs per model and runtime


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise EdgefreeError(message)


def _require_bf16(value, stage: str) -> None:
    _require(value in (True, False, "auto"), f"{stage} bf16 must be true, false or 'auto', got {value!r}")


@dataclass(frozen=True)
class MagnitudePruning(_Config):
    """Unstructured: zero the ``sparsity`` fraction of smallest-magnitude conv/linear weights.

    ``scope="global"`` ranks every eligible weight together (layers with small weights lose more);
    ``scope="layer"`` zeroes the same fraction of each layer, for networks whose layers differ in
    scale (a MobileNet's wide classifier and depthwise kernels would otherwise be emptied).
    Shrinks the packed artifacts; dense runtimes compute the zeros, so it does not make the student faster.
    ``filter_fn(module, name) -> bool`` leaves the layers it returns False for dense.
    """

    sparsity: float = 0.75
    keep_first_last_dense: bool = False
    scope: str = "global"
    filter_fn: Callable[..., bool] | None = field(default=None, compare=False)  # (module, name) -> keep?

    def __post_init__(self):
        self._require_fields()
        _require(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        _require(self.scope in ("global", "layer"), f"magnitude scope must be 'global' or 'layer', got {self.scope!r}")

    def to_dict(self) -> dict:
        return {"kind": "magnitude", "sparsity": self.sparsity, "keep_first_last_dense": self.keep_first_last_dense,
                "scope": self.scope}


CHANNEL_IMPORTANCE = ("l1", "l2", "bn_scale", "taylor", "greedy")


@dataclass(frozen=True)
class ChannelPruning(_Config):
    """Structured: remove whole channels (and optionally whole residual blocks), so every runtime is faster.

    ``ratio`` is the fraction of each prunable layer's channels removed; with ``macs_target`` set, the
    ratio is searched instead until the student keeps about that fraction of the teacher's
    multiply-adds. ``depth`` is the fraction of identity-shortcut residual blocks removed (the ones
    whose removal changes the teacher's outputs on the dreams least). Channel counts are rounded to a
    multiple of ``round_to``. ``importance`` ranks channels: from the weights ("l1", "l2", the
    BatchNorm scale "bn_scale"), or measured on the synthetic images ("taylor"; "greedy": ThiNet's
    removal, one at a time, of the channel that changes the consuming layers' outputs least,
    ``edgefree.recover.greedy_channels``). Channel dependencies (residual additions,
    concatenations, depthwise convolutions) come from Torch-Pruning's DepGraph.
    ``steps`` > 1 prunes gradually (``edgefree.recover.gradual``): the channels go in that many steps
    of equal shares of the multiply-adds (or of the ratio), the kept weights refit after each.
    """

    ratio: float = 0.5
    macs_target: float | None = None
    depth: float = 0.0
    round_to: int = 8
    importance: str = "l2"  # the most recovered after distillation (greedy refits better and recovers less:
    # benchmarks/results/recovery_levers.md, lever greedy)
    keep_first_last_dense: bool = True
    steps: int = 1
    filter_fn: Callable[..., bool] | None = field(default=None, compare=False)  # (module, name) -> keep?

    def __post_init__(self):
        self._require_fields()
        _require(0.0 <= self.ratio < 1.0, f"channel ratio must be in [0, 1), got {self.ratio}")
        _require(self.macs_target is None or 0.0 < self.macs_target <= 1.0,
                 f"macs target must be in (0, 1] (the fraction of the teacher's multiply-adds kept), got {self.macs_target}")
        _require(0.0 <= self.depth < 1.0, f"depth must be in [0, 1), got {self.depth}")
        _require(self.round_to >= 1, f"round_to must be >= 1, got {self.round_to}")
        _require(1 <= self.steps <= 20,
                 f"channel pruning steps must be a whole number from 1 to 20, got {self.steps}")
        _require(self.importance in CHANNEL_IMPORTANCE,
                 f"channel importance must be one of {', '.join(CHANNEL_IMPORTANCE)}, got {self.importance!r}")

    def to_dict(self) -> dict:
        return {"kind": "channel", **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "filter_fn"}}


@dataclass(frozen=True)
class LatencyTarget(_Config):
    """Channel widths chosen per layer group so the student runs in at most ``ratio`` times the teacher's p50.

    Latency is measured per conv/linear layer at ``widths`` channel counts per group (multiples of the
    channel pruning's ``round_to``), on ``runtime`` and ``precision`` (None: the target profile's first
    format and precision) at batch 1: natively, or for an aarch64 target with ``emulate``, as guest
    instructions counted under QEMU as its core (once ``edgefree emulator setup`` ran); each group's and each identity residual block's
    sensitivity is the KL divergence of the teacher's outputs on ``images`` dreams when only it is
    narrowed or removed. A multiple-choice knapsack picks the widths (and, with ``blocks``, the removed
    blocks) of least total sensitivity within the budget (``edgefree.latency_budget``).
    """

    ratio: float = 0.5
    runtime: str | None = None  # onnxruntime, openvino or executorch; None: the target's first format's runtime
    precision: str | None = None  # fp32 or int8; None: the target's first precision
    widths: int = 8  # channel counts measured and chosen from per group (at most)
    blocks: bool = True  # identity residual blocks may be removed too
    images: int = 256  # dreams the sensitivities are measured on
    emulate: bool = True  # aarch64 targets: count per-layer instructions under QEMU (False: time natively)

    def __post_init__(self):
        self._require_fields()
        _require(0.0 < self.ratio <= 1.0, f"latency target must be in (0, 1] (the student's p50 over the teacher's), "
                 f"got {self.ratio}")
        _require(self.runtime in (None, *RUNTIMES),
                 f"latency tables are measured with {', '.join(RUNTIMES)}, got {self.runtime!r}")
        _require(self.precision in (None, *PRECISIONS), f"latency precision must be one of {', '.join(PRECISIONS)}, "
                 f"got {self.precision!r}")
        _require(self.widths >= 2, f"latency widths must be >= 2 (channel counts measured per group), got {self.widths}")
        _require(self.images >= 1, f"latency images must be >= 1, got {self.images}")


PRUNING_KINDS = {"magnitude": MagnitudePruning, "channel": ChannelPruning}


def pruning_from_dict(values: dict):
    """The pruning config a ``to_dict()`` wrote (its ``kind`` picks the type)."""
    values = dict(values)
    kind = values.pop("kind", "magnitude")
    _require(kind in PRUNING_KINDS, f"unknown pruning {kind!r}; known: {', '.join(PRUNING_KINDS)}")
    return PRUNING_KINDS[kind].from_dict(values)


@dataclass(frozen=True)
class SynthesisConfig(_Config):
    """Dreams from the teacher's BatchNorm statistics: ``method`` "deepinversion" optimises the pixels
    of each image (``iterations`` steps per batch); "generator" trains a small generator (of images or signals) for
    ``iterations`` steps of ``batch_size`` fresh images at ``lr``, draws ``images`` from it, and
    distillation draws new ones every epoch (warm start, low resolution, the total-variation and L2
    priors: DeepInversion only).

    DeepInversion dreams ``shards`` chains of whole batches apart (each warm-started within itself and
    seeded by the seed and its index): the processes of a distributed build share them out, and the
    set depends on ``shards``, never on how many processes dream it."""

    method: str = "deepinversion"
    images: int = 1024
    batch_size: int = 256
    iterations: int = 200
    lr: float = 0.1
    bn_weight: float | str = 10.0  # "auto": the strongest that keeps ``fidelity_floor`` (synthesize.choose_bn_weight)
    first_bn_multiplier: float = 1.0
    bn_min_positions: int = 1  # BatchNorm layers whose maps have fewer positions per image are not matched
    fidelity_floor: float = 0.9  # bn_weight "auto": share of a probe batch the teacher must label as its target
    ce_weight: float = 1.0
    tv_l1_weight: float = 0.0
    tv_l2_weight: float = 0.0
    l2_weight: float = 0.0
    jitter: int = 2
    crop_scale: float = 1.0  # each view a random crop of at least this share of the area, resized back (1: none)
    flip: bool | None = None  # mirror the views; None: images yes, signals no (time reversed is not a signal)
    low_res_fraction: float = 0.0
    # bfloat16 autocast; "auto": where the hardware has native bf16, but not for a model with depthwise convolutions
    # on a CPU (edgefree.machine.resolve_bf16)
    bf16: bool | str = False
    channels_last: bool = False
    warm_start: float = 0.0  # each batch after the first starts this much from the previous batch's images
    first_iterations: int | None = None  # steps for the first batch (None: ``iterations``)
    generator_width: int = 32  # channels of the generator's last layer (method "generator")
    shards: int = 4  # chains of batches dreamed apart (one per rank at a time); at most one per batch

    def replace(self, **changes):
        """As ``_Config.replace``; an explicit ``iterations`` also sets the first batch's steps
        (``first_iterations``), unless that is given too: an explicit step count wins over every part
        of the recipe."""
        if changes.get("iterations") is not None and changes.get("first_iterations") is None:
            changes = {**changes, "first_iterations": changes["iterations"]}
        return super().replace(**changes)

    def __post_init__(self):
        self._require_fields()
        _require(self.method in ("deepinversion", "generator"),
                 f"synthesis method must be 'deepinversion' or 'generator', got {self.method!r}")
        _require(self.shards >= 1, f"synthesis shards must be >= 1, got {self.shards}")
        _require(self.generator_width > 0, f"synthesis generator_width must be positive, got {self.generator_width}")
        _require(self.images > 0 and self.batch_size > 0,
                 f"synthesis images and batch size must be positive, got {self.images} and {self.batch_size}")
        _require(self.jitter >= 0, f"synthesis jitter (pixels each view shifts) must be >= 0, got {self.jitter}")
        _require(self.iterations > 0, f"synthesis iterations must be positive, got {self.iterations}")
        _require(self.lr > 0, f"synthesis lr must be positive, got {self.lr}")
        _require(0.0 < self.crop_scale <= 1.0, f"synthesis crop_scale must be in (0, 1], got {self.crop_scale}")
        _require(0.0 <= self.low_res_fraction < 1.0, "low_res_fraction must be in [0, 1)")
        _require(0.0 <= self.warm_start <= 1.0, f"synthesis warm_start must be in [0, 1], got {self.warm_start}")
        _require(self.first_iterations is None or self.first_iterations > 0, "synthesis first_iterations must be positive")
        _require_bf16(self.bf16, "synthesis")
        _require(self.bn_weight == "auto" or (isinstance(self.bn_weight, (int, float)) and self.bn_weight >= 0),
                 f"synthesis bn_weight must be a number >= 0 or 'auto', got {self.bn_weight!r}")
        _require(self.bn_min_positions >= 1, f"synthesis bn_min_positions must be >= 1, got {self.bn_min_positions}")
        _require(0.0 < self.fidelity_floor <= 1.0, f"synthesis fidelity_floor must be in (0, 1], got {self.fidelity_floor}")
        for name in ("first_bn_multiplier", "ce_weight", "tv_l1_weight", "tv_l2_weight", "l2_weight"):
            _require(getattr(self, name) >= 0, f"synthesis {name} must be >= 0")


@dataclass(frozen=True)
class ReconstructConfig(_Config):
    """Layer-wise least-squares refit of the kept weights to the teacher's outputs (0 images: off), then,
    with ``block_steps``, each block trained by gradient to give the teacher's block output."""

    images: int = 1024
    batch_size: int = 128
    damping: float = 0.01  # added to the Gram diagonal, as a fraction of its mean
    block_steps: int = 0  # Adam steps per block of block-wise reconstruction (0: layer-wise only)
    block_lr: float = 1e-3  # its peak rate, falling along a cosine

    def __post_init__(self):
        self._require_fields()
        _require(self.images >= 0, f"reconstruct images must be >= 0, got {self.images}")
        _require(self.batch_size > 0, "reconstruct batch size must be positive")
        _require(self.damping > 0, f"reconstruct damping must be positive, got {self.damping}")
        _require(self.block_steps >= 0, f"reconstruct block steps must be >= 0, got {self.block_steps}")
        _require(self.block_lr > 0, f"reconstruct block lr must be positive, got {self.block_lr}")


@dataclass(frozen=True)
class DistillConfig(_Config):
    """KL distillation teacher -> pruned student on synthetic images only."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    grad_clip: float = 5.0
    augment: bool = True
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs; the teacher labels the mix, so any pair is valid
    feature_weight: float = 0.0  # weight of matching every BatchNorm output of the teacher (0: logits only)
    warmup_epochs: float = 0.0  # the learning rate rises linearly from ~0 over these epochs, then follows the cosine
    # train each BatchNorm's scale and shift (its running statistics stay the teacher's): the only per-channel
    # bias a pruned student without conv biases has, to follow the shift its removed inputs leave behind
    bn_affine: bool = False
    # the student returned is the moving average of its weights (0: off), this decay per step at most: at step t
    # it is at most (1 + t) / (10 + t), so 0.99 is reached only after about 890 steps
    ema: float = 0.0
    # a generator's set (synthesis method "generator"): before each epoch's new images, the generator trains
    # this many steps towards images the student gets wrong (edgefree.recover.generator.GeneratorAdversary)
    adversarial_steps: int = 0
    adversarial_weight: float = 1.0  # weight of the student's KL divergence from the teacher, subtracted from that loss
    # bfloat16 autocast; "auto": where the hardware has native bf16, but not for a model with depthwise convolutions
    # on a CPU (edgefree.machine.resolve_bf16)
    bf16: bool | str = False
    channels_last: bool = False  # teacher, student and images in the channels-last layout (images only)

    def __post_init__(self):
        self._require_fields()
        _require(self.epochs > 0 and self.batch_size > 0,
                 f"distillation epochs and batch size must be positive, got {self.epochs} and {self.batch_size}")
        _require(self.adversarial_steps >= 0 and self.adversarial_weight >= 0,
                 "distillation adversarial_steps (an integer) and adversarial_weight must be >= 0, got "
                 f"{self.adversarial_steps} and {self.adversarial_weight}")
        _require(self.feature_weight >= 0, f"distillation feature_weight must be >= 0, got {self.feature_weight}")
        _require_bf16(self.bf16, "distillation")
        _require(self.lr > 0 and self.temperature > 0, "distillation lr and temperature must be positive")
        _require(self.mixup >= 0, f"distillation mixup must be >= 0, got {self.mixup}")
        _require(self.grad_clip >= 0, f"distillation grad_clip must be >= 0 (0: off), got {self.grad_clip}")
        _require(self.weight_decay >= 0, f"distillation weight_decay must be >= 0, got {self.weight_decay}")
        _require(0 <= self.momentum < 1, f"distillation momentum must be in [0, 1), got {self.momentum}")
        _require(0 <= self.ema < 1, f"distillation ema (a decay per step) must be in [0, 1), got {self.ema}")
        _require(0 <= self.warmup_epochs < self.epochs,
                 f"distillation warmup_epochs must be >= 0 and below epochs ({self.epochs}), got {self.warmup_epochs}")


@dataclass(frozen=True)
class BenchConfig(_Config):
    """Latency and accuracy per runtime: measured here, and emulated for aarch64 targets."""

    runs: int | None = None  # a fixed count of timed runs; None: adaptive, until the p50 is stable
    min_runs: int = 20  # adaptive: at least this many timed runs ...
    max_runs: int = 2000  # ... at most this many ...
    max_seconds: float = 10.0  # ... and no more timed seconds than this, per model and runtime
    p50_tolerance: float = 0.02  # stop once the p50's 95% interval is within +-2% of it
    warmup: int = 10
    threads: int | None = None  # None: the target's threads natively (1 for an emulated target)
    eval_limit: int | None = None  # top-1 on the first N evaluation images, measured again (None: all)
    remeasure_accuracy: bool = False  # top-1 through each runtime again instead of the export's figures
    emulate: bool = True  # aarch64 targets: also run under qemu-aarch64 when `edgefree emulator setup` ran
    native: bool = True  # measure on this machine too (an emulated target may skip it: emulation only)
    emulated_runs: int = 3  # instruction counts repeat exactly: a few runs suffice
    emulated_warmup: int = 1
    emulated_inputs: int = 8  # evaluation images whose logits are compared with this machine's
    emulation_timeout_s: int = 3600

    def __post_init__(self):
        self._require_fields()
        _require(self.runs is None or 1 <= self.runs <= MAX_RUNS,
                 f"bench runs must be from 1 to {MAX_RUNS}, got {self.runs}")
        _require(self.emulated_runs >= 1, f"bench emulated_runs (--emulated-runs) must be >= 1, got {self.emulated_runs}")
        _require(1 <= self.min_runs <= self.max_runs <= MAX_RUNS,
                 f"bench min_runs must be >= 1 and <= max_runs, and max_runs at most {MAX_RUNS}, got {self.min_runs} "
                 f"and {self.max_runs}")
        _require(self.max_seconds > 0, f"bench max_seconds must be positive, got {self.max_seconds}")
        _require(0 < self.p50_tolerance < 1, f"bench p50_tolerance must be in (0, 1), got {self.p50_tolerance}")
        _require(self.warmup >= 0 and self.emulated_warmup >= 0, "bench warm-up runs must be >= 0")
        _require(self.threads is None or 1 <= self.threads <= MAX_THREADS,
                 f"bench threads must be from 1 to {MAX_THREADS}, got {self.threads}")
        _require(self.eval_limit is None or self.eval_limit >= 1, "bench eval_limit must be >= 1")
        _require(self.emulated_inputs >= 1, "bench emulated_inputs must be >= 1")
        _require(self.native or self.emulate, "bench needs this machine's runs, emulated runs, or both: leave out "
                 "--no-native or --no-emulate")


@dataclass(frozen=True)
class ExportConfig(_Config):
    """Export per runtime, parity check against PyTorch, sparsity-aware packing (``edgefree.export``).

    ``formats`` / ``precisions`` of None mean the target profile's. fp32 artifacts must match
    the student's logits within ``fp32_atol``; INT8 ones, calibrated on synthetic images only,
    must agree with the fp32 student's top-1 on at least ``int8_min_agreement`` of the inputs.
    """

    formats: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    opset: int = 18
    check_images: int = 256
    calibration_images: int = 256
    eval_batch: int = 256  # accuracy passes run at this batch where the runtime takes it (latency stays batch 1)
    fp32_atol: float = 1e-3
    int8_min_agreement: float = 0.9

    def __post_init__(self):
        self._require_fields()
        for name, known in (("formats", FORMATS), ("precisions", PRECISIONS)):
            chosen = getattr(self, name)
            if chosen is None:
                continue
            chosen = tuple(dict.fromkeys(chosen))  # lists from JSON become tuples; repeats go
            object.__setattr__(self, name, chosen)
            _require(bool(chosen) and set(chosen) <= set(known),
                     f"export {name} must be a non-empty subset of {', '.join(known)}; got {', '.join(chosen) or 'none'}")
        _require(self.opset >= 18, f"ONNX opset must be >= 18 (the dynamo exporter's minimum), got {self.opset}")
        _require(self.check_images > 0 and self.calibration_images > 0, "check and calibration images must be positive")
        _require(self.eval_batch > 0, f"export eval_batch must be positive, got {self.eval_batch}")
        _require(self.fp32_atol > 0, f"fp32_atol must be positive, got {self.fp32_atol}")
        _require(0.0 <= self.int8_min_agreement <= 1.0, "int8_min_agreement must be in [0, 1]")

    def for_target(self, target) -> "ExportConfig":
        """This config with unset formats and precisions taken from ``target`` (a targets.Target); set ones must
        be among the target's (its bench would skip the others, and flash refuse them)."""
        for name in ("formats", "precisions"):
            off = [v for v in getattr(self, name) or () if v not in getattr(target, name)]
            _require(not off, f"--{name} {','.join(off)}: target {target.name} runs {', '.join(getattr(target, name))}"
                     f" only (its bench would skip the others and flash refuse them): pass --{name} among those, or a "
                     "--target that runs them (edgefree targets)")
        return self.replace(formats=self.formats or target.formats, precisions=self.precisions or target.precisions)


@dataclass(frozen=True)
class Recipe(_Config):
    """Named settings for the stages after pruning: synthesis, reconstruction, distillation."""

    synthesis: SynthesisConfig
    distill: DistillConfig
    description: str
    reconstruct: ReconstructConfig = ReconstructConfig(images=0)
    signal_synthesis: SynthesisConfig | None = None  # a 1-D signal teacher's dreams, where they differ from an image's

    def synthesis_for(self, rank: int | None) -> SynthesisConfig:
        """The synthesis for a teacher of input ``rank`` (1: a signal; 2: an image; None: ``synthesis``)."""
        return self.signal_synthesis if rank == 1 and self.signal_synthesis is not None else self.synthesis


# "paper" is the published budget: 1,024 images x 200 fp32 steps per batch of 256, then plain
# logit distillation. "fast" is ours, the default for your own models:
# - bf16 autocast where the hardware has it natively (a model with depthwise convolutions computes in fp32 on
#   a CPU, where those are slower in bf16), and channels_last, in synthesis and distillation: cheaper steps;
# - warm start: only the first batch starts from noise (60 steps); each later batch starts from
#   the previous batch's images, shuffled against new labels, mirrored and mixed 0.7 / 0.71 with
#   fresh noise, and needs 20 steps: BatchNorm statistics are already close, the labels and
#   details are new. 2x the paper's images for 1/4 of its steps. Two shards (two chains of 4
#   batches: 240 steps in all rather than one chain's 200) let two processes dream it at once;
#   more processes need more shards (--shards);
# - before distillation, each pruned layer's kept weights are refit by least squares to the
#   teacher's outputs on 1,024 dreams (edgefree.recover.reconstruct); distillation starts from there;
# - distillation also matches every BatchNorm output of the teacher (weight 20), not only its
#   logits, at lr 0.05.
# "thorough" distils twice as long (80 epochs) on the dreams that recovered the most for the teacher's kind
# of input: an image teacher's generator (`generator`'s settings, so a build after a `generator` one takes
# it from the cache), a signal's `fast` dreams (the generator lost points on a signal teacher).
# "generator" trains a small generator (images or signals) on the teacher (edgefree.recover.generator: BatchNorm
# statistics, fresh noise every step, 800 steps of 128) and distils `fast`'s way on 2,048 new
# images from it every epoch: smoother, more natural-looking dreams, never the same one twice.
# Its BatchNorm weight is chosen per teacher by probes (bn_weight "auto", synthesize.choose_bn_weight):
# on CIFAR-10 it matched the fixed weight of 10 on the ResNets and recovered more on MobileNetV3-small.
# "demo" sizes the budget for the built-in 8x8 digits teacher.
_KD = DistillConfig(epochs=40, lr=0.02)
_FAST_SYNTHESIS = SynthesisConfig(images=2048, batch_size=256, iterations=20, first_iterations=60, warm_start=0.7,
                                  lr=0.2, bn_weight=10.0, bf16="auto", channels_last=True, shards=2)
_FAST_KD = _KD.replace(lr=0.05, feature_weight=20.0, bf16="auto", channels_last=True)
_GENERATOR_SYNTHESIS = SynthesisConfig(method="generator", images=2048, batch_size=128, iterations=800, lr=2e-3,
                                       bn_weight="auto", bf16="auto", channels_last=True)
RECIPES: dict[str, Recipe] = {
    "paper": Recipe(SynthesisConfig(images=1024, batch_size=256, iterations=200, lr=0.1, bn_weight=10.0),
                    _KD, "DeepInversion at the paper's budget: 200 fp32 steps per batch, logit distillation"),
    "fast": Recipe(_FAST_SYNTHESIS, _FAST_KD,
                   "2x the images, each batch warm-started from the last (20 steps), bf16, layer-wise refit, "
                   "feature distillation", ReconstructConfig(images=1024)),
    "thorough": Recipe(_GENERATOR_SYNTHESIS, _FAST_KD.replace(epochs=80),
                       "generator's new dreams every epoch (a signal: fast's dreams), distilled twice as long: "
                       "80 epochs", ReconstructConfig(images=1024), signal_synthesis=_FAST_SYNTHESIS),
    "generator": Recipe(_GENERATOR_SYNTHESIS, _FAST_KD,
                        "a generator trained on the teacher draws 2,048 new images every distillation epoch; "
                        "refit, feature distillation", ReconstructConfig(images=1024)),
    "demo": Recipe(SynthesisConfig(images=512, batch_size=256, iterations=100, lr=0.1, bn_weight=10.0, jitter=1),
                   DistillConfig(epochs=30, batch_size=64, lr=0.01), "budget for the built-in digits teacher",
                   ReconstructConfig(images=512)),
}
DEFAULT_RECIPE = "fast"
DEMO_RECIPE = "demo"
METHOD_RECIPES = {"deepinversion": DEFAULT_RECIPE, "generator": "generator"}  # whose dreams each method starts from


# the command line's synthesis options (option: the SynthesisConfig setting it sets): what
# BuildConfig.synthesis_given may name
SYNTHESIS_FLAGS = {"images": "images", "iterations": "iterations", "synth_batch": "batch_size", "bf16": "bf16",
                   "bn_weight": "bn_weight", "shards": "shards"}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise EdgefreeError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


_INPUT_TEXT = ("input_shape", "mean", "std", "value_range")  # fields that also take their option's text


def _input_text(name: str, text: str) -> tuple:
    """A teacher input field given as its command-line option's text (``--input-shape 3x32x32``, ...)."""
    from edgefree.models.spec import parse_field

    return parse_field("shape" if name == "input_shape" else name, text)


@dataclass(frozen=True)
class BuildConfig(_Config):
    """Everything ``edgefree build`` needs. ``model=None`` means the built-in default.

    ``arch`` is the teacher's source (``edgefree.models.load_teacher``: a zoo name, ``torchvision:<name>``,
    ``path/to/file.py:factory`` or ``package.module:factory``); None with a ``.pt2`` ``model``, which is its
    own architecture. ``input_shape`` (C, H, W) or (C, L), ``mean``, ``std`` and ``value_range`` (the raw
    values' low and high) change the source's input spec.

    ``recipe`` names the synthesis, reconstruction and distillation settings (default: "fast"
    for a model of your own, "demo" for the built-in default); a stage config given explicitly
    replaces the recipe's. Paths are stored absolute, so a report names them from anywhere.
    """

    target: str = "x86-64"
    out: Path = Path("edgefree-out")
    model: Path | None = None
    arch: str | None = None
    num_classes: int = 10
    input_shape: tuple[int, ...] | None = None  # None: the source's (torchvision: 3x224x224)
    mean: tuple[float, ...] | None = None  # per channel; None: the source's (ImageNet's for 3 channels)
    std: tuple[float, ...] | None = None
    value_range: tuple[float, ...] | None = None  # (low, high) of the raw values; None: the source's, or assumed
    eval_data: str | Path | None = None
    seed: int = 0
    device: str = "cpu"
    recipe: str | None = None
    cache: Path | None = None  # where synthetic sets are cached; None: cache_dir("dreams")
    prune: tuple = (MagnitudePruning(),)  # applied in order: ChannelPruning, then MagnitudePruning on what remains
    latency_target: LatencyTarget | None = None  # channel widths chosen for a p50 budget (needs ChannelPruning)
    synthesis: SynthesisConfig | None = None  # None: the recipe's
    reconstruct: ReconstructConfig | None = None
    distill: DistillConfig | None = None
    export: ExportConfig | None = field(default_factory=ExportConfig)  # None: no export, no bench
    bench: BenchConfig | None = field(default_factory=BenchConfig)  # None: no bench
    threads: int | None = None  # per process; None: this machine's cores shared out among its processes
    dist_timeout_s: float = 1800  # how long a process waits for the others (torch.distributed) before failing
    max_drop: float | None = None  # points: search the strongest pruning estimated within it (edgefree.budget)
    # synthesis settings named explicitly (the command line's --images, --synth-batch, ...): they hold when the
    # recipe dreams a signal its own way (``for_input``), even where equal to the recipe's image settings
    synthesis_given: tuple[str, ...] = ()

    # command-line names that a config file sets elsewhere: where each goes
    _ELSEWHERE: typing.ClassVar[dict[str, str]] = {
        **{n: f'[[prune]] as kind = "magnitude", {k} = ...' for n, k in (
            ("sparsity", "sparsity"), ("keep_first_last_dense", "keep_first_last_dense"), ("magnitude_scope", "scope"))},
        **{n: f'[[prune]] as kind = "channel", {k} = ...' for n, k in (
            ("channel_ratio", "ratio"), ("ratio", "ratio"), ("macs_target", "macs_target"), ("depth", "depth"),
            ("channel_importance", "importance"), ("importance", "importance"), ("round_to", "round_to"),
            ("channel_steps", "steps"))},
        "pruning": '[[prune]] tables, one per kind = "magnitude" or "channel"',
        **{n: f"[synthesis] as {k} = ..." for n, k in (("images", "images"), ("iterations", "iterations"),
                                                         ("synth_batch", "batch_size"), ("shards", "shards"),
                                                         ("bf16", "bf16 (and [distill] bf16)"))},
        "reconstruct_images": "[reconstruct] as images = ...",
        "block_steps": "[reconstruct] as block_steps = ...",
        "adversarial_steps": "[distill] as adversarial_steps = ...",
        **{n: f"[distill] as {k} = ..." for n, k in (("epochs", "epochs"), ("distill_lr", "lr"), ("lr", "lr"))},
        **{n: f"[export] as {n} = [...]" for n in ("formats", "precisions")},
        **{n: f"[bench] as {k} = ..." for n, k in (("bench_runs", "runs"), ("runs", "runs"), ("emulate", "emulate"))},
        "dist_timeout": "dist_timeout_s = ...",
        **{n: f"the command line only (--{n.replace('_', '-')})" for n in ("workers", "quiet", "verbose", "config",
                                                                            "save_config")},
    }

    def __post_init__(self):
        self._settle_stages()
        self._settle_input_text()
        self._require_fields()  # every field of its type, its text and dicts read first
        _require(self.max_drop is None or self.max_drop >= 0,
                 f"max_drop must be a number of top-1 points >= 0, got {self.max_drop!r}")
        _require(self.threads is None or 1 <= self.threads <= MAX_THREADS,
                 f"threads must be from 1 to {MAX_THREADS}, got {self.threads}")
        nameable = tuple(SYNTHESIS_FLAGS.values())
        _require(all(n in nameable for n in self.synthesis_given),
                 f"synthesis_given names synthesis settings of {', '.join(nameable)}, got {list(self.synthesis_given)}")
        object.__setattr__(self, "synthesis_given", tuple(dict.fromkeys(self.synthesis_given)))
        _require(self.dist_timeout_s > 0, f"dist_timeout_s must be positive, got {self.dist_timeout_s}")
        self._settle_teacher()
        _require(self.device in ("cpu", "cuda"), f"device must be 'cpu' or 'cuda', got {self.device!r}")
        stages = self.prune
        kinds = [type(p) for p in stages]
        _require(len(set(kinds)) == len(kinds) and kinds in ([], [MagnitudePruning], [ChannelPruning],
                                                              [ChannelPruning, MagnitudePruning]),
                 "pruning is magnitude, channel, or channel then magnitude (each at most once)")
        channel = next((p for p in stages if isinstance(p, ChannelPruning)), None)
        _require(self.latency_target is None or channel is not None,
                 "--latency-target chooses channel widths: use it with --pruning channel or channel,magnitude")
        _require(self.latency_target is None or channel.macs_target is None,
                 "--latency-target and --macs-target both set the channel widths: pass one of them")
        _require(self.latency_target is None or channel.depth == 0,
                 "--latency-target chooses the residual blocks it removes itself: leave out --depth "
                 "(latency_target.blocks = false keeps every block)")
        _require(self.latency_target is None or channel.steps == 1,
                 "--latency-target chooses every width in one step: leave out --channel-steps")
        _require(self.max_drop is None or bool(stages), "max_drop searches the pruning's strength: give a pruning "
                 "stage (magnitude or channel)")
        _require(channel is None or channel.ratio > 0 or channel.macs_target is not None or channel.depth > 0,
                 "channel pruning with --channel-ratio 0 (and no --macs-target or --depth) removes nothing: pass a "
                 "ratio above 0, or --pruning magnitude")
        _require(self.model is not None or channel is None or not channel.depth,
                 "--depth removes residual blocks, and the built-in default has none: leave out --depth")
        _require(0 <= self.seed < 2**32, f"seed must be an integer from 0 to {2**32 - 1} (the generators' range), "
                 f"got {self.seed}")
        _require(self.num_classes >= 2, f"num_classes must be an integer >= 2, got {self.num_classes}")
        name = self.recipe or (DEFAULT_RECIPE if self.model is not None else DEMO_RECIPE)
        chosen = recipe(name)
        from edgefree.outfolder import absolute

        settled = {"recipe": name, "out": absolute(self.out),
                   "model": None if self.model is None else absolute(self.model),
                   "cache": None if self.cache is None else absolute(self.cache),
                   "eval_data": self.eval_data if self.eval_data in (None, "digits") else str(absolute(self.eval_data))}
        settled.update({stage: getattr(self, stage) or getattr(chosen, stage)
                        for stage in ("synthesis", "reconstruct", "distill")})
        for name, value in settled.items():
            object.__setattr__(self, name, value)
        _require(not self.distill.adversarial_steps or self.synthesis.method == "generator",
                 "distill adversarial_steps trains the dream generator between epochs: use it with synthesis method "
                 "'generator' (--recipe generator), or set it to 0")

    @classmethod
    def from_dict(cls, values: dict, where: str | None = None):
        """As ``_Config.from_dict``, with each stage table (synthesis, reconstruct, distill) read as changes
        to the recipe's stage: a file's ``[distill] channels_last = false`` keeps every other setting of the
        recipe's distillation (``_on_recipe``)."""
        if isinstance(values, dict):
            values = {**values, **_on_recipe(values)}
            values.update({name: list(_input_text(name, values[name])) for name in _INPUT_TEXT
                           if isinstance(values.get(name), str)})  # "3x32x32", "0.5,0.5,0.5" as the options take them
        return super().from_dict(values, where)

    def _settle_stages(self) -> None:
        """Each stage's config given as a dict of its options read as a file's table is (a synthesis, reconstruct
        or distill dict changes the recipe's stage, ``_on_recipe``; any other value is left to ``_require_fields``);
        the pruning stages as a tuple of configs (one, a list, or their dicts)."""
        hints = _hints(type(self))
        on_recipe = _on_recipe({"recipe": self.recipe, "model": self.model,
                                **{stage: getattr(self, stage) for stage in ("synthesis", "reconstruct", "distill")}})
        for name in ("latency_target", "synthesis", "reconstruct", "distill", "export", "bench"):
            value = getattr(self, name)
            kind = next(k for k in typing.get_args(hints[name]) if k is not type(None))
            if isinstance(value, dict):
                object.__setattr__(self, name, kind.from_dict(on_recipe.get(name, value), name))
        stages = self.prune if isinstance(self.prune, (tuple, list)) else (self.prune,)
        stages = tuple(pruning_from_dict(p) if isinstance(p, dict) else p for p in stages)
        _require(all(isinstance(p, tuple(PRUNING_KINDS.values())) for p in stages),
                 "prune must be MagnitudePruning and/or ChannelPruning configs")
        object.__setattr__(self, "prune", stages)

    def _settle_input_text(self) -> None:
        """The teacher's input fields given as their options' text ("3x32x32", "0.5,0.5,0.5") or lists, as tuples."""
        for name in _INPUT_TEXT:
            value = getattr(self, name)
            if isinstance(value, str):
                value = _input_text(name, value)
            if isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, name, value)

    def _settle_teacher(self) -> None:
        """Check the teacher's source and input options; tuples for lists, a factory's file made absolute."""
        from edgefree.models.sources import is_program, parse_source

        program = is_program(self.model)
        _require(self.model is None or program or self.arch is not None,
                 "--model needs --arch: name the architecture of the checkpoint (a name from `edgefree models`, "
                 "torchvision:<name>, or path/to/file.py:factory), or pass a .pt2 program")
        _require(not program or self.arch is None, f"{self.model} is a torch.export program and carries its own "
                 f"architecture: leave out --arch {self.arch}")
        _require(self.model is not None or (self.arch is None and self.input_shape is None and self.mean is None
                                            and self.std is None and self.value_range is None
                                            and self.num_classes == 10),  # the built-in default's 10 digits
                 "--arch, --num-classes, --input-shape, --mean, --std and --value-range describe a teacher of your "
                 "own: pass its weights with --model")
        _require(self.model is not None or self.eval_data in (None, "digits"),
                 "--eval-data is for a teacher of your own: the built-in default is evaluated on its digits "
                 "test split; pass --model (and --arch) to evaluate yours, or leave out --eval-data")
        if self.arch is not None:
            object.__setattr__(self, "arch", parse_source(self.arch).name)
        for name in ("mean", "std", "value_range"):
            value = getattr(self, name)
            _require(value is None or all(isinstance(v, (int, float)) and math.isfinite(v) for v in value),
                     f"{name} must be finite numbers, got {value}")
        _require(self.std is None or min(self.std) > 0, f"std must be positive for every channel, got {self.std}")
        _require(self.value_range is None or (len(self.value_range) == 2 and self.value_range[0] < self.value_range[1]),
                 f"value_range must be [low, high] with low < high, got {self.value_range}")
        if self.input_shape is not None:
            from edgefree.models import parse_shape

            object.__setattr__(self, "input_shape", parse_shape("x".join(map(str, self.input_shape))))

    def input_changes(self) -> dict:
        """What this build changes in the teacher's input spec (``load_teacher``'s ``input_spec``)."""
        return {"shape": self.input_shape, "mean": self.mean, "std": self.std, "value_range": self.value_range}

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values = {k: v.to_dict() if isinstance(v, _Config) else v for k, v in values.items()}
        return {**values, "prune": [p.to_dict() for p in self.prune], "out": str(self.out),
                "model": str(self.model) if self.model else None, "cache": str(self.cache) if self.cache else None}

    def pruning(self, kind: type):
        """The config of pruning ``kind`` (MagnitudePruning or ChannelPruning) in this build, or None."""
        return next((p for p in self.prune if isinstance(p, kind)), None)

    def for_input(self, rank: int) -> "BuildConfig":
        """This build for a teacher of input ``rank`` (1: a signal; 2: an image): a recipe that dreams
        signals its own way (``Recipe.signal_synthesis``) gets those settings, with the synthesis settings
        that differ from the recipe's image settings, and those named in ``synthesis_given``, on top.
        A build that names another synthesis method keeps its own."""
        chosen = recipe(self.recipe)
        theirs = chosen.synthesis_for(rank)
        if theirs is chosen.synthesis or self.synthesis.method != chosen.synthesis.method:
            return self
        _require(theirs.method == "generator" or not self.distill.adversarial_steps,
                 f"distill adversarial_steps trains the dream generator, and recipe {self.recipe!r} dreams a signal "
                 f"with {theirs.method}: use --recipe generator, or leave out --adversarial-steps")
        given = {**self.recipe_overrides().get("synthesis", {}),
                 **{name: getattr(self.synthesis, name) for name in self.synthesis_given}}
        return self.replace(synthesis=theirs.replace(**given))

    def recipe_overrides(self, rank: int | None = None) -> dict[str, dict]:
        """Per stage, the settings that differ from the recipe's (its synthesis for a teacher of input
        ``rank``, ``Recipe.synthesis_for``): what ran besides the recipe."""
        chosen = recipe(self.recipe)
        changed = {}
        for stage in ("synthesis", "reconstruct", "distill"):
            theirs = chosen.synthesis_for(rank) if stage == "synthesis" else getattr(chosen, stage)
            mine, theirs = getattr(self, stage).to_dict(), theirs.to_dict()
            diff = {k: v for k, v in mine.items() if theirs.get(k) != v}
            if diff:
                changed[stage] = diff
        return changed


def _on_recipe(values: dict) -> dict:
    """The stage tables of a build's ``values`` filled in from its recipe's stages (what ``BuildConfig``
    would choose: ``recipe``, else the default for a ``model`` or the built-in one). A table's ``iterations``
    without ``first_iterations`` leaves the first batch at None, the same steps (as ``to_toml`` writes a
    config whose first batch is None). A synthesis table naming another ``method`` than the recipe's starts
    from the synthesis of that method's recipe (``METHOD_RECIPES``), since the recipe's settings are for its
    own. A recipe or method that is no known name is left to ``BuildConfig`` and ``SynthesisConfig`` to name."""
    name = values.get("recipe") or (DEFAULT_RECIPE if values.get("model") is not None else DEMO_RECIPE)
    if not isinstance(name, str) or name not in RECIPES:
        return {}
    filled = {}
    for stage in ("synthesis", "reconstruct", "distill"):
        table, theirs = values.get(stage), getattr(RECIPES[name], stage)
        if not isinstance(table, dict):
            continue
        if stage == "synthesis" and table.get("method", theirs.method) != theirs.method:
            if not isinstance(table["method"], str) or table["method"] not in METHOD_RECIPES:
                continue
            theirs = RECIPES[METHOD_RECIPES[table["method"]]].synthesis
        theirs = theirs.to_dict()
        if "iterations" in table and "first_iterations" not in table:
            theirs["first_iterations"] = None
        filled[stage] = {**theirs, **table}
    return filled


def load_config_file(path: str | Path) -> dict:
    """A build's settings from a TOML file, or from a build's ``report.json`` (its ``config``), as a dict
    for ``BuildConfig.from_dict``."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise EdgefreeError(f"config file {path} does not exist (or is a folder): pass a .toml file or a report.json")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(path.read_text())
            values = values.get("config", values) if isinstance(values, dict) else values
        else:
            values = tomllib.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise EdgefreeError(f"config file {path} is not valid {kind} ({exc}): fix it, or write one with "
                            "`edgefree build ... --save-config FILE`") from exc
    if not isinstance(values, dict):
        raise EdgefreeError(f"config file {path} holds no table of build options")
    return values if path.suffix.lower() == ".json" else _paths_from(values, path.resolve().parent)


_PATH_KEYS = ("out", "model", "cache", "eval_data")  # a config file's relative paths are the file's folder's


def _paths_from(values: dict, folder: Path) -> dict:
    """``values`` with each relative path (``_PATH_KEYS``, a factory file in ``arch``) made relative to ``folder``,
    the config file's, as a path in a file is read wherever the command runs."""
    found = dict(values)
    for key in _PATH_KEYS:
        value = found.get(key)
        if isinstance(value, str) and value and value != "digits" and not Path(value).expanduser().is_absolute():
            found[key] = str(folder / value)
    arch = found.get("arch")
    if isinstance(arch, str) and ":" in arch:
        file, factory = arch.rsplit(":", 1)
        if file.endswith(".py") and not Path(file).expanduser().is_absolute():
            found["arch"] = f"{folder / file}:{factory}"
    return found


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def to_toml(config: BuildConfig) -> str:
    """``config`` as TOML that ``load_config_file`` reads back (a stage turned off is ``false``)."""
    values = config.to_dict()
    nested = {k: v for k, v in values.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in values.items() if isinstance(v, list) and v and all(isinstance(t, dict) for t in v)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items()
             if k not in nested and k not in arrays and v is not None and not (k == "synthesis_given" and not v)]
    lines += [f"{k} = false" for k in ("export", "bench") if values[k] is None]
    chosen = recipe(config.recipe)
    for name, table in nested.items():
        lines.append("")
        if name == "synthesis" and chosen.signal_synthesis is not None and \
                config.synthesis.method == chosen.synthesis.method:
            lines += [f"# an image teacher's dreams: a 1-D signal teacher dreams the signal settings of recipe "
                      f"{config.recipe} instead, with those named in synthesis_given on top (BuildConfig.for_input)"]
        lines += [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    for name, tables in arrays.items():  # the pruning stages, in order
        for table in tables:
            lines += ["", f"[[{name}]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"
