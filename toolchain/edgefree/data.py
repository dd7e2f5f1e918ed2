"""Evaluation data, and only evaluation data: the recovery pipeline never reads training data.

``load_eval_data(spec, input_spec)`` accepts:
  * ``"digits"``: the held-out split of scikit-learn's 8x8 digits (the built-in default's),
  * a zip in ImageFolder layout, optionally under a split folder (``test/<class>/x.jpg``),
  * an ImageFolder directory (``<class>/x.png``),
  * torchvision's ``cifar-10-batches-py`` folder (its test batch),
  * for a signal model (input (C, L)), an ``.npz`` of signals: ``x`` float (N, C, L) of raw values
    (the sensor's units, which the input spec normalizes; never divided by 255), ``y`` int (N,),
    optionally ``class_names`` (strings, indexed by ``y``).

Images come back as ``LabeledImages`` (uint8 pixels), signals as ``LabeledSignals`` (float32
raw values); both give ``normalized(spec, rows)``, what the model takes.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgefree.cache import cache_dir
from edgefree.errors import DataError, warn
from edgefree.models.registry import InputSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
TRAIN_SPLITS = {"train", "training"}
DIGITS_SPLIT_SEED = 0


@dataclass
class LabeledImages:
    """Pixels as uint8 (N, C, H, W), integer labels, and where they came from."""

    pixels: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def stored(self) -> torch.Tensor:
        """The pixels as held (for a hash of the set)."""
        return self.pixels

    def normalized(self, spec: InputSpec, rows: slice = slice(None)) -> torch.Tensor:
        """The images (``rows`` of them) as the model takes them: pixels / 255 in ``spec``'s value range, normalized."""
        return spec.normalize(spec.from_unit(self.pixels[rows].float() / 255.0))


@dataclass
class LabeledSignals:
    """Signals as float32 raw values (N, C, L), in the sensor's units, integer labels, and where they came from."""

    values: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def stored(self) -> torch.Tensor:
        """The raw values as held (for a hash of the set)."""
        return self.values

    def normalized(self, spec: InputSpec, rows: slice = slice(None)) -> torch.Tensor:
        """The signals (``rows`` of them) as the model takes them: raw values, normalized per channel."""
        return spec.normalize(self.values[rows])


EvalData = LabeledImages | LabeledSignals


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 (N, 1, 8, 8) and labels; 80/20 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        pixels, digits.target, test_size=0.2, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    return (train_x, train_y) if split == "train" else (test_x, test_y)


GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
COLOUR_MODES = {"RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"}


class _Decoder:
    """Images to uint8 arrays of the model's mode; grayscale for an RGB model is converted and counted,
    colour for a grayscale model refused (its conversion would lose what the model never saw)."""

    def __init__(self, spec: InputSpec, origin: Path):
        self.mode, self.origin, self.gray = ("RGB" if spec.shape[0] == 3 else "L"), origin, 0

    def __call__(self, blob: bytes, name: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(blob)) as img:
                img.load()
                if self.mode == "L" and img.mode in COLOUR_MODES:
                    raise DataError(f"{name} in {self.origin} is a colour image ({img.mode}) but the model takes "
                                    "1 channel: pass grayscale images")
                self.gray += self.mode == "RGB" and img.mode in GRAY_MODES
                return np.asarray(img.convert(self.mode))
        except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            why = "not an image file Pillow knows" if isinstance(exc, Image.UnidentifiedImageError) else exc
            raise DataError(f"{name} in {self.origin} is not a readable image ({why}): remove or replace it") from exc

    def report(self, count: int) -> None:
        if self.gray:
            warn(f"{self.gray} of {count} images in {self.origin} are grayscale: converted to RGB (the gray "
                 "value in all 3 channels) for the model's 3 input channels")


def _numbered(folders: list[str]) -> bool:
    """Class folders named by label (0, 1, ...): each takes its number as its label."""
    return all(name.isdigit() for name in folders)


