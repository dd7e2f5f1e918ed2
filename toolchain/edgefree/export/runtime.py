"""Which Python packages each export format needs, and a clear error when one is missing.

The packages are checked before any work (``require_runtimes``) and imported lazily by
the format modules, so ``edgefree --help`` stays instant without them.
"""

from __future__ import annotations

import importlib.metadata
import re
from importlib.util import find_spec

from edgefree.errors import MissingRuntimeError

# OpenVINO IR is converted from the ONNX graph (fp32, or the QDQ graph for int8), so it needs the ONNX tools too.
_ONNX = ("onnx", "onnxscript", "onnxruntime")
NEEDS = {"onnx": _ONNX, "openvino": (*_ONNX, "openvino"), "executorch": ("executorch", "torchao")}


def install_hint(package: str) -> str:
    """``pip install <package>==<the version edgefree pins>`` (the bare name outside an installed edgefree)."""
    try:
        pins = importlib.metadata.requires("edgefree") or []
    except importlib.metadata.PackageNotFoundError:
        pins = []
    for requirement in pins:
        if re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower() == package:
            return f"pip install '{requirement.split(';')[0].strip()}'"
    return f"pip install {package}"


def require_runtimes(formats: tuple[str, ...]) -> None:
    """Raise MissingRuntimeError, with the install command, if a package ``formats`` need is absent.

    Example:
        >>> require_runtimes(("onnx",))  # silent when onnx, onnxscript and onnxruntime are installed
    """
    for fmt in formats:
        for package in NEEDS[fmt]:
            if find_spec(package) is None:
                raise MissingRuntimeError(
                    f"exporting to {fmt} needs the Python package {package!r}, which is not installed: "
                    f"{install_hint(package)} (or leave {fmt} out with --formats)")
