"""What machine and library versions produced a figure (recorded in every report)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from functools import lru_cache

LIBRARIES = ("torch", "torchvision", "executorch", "onnx", "onnxruntime", "openvino", "numpy", "torch-pruning",
             "scikit-learn", "edgefree")


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return f.readlines()
    except OSError:
        return []


def _cpu_model() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags(wanted=("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "asimddp",
                       "bf16")) -> list[str]:
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in present]
    return []


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 in hardware (AVX512-BF16 / AMX on x86, BF16 on Arm, or CUDA).

    Where it does not, bf16 autocast is emulated and slower than fp32, so "auto" means fp32 there.
    """
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(f in _cpu_flags() for f in ("avx512_bf16", "amx_bf16", "bf16"))


def has_depthwise(model) -> bool:
    """Whether ``model`` has a depthwise convolution (one group per input channel, more than one)."""
    from torch import nn

    return any(isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups == m.in_channels for m in model.modules())


def resolve_bf16(setting: bool | str, device: str = "cpu", model=None) -> bool:
    """A config's ``bf16`` (True, False or "auto") as the choice made on this machine for ``model``.

    "auto" is bf16 where the hardware computes it natively, except for a model with depthwise convolutions
    on a CPU: there bf16 depthwise convolutions are slower than fp32, by more than the rest gains
    (``benchmarks/results/step_speed.md``), so such a model computes in fp32.
    """
    if setting != "auto":
        return bool(setting)
    cpu = not device.startswith("cuda")
    return native_bf16(device) and not (cpu and model is not None and has_depthwise(model))


def bf16_autocast(setting: bool | str, device: str = "cpu", model=None):
    """``(enabled, context)``: the bf16 choice made here for ``model`` and the autocast context applying it
    (a no-op when off)."""
    import contextlib

    import torch

    enabled = resolve_bf16(setting, device, model)
    if not enabled:  # not autocast(enabled=False): that would switch off an autocast the caller is in
        return False, contextlib.nullcontext()
    return True, torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


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