def _class_index(found: list[str], spec: InputSpec, origin: str) -> dict[str, int]:
    """Class folders take the model's label of their name when the model names its classes (a folder
    it does not name is refused); folders that are all numbers take those numbers as labels; otherwise
    folders sorted by name are labels 0, 1, ... (``_require_a_folder_per_class`` checks that they may)."""
    numbered = _numbered(found)  # labels checked later against the model's classes
    if spec.class_names and not set(found) <= set(spec.class_names):
        if numbered:
            return {name: int(name) for name in found}
        unknown = sorted(set(found) - set(spec.class_names))
        raise DataError(f"class folders {unknown[:5]} in {origin} are not classes of the model, which names "
                        f"{list(spec.class_names)[:10]}{' ...' if len(spec.class_names) > 10 else ''}: name each "
                        "folder after the model's class it holds")
    if spec.class_names:
        return {name: spec.class_names.index(name) for name in found}
    if numbered:
        return {name: int(name) for name in found}
    return {name: i for i, name in enumerate(sorted(found))}


def _stack(groups: dict[str, list[np.ndarray]], spec: InputSpec, origin: str) -> tuple[np.ndarray, ...]:
    """Pixels (N, C, H, W), labels, and the class folders' names in the order of their labels."""
    if not groups:
        raise DataError(f"no images found in {origin}: expected <class>/<image> files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images, labels = [], []
    index = sorted(_class_index(list(groups), spec, origin).items(), key=lambda item: item[1])
    for name, label in index:
        images += groups[name]
        labels += [label] * len(groups[name])
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        raise DataError(f"images in {origin} have different sizes {sorted(shapes)[:3]}: resize them to one size")
    array = np.stack(images)
    array = array[..., None] if array.ndim == 3 else array
    return array.transpose(0, 3, 1, 2).copy(), np.asarray(labels), np.asarray([name for name, _ in index])


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"{name} in {path} cannot be read ({exc}): the archive is damaged or encrypted; "
                        "make or download it again") from exc


def _from_zip(path: Path, spec: InputSpec) -> tuple[np.ndarray, ...]:
    decode = _Decoder(spec, path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable zip file ({exc}): pass a zip, an ImageFolder directory, "
                        "a cifar-10-batches-py folder, or 'digits'") from exc
    with archive:
        entries = [n for n in archive.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES]
        if not entries and any(Path(n).name == "data.pkl" for n in archive.namelist()):
            raise DataError(f"{path} is a torch.save file (a checkpoint or tensors), not evaluation data: pass a zip "
                            "of <class>/<image> files, an ImageFolder directory, or a cifar-10-batches-py folder")
        tops = {Path(n).parts[0] for n in entries if len(Path(n).parts) >= 3}
        if tops and tops <= TRAIN_SPLITS:
            raise DataError(f"{path} holds only a training split: edgefree evaluates on held-out data only; pass a test split")
        split = next((s for s in ("test", "val", "valid", "validation") if s in tops), None)
        groups: dict[str, list[np.ndarray]] = defaultdict(list)
        for name in sorted(entries):
            parts = Path(name).parts
            if split and parts[0] != split:
                continue
            groups[parts[-2]].append(decode(_read_member(archive, name, path), name))
    decode.report(sum(len(g) for g in groups.values()))
    return _stack(groups, spec, str(path))


def _from_folder(path: Path, spec: InputSpec) -> tuple[np.ndarray, ...]:
    decode = _Decoder(spec, path)
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for file in sorted(path.glob("*/*")):
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
            groups[file.parent.name].append(decode(file.read_bytes(), file.relative_to(path).as_posix()))
    decode.report(sum(len(g) for g in groups.values()))
    return _stack(groups, spec, str(path))


def _from_cifar_batches(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    root = path.parent if path.name == "cifar-10-batches-py" else path
    try:
        ds = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as exc:
        raise DataError(f"{path} is not a complete torchvision cifar-10-batches-py folder (one of its six "
                        "batch files or batches.meta is missing or damaged): extract the CIFAR-10 python archive there again") from exc
    return ds.data.transpose(0, 3, 1, 2).copy(), np.asarray(ds.targets)


def _cached(path: Path, spec: InputSpec, reader) -> tuple[np.ndarray, ...]:
    """``reader(path, spec)`` (pixels, labels, class folders), kept in the cache by path, size, time and spec."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{spec.shape}|{spec.class_names}".encode()).hexdigest()[:16]
    file = cache_dir("data") / f"{path.stem}-{key}.npz"
    if file.exists():
        try:
            with np.load(file, allow_pickle=False) as saved:
                return saved["pixels"], saved["labels"], saved["folders"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a damaged cache entry: decode again
            file.unlink(missing_ok=True)
    pixels, labels, folders = reader(path, spec)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.part")  # its own: two builds may decode the same data at once
    with open(tmp, "wb") as f:
        np.savez(f, pixels=pixels, labels=labels, folders=folders)
    tmp.replace(file)  # whole or absent
    return pixels, labels, folders


def _signals_npz(path: Path, spec: InputSpec) -> LabeledSignals:
    """An ``.npz`` of signals (``x`` (N, C, L), ``y`` (N,), optional ``class_names``), checked against ``spec``."""
    fix = "save one with numpy.savez(path, x=float array N x C x L, y=int array N[, class_names=...])"
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc}): {fix}") from exc
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path} holds {sorted(arrays) or 'nothing'}, not the arrays x and y: {fix}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer) \
            or y.shape != (len(x),):
        raise DataError(f"{path}: x is {x.dtype} {x.shape} and y {y.dtype} {y.shape}; x must be numbers "
                        f"(N, C, L) and y one integer label per signal: {fix}")
    if not len(x):
        raise DataError(f"{path} holds no signals (x is {x.shape}): save at least one labelled signal")
    if tuple(x.shape[1:]) != tuple(spec.shape):
        raise DataError(f"evaluation signals in {path} are {tuple(x.shape[1:])} (C, L) but the model takes "
                        f"{tuple(spec.shape)}: cut or resample them to the model's channels and length")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN or infinite values: drop or repair those signals")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: y holds negative labels: give class indices 0, 1, ...")
    names = tuple(str(n) for n in arrays.get("class_names", ()))
    if names and spec.class_names and names != tuple(spec.class_names):
        raise DataError(f"{path} names its classes {list(names)}, the model {list(spec.class_names)}: relabel "
                        "y in the model's order")
    _check_range(x, spec, path)
    return LabeledSignals(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), str(path))


OUTSIDE_RANGE_WARNING = 0.01  # the fraction of a signal set's values outside the value range that is warned about


def _check_range(x: np.ndarray, spec: InputSpec, path: Path) -> None:
    """One warning line when many raw values lie outside the spec's value range: the dreams are clamped
    to it, so a range that misses the sensor's real one gives dreams unlike its signals."""
    low, high = spec.value_range
    outside = float(((x < low) | (x > high)).mean())
    if outside > OUTSIDE_RANGE_WARNING:
        warn(f"{100 * outside:.1f}% of the values in {path} lie outside the value range {low:.4g} to {high:.4g} "
             f"(they span {float(x.min()):.4g} to {float(x.max()):.4g}); dreams stay inside the range: pass "
             "--value-range LOW,HIGH with your sensor's range")


def load_eval_data(source: str | Path, spec: InputSpec, classes: int | None = None) -> EvalData:
    """Load an evaluation set matching ``spec``: uint8 pixels for an image model, raw float values for a
    signal model (an ``.npz``, see the module's docstring). Labels must be below the model's count of
    class names, or ``classes`` (its outputs) where it names none.

    Example:
        >>> from edgefree.models import load_teacher
        >>> data = load_eval_data("digits", load_teacher("digits-cnn").spec)
        >>> len(data)
        360
    """
    if spec.rank == 1:
        data = _signals_npz(_signal_source(source), spec)
        _require_known_classes(data.labels, spec, classes)
        return _warned_if_few(data, "signals")
    if Path(str(source)).suffix.lower() == ".npz":
        raise DataError(f"evaluation data {source} is an .npz, which edgefree reads for a signal model (input C x L); "
                        f"this model takes images {'x'.join(map(str, spec.shape))}: pass a zip, an ImageFolder "
                        "directory, a cifar-10-batches-py folder, or 'digits'")
    if str(source) == "digits":
        pixels, labels = digits_split("test")
        name = "scikit-learn digits (held-out 20%)"
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"evaluation data {path} does not exist: pass a zip, an ImageFolder directory, "
                            "a cifar-10-batches-py folder, or 'digits'")
        if path.is_dir() and ((path / "test_batch").exists() or (path / "cifar-10-batches-py").exists()):
            pixels, labels = _from_cifar_batches(path)
        else:
            pixels, labels, folders = _cached(path, spec, _from_folder if path.is_dir() else _from_zip)
            _require_a_folder_per_class(folders, spec, classes, path)
        name = str(path)
    if tuple(pixels.shape[1:]) != tuple(spec.shape):
        raise DataError(f"evaluation images are {tuple(pixels.shape[1:])} (C, H, W) but the model takes "
                        f"{tuple(spec.shape)}: use data of the model's input size")
    _require_known_classes(torch.from_numpy(labels), spec, classes)
    return _warned_if_few(LabeledImages(torch.from_numpy(pixels), torch.from_numpy(labels).long(), name), "images")


FEW_EVAL_ITEMS = 100  # below this, one item moves top-1 by more than a point


def _warned_if_few(data: EvalData, kind: str) -> EvalData:
    """``data``, after a warning where it is too small for its top-1 to tell small drops from chance."""
    if len(data) < FEW_EVAL_ITEMS:
        warn(f"evaluation data {data.name} holds only {len(data)} {kind}: each is {100 / len(data):.1f} points of "
             f"top-1, so accuracies measured on it differ by several points by chance alone; use a few hundred "
             f"{kind} or more to measure small drops")
    return data


def _signal_source(source: str | Path) -> Path:
    path = Path(source)
    if path.suffix.lower() == ".npz" and not path.exists():
        raise DataError(f"evaluation data {source} does not exist: check the path")
    if path.suffix.lower() != ".npz" or not path.is_file():
        raise DataError(f"evaluation data {source} is not an .npz file: a signal model (input C x L) is evaluated "
                        "on an .npz with x (N, C, L) raw values and y (N,) labels")
    return path


def _require_a_folder_per_class(folders: np.ndarray, spec: InputSpec, classes: int | None, path: Path) -> None:
    """Class folders that are neither the model's class names nor numbers take labels 0, 1, ... in sorted order,
    which is the model's own labelling only where every class has its folder."""
    names = [str(f) for f in folders]
    if spec.class_names or not classes or _numbered(names) or len(names) == classes:
        return
    shown = ", ".join(f"{n} = {i}" for i, n in enumerate(names[:3]))
    raise DataError(f"{path} has {len(names)} class folders for a model of {classes} classes that names none: "
                    f"folders take labels in sorted order ({shown}{', ...' if len(names) > 3 else ''}), which is "
                    f"the model's only with a folder for each of its {classes} classes; name the folders by label "
                    "(0, 1, ...) instead")


def _require_known_classes(labels: torch.Tensor, spec: InputSpec, classes: int | None = None) -> None:
    """Labels must be classes of the model: below its class names' count, or ``classes`` (its outputs)."""
    count = len(spec.class_names) or classes
    if len(labels) and count and int(labels.max()) >= count:
        raise DataError(f"evaluation data holds label {int(labels.max())}, beyond the model's {count} classes "
                        f"(labels 0 to {count - 1}): keep only the model's classes, or pass the --num-classes the "
                        "model was trained with")
