"""Where a teacher's architecture comes from: a source string, parsed into one of four kinds.

* ``resnet20-cifar``: a zoo name (``edgefree models``);
* ``torchvision:mobilenet_v2``: a classification model of ``torchvision.models``, untrained
  (``weights=None``: nothing is downloaded), with ``num_classes`` outputs;
* ``path/to/file.py:factory`` or ``package.module:factory``: a function of the user's that returns
  an ``nn.Module``. **This imports and runs the user's code**, as ``python file.py`` would;
* a ``.pt2`` file: a ``torch.export`` program (``edgefree.models.program``), which needs no code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edgefree.errors import EdgefreeError, first_line
from edgefree.models.registry import zoo_entry
from edgefree.models.spec import InputSpec

TORCHVISION = "torchvision:"
# torchvision's models take ImageNet-sized images unless the user says otherwise
TORCHVISION_SPEC = InputSpec((3, 224, 224))


class ModelSourceError(EdgefreeError):
    """A teacher's source cannot be parsed, imported or built."""


@dataclass(frozen=True)
class Source:
    """A parsed source: ``kind`` is "zoo", "torchvision", "file", "module" or "program"."""

    kind: str
    target: str  # the zoo or torchvision name, the file path, the module name or the .pt2 path
    factory: str | None = None

    @property
    def name(self) -> str:
        """The source as a string that ``parse_source`` reads back (file paths absolute)."""
        if self.kind == "zoo":
            return self.target
        if self.kind == "torchvision":
            return TORCHVISION + self.target
        if self.kind == "program":
            return self.target
        return f"{self.target}:{self.factory}"


def is_program(path) -> bool:
    return path is not None and str(path).lower().endswith(".pt2")


def parse_source(source: str) -> Source:
    """Which of the four kinds ``source`` is (a file path made absolute); nothing is imported yet.

    Example:
        >>> parse_source("torchvision:resnet18")
        Source(kind='torchvision', target='resnet18', factory=None)
    """
    source = str(source).strip()
    if is_program(source):
        return Source("program", str(Path(source).expanduser().resolve()))
    if source.startswith(TORCHVISION):
        return Source("torchvision", source[len(TORCHVISION):])
    if ":" not in source:
        return Source("zoo", source)
    target, _, factory = source.rpartition(":")
    if not target or not factory.isidentifier():
        raise ModelSourceError(f"model source {source!r} does not parse: give path/to/file.py:factory or "
                               "package.module:factory, where factory is a function name")
    if target.endswith(".py"):
        return Source("file", str(Path(target).expanduser().resolve()), factory)
    return Source("module", target, factory)


AUXILIARY_HEADS = {"googlenet", "inception_v3"}


def _torchvision(name: str, num_classes: int) -> nn.Module:
    from torchvision import models

    known = models.list_models(module=models)  # the classification models only
    if name not in known:
        raise ModelSourceError(f"torchvision has no classification model {name!r}: pick one of "
                               f"torchvision.models.list_models(module=torchvision.models), e.g. "
                               f"{', '.join(k for k in ('mobilenet_v3_small', 'mobilenet_v2', 'resnet18', 'efficientnet_b0') if k in known)}")
    # GoogLeNet and Inception v3 return their auxiliary heads' logits too in train mode, which distillation
    # runs; the classifier that is deployed is the main head, so they are built without the auxiliary ones
    extra = {"aux_logits": False} if name in AUXILIARY_HEADS else {}
    return models.get_model(name, weights=None, num_classes=num_classes, **extra)  # weights=None: never a download


def _first_line(exc: BaseException) -> str:
    text = first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _import_file(path: Path):
    if not path.is_file():
        raise ModelSourceError(f"model file {path} does not exist: pass path/to/file.py:factory with the file "
                               "that defines your model")
    # a module name of its own per file, so two files of one name do not collide
    name = f"edgefree_user_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up there
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ModelSourceError(f"importing your model file {path} failed ({_first_line(exc)}): fix the file "
                               "(edgefree runs it as Python, as `python file.py` would)") from exc
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ModelSourceError(f"importing your model module {name!r} failed ({_first_line(exc)}): install it or "
                               "put its folder on PYTHONPATH, or pass path/to/file.py:factory instead") from exc


def _call_factory(source: Source, num_classes: int) -> nn.Module:
    module = _import_file(Path(source.target)) if source.kind == "file" else _import_module(source.target)
    factory = getattr(module, source.factory, None)
    if not callable(factory):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ModelSourceError(f"{source.target} defines no function {source.factory!r} (it defines: "
                               f"{', '.join(defined) or 'nothing callable'}): name the function that returns your model")
    try:
        accepts = "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepts = False
    try:
        model = factory(num_classes=num_classes) if accepts else factory()
    except SystemExit as exc:  # user code that exits has failed: never a silent success
        raise ModelSourceError(f"your model factory {source.name} exited (SystemExit {exc.code!r}) instead of "
                               f"returning a model: make {source.factory}() return an nn.Module") from exc
    except Exception as exc:
        raise ModelSourceError(f"your model factory {source.name} raised {_first_line(exc)}: fix it so that "
                               f"{source.factory}({'num_classes=N' if accepts else ''}) returns an nn.Module") from exc
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"your model factory {source.name} returned a {type(model).__name__}, not a "
                               "torch.nn.Module: return the model itself")
    return model


def build_architecture(source: Source, num_classes: int) -> tuple[nn.Module, InputSpec | None]:
    """An untrained instance of a zoo, torchvision or factory ``source`` and the input spec it comes with
    (None: the source says nothing; a factory's input is the user's to give)."""
    if source.kind == "zoo":
        entry = zoo_entry(source.target)
        return entry.factory(num_classes=num_classes), entry.input_spec
    if source.kind == "torchvision":
        return _torchvision(source.target, num_classes), TORCHVISION_SPEC
    if source.kind in ("file", "module"):
        return _call_factory(source, num_classes), None
    raise ModelSourceError(f"{source.name} is a program: load it with load_teacher, it has no architecture to build")
