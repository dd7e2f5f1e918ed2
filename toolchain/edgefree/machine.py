"""What machine and library versions produced a figure (recorded in every report)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from functools import lru_cache

LIBRARIES = ("torch", "torchvision", "executorch", "onnx", "onnxruntime", "openvino", "numpy", "edgefree")


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags(wanted=("avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8", "asimd", "asimddp")) -> list[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in present]
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


@lru_cache(maxsize=1)
def machine_info() -> dict:
    return {
        "cpu": _cpu_model(),
        "isa": platform.machine(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }
