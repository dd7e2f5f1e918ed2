"""Reading a ``torch.export`` program (``.pt2``) so that nothing the file carries runs.

``torch.export.load`` unpickles four parts of an archive with ``weights_only=False`` (the sample
inputs, weights and tensor constants saved with pickle, the legacy weights and constants files),
loads custom-object constants with ``pickle``, evaluates every symbolic shape expression with
``sympy.sympify`` (Python's ``eval``) and turns the program's ``guards_code`` into Python source it
executes. Any of them runs code a crafted file brings along. ``read_program`` reads the same
archive without those paths:

* the graph (``models/model.json``) is parsed as JSON and checked before torch sees it: every
  name is an identifier, every attribute path a dotted list of names, every shape expression a
  plain ``sympy.srepr`` of symbols, integers and arithmetic; ``guards_code`` and each node's
  free-text metadata (stack traces, annotations) are dropped, as edgefree uses neither;
* weights and tensor constants are read as raw tensor data, and the pickled ones (tensor
  subclasses, legacy files) with ``torch.load(weights_only=True)``;
* the sample inputs are not read (edgefree makes its own example inputs from the input spec);
  AOTInductor libraries, ExecuTorch payloads and extra files are not read either;
* a custom-object constant (a TorchScript or pickled Python object) is refused.

Anything else a program holds is refused with one line naming it. torch's own verifier then
checks that every call in the graph is an operator (``torch.ops``), never an arbitrary callable.
The archive's layout and the deserializer are torch 2.14's (pinned in pyproject.toml);
``tests/test_untrusted_files.py`` crafts every part above and fails if a payload runs.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from edgefree.errors import CheckpointError, first_line

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PATH_PART = re.compile(r"[A-Za-z0-9_\-]+\Z")  # nn.Module children: "layer1", "0", a ModuleDict's "conv-1"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
_PATH_KEYS = ("parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "fqn")
_NAMED_MAPS = ("tensor_values", "sym_int_values", "sym_float_values", "sym_bool_values", "custom_obj_values")
# what sympy.srepr writes for the shapes torch.export records (torch's own functions are added below)
_EXPR_CALLS = {"Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor",
               "ceiling", "Equality", "Unequality", "LessThan", "StrictLessThan", "GreaterThan", "StrictGreaterThan",
               "And", "Or", "Not", "Piecewise", "ExprCondPair", "IntInfinity", "NegativeIntInfinity"}
_EXPR_NODES = (ast.Expression, ast.Call, ast.Name, ast.Constant, ast.keyword, ast.BinOp, ast.UnaryOp, ast.Compare,
               ast.BoolOp, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_RESAVE = "export the model again with torch.export.save(torch.export.export(model, (x,)), path)"


class _Refused(Exception):
    """What the archive holds that edgefree does not read (the message completes "program P holds ...")."""


def read_program(path: str | Path):
    """The ``torch.export.ExportedProgram`` saved at ``path``, read without running anything it carries.

    Raises ``CheckpointError`` (one line) for a file that is no program, or one that holds a part
    edgefree does not load (a custom object, a pickled object other than a tensor, a name or
    shape expression that ``torch.export.save`` does not write).
    """
    from torch.export.pt2_archive._package import PT2ArchiveReader

    path = Path(path)
    try:
        reader = PT2ArchiveReader(os.fspath(path))
        names = set(reader.get_file_names())
    except Exception as exc:  # the zip reader raises RuntimeError, an archive without its format AssertionError
        raise CheckpointError(f"{path} cannot be read as a torch.export program ({_first_line(exc)}): save it with "
                              "torch.export.save(torch.export.export(model, (x,)), path)") from exc
    try:
        return _deserialize(reader, names, path)
    except _Refused as exc:
        raise CheckpointError(f"program {path} holds {exc}, which edgefree does not load (it runs nothing a "
                              f"program file carries): {_RESAVE}") from None


def _deserialize(reader, names: set[str], path: Path):
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
    from torch.export.pt2_archive.constants import (ARCHIVE_VERSION_PATH, ARCHIVE_VERSION_VALUE,
                                                    MODELS_FILENAME_FORMAT)

    version = reader.read_string(ARCHIVE_VERSION_PATH) if ARCHIVE_VERSION_PATH in names else None
    if version != ARCHIVE_VERSION_VALUE:
        raise _Refused(f"an archive of version {version!r}, not {ARCHIVE_VERSION_VALUE!r} (saved by another "
                       f"PyTorch than {torch.__version__.split('+')[0]})")
    model = MODELS_FILENAME_FORMAT.format("model")
    if model not in names:
        raise _Refused(f"no {model}: no exported program")
    try:
        graph = json.loads(reader.read_bytes(model))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refused(f"a {model} that is not JSON ({exc})") from None
    _check_graph(graph)
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, graph)
    except Exception as exc:  # a JSON of another schema
        raise _Refused(f"a {model} that is not a torch.export graph ({_first_line(exc)})") from None
    state_dict = _payloads(reader, names, "weights", path)
    constants = _payloads(reader, names, "constants", path)
    try:  # no sample inputs: edgefree makes its own from the input spec
        return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be read as a torch.export program ({_first_line(exc)}): "
                              f"{_RESAVE}") from exc


def _check_graph(graph: Any) -> None:
    """Refuse what ``torch.export.save`` never writes; drop the parts torch would execute and edgefree does not use."""
    if not isinstance(graph, dict) or not isinstance(graph.get("graph_module"), dict):
        raise _Refused("a models/model.json that is not a torch.export graph")
    graph["guards_code"] = []  # Python source torch would exec; edgefree removes the guards it makes
    expr_calls = _EXPR_CALLS | _torch_sympy_functions()
    _walk(graph["graph_module"], expr_calls)


def _walk(value: Any, expr_calls: set[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _walk(item, expr_calls)
        return
    if not isinstance(value, dict):
        return
    if "target" in value and "metadata" in value and isinstance(value.get("metadata"), dict):
        value["metadata"] = {}  # a node's stack trace, annotations, source names: free text edgefree never reads
    for key, item in value.items():
        if key in _NAMED_MAPS and isinstance(item, dict):
            for name in item:
                _require(_NAME.match(name), "a value named", name)
        elif key in ("name", "as_name") and isinstance(item, str):
            _require(_NAME.match(item), "a name", item)
        elif key in _PATH_KEYS and isinstance(item, str):
            _require(item == "" or all(_PATH_PART.match(p) for p in item.split(".")), "an attribute path", item)
        elif key == "expr_str" and isinstance(item, str):
            _check_expression(item, expr_calls)
        _walk(item, expr_calls)


def _require(ok, what: str, value: str) -> None:
    if not ok:
        raise _Refused(f"{what} {value[:80]!r} that torch.export.save does not write (it could become Python code)")


def _check_expression(text: str, calls: set[str]) -> None:
    """A shape expression as ``sympy.srepr`` writes it (torch evaluates it): calls of sympy's classes on
    numbers, symbol names and each other, and arithmetic; nothing else."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise _Refused(f"a shape expression that is not a sympy expression: {text[:80]!r}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, _EXPR_NODES)
        if isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in calls and all(
                not isinstance(a, ast.Constant) or not isinstance(a.value, str) or
                (i == 0 and (node.func.id == "Symbol" and _NAME.match(a.value) or
                             node.func.id == "Float" and _NUMBER.match(a.value)))
                for i, a in enumerate(node.args))
            ok = ok and all(k.arg and not k.arg.startswith("_") and isinstance(k.value, ast.Constant)
                            and not isinstance(k.value.value, str) for k in node.keywords)
        elif isinstance(node, ast.Name):
            ok = not node.id.startswith("_")
        elif isinstance(node, ast.Constant):
            ok = isinstance(node.value, (int, float, str, bool))
        if not ok:
            raise _Refused(f"a shape expression edgefree does not evaluate: {text[:80]!r}")


def _torch_sympy_functions() -> set[str]:
    import torch.utils._sympy.functions as functions

    return {name for name in dir(functions) if not name.startswith("_") and isinstance(getattr(functions, name), type)}


def _payloads(reader, names: set[str], kind: str, path: Path) -> dict[str, Any]:
    """The program's weights (``kind`` "weights") or constants, as tensors, read without unpickling objects."""
    from torch._export.serde.serialize import (deserialize_size, deserialize_storage_offset,
                                               deserialize_stride)
    from torch.export.pt2_archive import _package as package
    from torch.export.pt2_archive.constants import (CONSTANTS_CONFIG_FILENAME_FORMAT, CONSTANTS_DIR,
                                                    TENSOR_CONSTANT_FILENAME_PREFIX,
                                                    WEIGHTS_CONFIG_FILENAME_FORMAT, WEIGHTS_DIR)

    folder, config_name = ((WEIGHTS_DIR, WEIGHTS_CONFIG_FILENAME_FORMAT) if kind == "weights"
                           else (CONSTANTS_DIR, CONSTANTS_CONFIG_FILENAME_FORMAT))
    legacy = f"{folder}model.pt"
    if legacy in names:  # an older archive: one pickled dict of tensors
        loaded = _tensors(reader.read_bytes(legacy), f"its legacy {kind} file")
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise _Refused(f"a legacy {kind} file that is not a dict of tensors")
        return loaded
    config_file = config_name.format("model")
    if config_file not in names:
        raise _Refused(f"no {config_file}")
    try:
        config = package._load_payload_config(reader, config_file)
        raw = package._build_file_map(reader, config, folder)
    except Exception as exc:
        raise _Refused(f"a {config_file} that cannot be read ({_first_line(exc)})") from None
    loaded = {}
    for fqn, meta in config.config.items():
        if kind == "constants" and not meta.path_name.startswith(TENSOR_CONSTANT_FILENAME_PREFIX):
            raise _Refused(f"the constant {fqn!r}, a custom object ({meta.path_name}: a TorchScript or pickled "
                           "Python object), not a tensor")
        if meta.use_pickle:
            loaded[fqn] = _tensors(reader.read_bytes(os.path.join(folder, meta.path_name)), f"its {kind} {fqn!r}")
            if not isinstance(loaded[fqn], torch.Tensor):
                raise _Refused(f"{kind} {fqn!r} that is a {type(loaded[fqn]).__name__}, not a tensor")
            continue
        tensor = torch.as_strided(raw[meta.path_name], deserialize_size(meta.tensor_meta.sizes),
                                  deserialize_stride(meta.tensor_meta.strides),
                                  deserialize_storage_offset(meta.tensor_meta.storage_offset))
        loaded[fqn] = (torch.nn.Parameter(tensor, requires_grad=meta.tensor_meta.requires_grad) if meta.is_param
                       else tensor)
    return loaded


def _tensors(blob: bytes, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses every global outside torch's allowlist
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        named = f" ({found.group(1)})" if found else ""
        raise _Refused(f"{what}, pickled with objects other than tensors{named}") from None


def _first_line(exc: BaseException) -> str:
    return first_line(exc) or type(exc).__name__
