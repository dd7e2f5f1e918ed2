"""Loading weights safely: ``weights_only`` (no pickled code runs), clear errors."""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from edgefree.errors import CheckpointError, first_line

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _open_checked(path: Path) -> None:
    """Refuse what is no checkpoint file before torch reads it: a folder, an unreadable file, JSON."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file: pass the .pt file saved with "
                              "torch.save(model.state_dict(), path)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the path of a saved state_dict")
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be opened ({exc.strerror}): check its permissions") from exc
    if head[:1] in (b"{", b"["):
        raise CheckpointError(f"checkpoint {path} is a JSON file, not PyTorch weights: pass the .pt file "
                              "saved with torch.save(model.state_dict(), path)")
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"checkpoint {path} is a NumPy array file, not PyTorch weights: pass the .pt file "
                              "saved with torch.save(model.state_dict(), path)")
    if _is_program_archive(path):
        raise CheckpointError(f"checkpoint {path} is a torch.export program (torch.export.save), not a state_dict: "
                              "name it .pt2 and pass it without --arch, as a program")


def _is_program_archive(path: Path) -> bool:
    """A zip written by torch.export.save (it holds an ``archive_format`` entry), whatever its name."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "archive_format" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    _open_checked(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        text = str(exc).strip()
        first = ("it holds pickled objects other than tensors, which edgefree never runs"
                 if "weights_only" in text or "Weights only" in text
                 else "it is no torch.save file" if isinstance(exc, KeyError) or not text  # pickle's own codes
                 else first_line(exc))
        raise CheckpointError(
            f"checkpoint {path} cannot be read as PyTorch weights ({first}). It may be corrupt or "
            "truncated, or hold objects other than tensors; save it with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict of tensors; "
            "save it with torch.save(model.state_dict(), path)"
        )
    broken = [k for k, v in obj.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(
            f"checkpoint {path} holds NaN or infinite values in {len(broken)} tensor(s) ({', '.join(broken[:3])}): "
            "the model was saved after its training diverged; pass a checkpoint with finite weights")
    state = OrderedDict((k.removeprefix("module."), v) for k, v in obj.items())
    metadata = getattr(obj, "_metadata", None)  # per-module versions: some modules (MNASNet) read them on load
    if metadata is not None:
        # a DataParallel wrapper's own entry is "" and its model's is "module": the model's wins
        state._metadata = OrderedDict(("" if k == "module" else k.removeprefix("module."), v) for k, v in metadata.items())
    return state


def _check_fit(state: dict[str, torch.Tensor], model: nn.Module, path: Path, arch: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches (checkpoint vs model)", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    classes = _classes_of_last_layer(state, expected) if not missing and not unexpected else None
    if classes is not None:
        raise CheckpointError(
            f"checkpoint {path} scores {classes[0]} classes and {arch!r} was built for {classes[1]} (its last "
            f"layer: " + "; ".join(problems) + f"): pass --num-classes {classes[0]} (num_classes={classes[0]} in "
            "Python)")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit architecture {arch!r}: " + "; ".join(problems)
            + ". Check --arch (and --num-classes); `edgefree models` lists the architectures."
        )


def _classes_of_last_layer(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> tuple[int, int] | None:
    """(checkpoint's, model's) number of classes where the only shapes that differ are the last layer's
    outputs (its weight's and bias's first dimension): a model built for another --num-classes."""
    differ = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    last = next(reversed(expected)).rsplit(".", 1)[0] if expected else None
    if not differ or any(k.rsplit(".", 1)[0] != last or state[k].shape[1:] != expected[k].shape[1:] for k in differ):
        return None
    return state[differ[0]].shape[0], expected[differ[0]].shape[0]


def load_checkpoint(model: nn.Module, path: str | Path, arch: str | None = None) -> nn.Module:
    """Load a state_dict (raw or wrapped, ``module.`` prefixes stripped) strictly into ``model``;
    ``arch`` names the architecture in errors."""
    path = Path(path)
    state = _read_state_dict(path)
    _check_fit(state, model, path, arch or type(model).__name__)
    model.load_state_dict(state, strict=True)
    return model.eval()

