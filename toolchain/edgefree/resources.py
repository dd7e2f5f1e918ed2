"""What a build needs of this machine, checked before any work: processes against cores, memory
against what is free (or what a cgroup's cap leaves).

Memory is estimated, not guessed: the teacher runs one forward pass on the meta device (shapes
only, no memory) at the synthesis batch size with its input requiring a gradient, and the bytes of
every tensor autograd keeps for the backward pass are summed; DeepInversion holds those, the
images and their optimizer state at once. The dreams themselves stay in memory on every process.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from edgefree.errors import EdgefreeError
from edgefree.models.spec import InputSpec

# Per dreamed image besides what autograd keeps: the image, its gradient and Adam's two moments
_IMAGE_COPIES = 4
# Transient buffers of the forward and backward passes (outputs not kept, gradients of activations),
# as a multiple of what autograd keeps: it covers the peak memory of a two-step synthesis over the estimate's
# other terms on an image model of the tests (3x64x64), resnet20-cifar and signal-cnn1d.
_TRANSIENT = 2.0


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def available_memory() -> int | None:
    """Bytes this machine can still give: /proc/meminfo's MemAvailable, or less where a cgroup (v2 or
    v1) caps this process's memory. None where neither can be read."""
    found = []
    meminfo = _read("/proc/meminfo")
    for line in (meminfo or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, used = _read(limit), _read(usage)
        if cap and cap.isdigit() and used and used.isdigit() and int(cap) < 1 << 60:
            found.append(max(0, int(cap) - int(used)))
    return min(found) if found else None


def check_workers(workers: int) -> None:
    """Refuse more processes than this machine has cores: each would get less than one."""
    if workers > cores():
        raise EdgefreeError(f"--workers {workers} is more processes than this machine's {cores()} core(s): pass "
                            f"--workers {cores()} or fewer (for more processes, use more machines with torchrun)")


def kept_bytes(module: nn.Module, spec: InputSpec, batch: int) -> int:
    """Bytes autograd keeps for the backward pass of ``module`` (train mode) on a batch of ``batch`` of
    ``spec``'s inputs, the input requiring a gradient: counted on the meta device, where nothing is
    allocated (where an operator has no meta kernel, a real batch of 2, scaled)."""
    total = 0

    def pack(tensor: torch.Tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    try:
        meta = copy.deepcopy(module).to("meta").train()
        x = torch.empty(batch, *spec.shape, device="meta", requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            meta(x)
        return total
    except (NotImplementedError, RuntimeError):  # an operator without a meta kernel: a batch of 2 for real
        total = 0
        real = copy.deepcopy(module).cpu().train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            real(spec.example_inputs(2)[0].requires_grad_())
        return total * batch // 2


def synthesis_bytes(module: nn.Module, spec: InputSpec, batch: int, images: int) -> int:
    """Estimated peak bytes of one process dreaming batches of ``batch`` images (``images`` in all)."""
    element = 4 * int(torch.tensor(spec.shape).prod())
    return int((1 + _TRANSIENT) * kept_bytes(module, spec, batch) + _IMAGE_COPIES * batch * element
               + images * element)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def check_memory(module: nn.Module, spec: InputSpec, batch: int, images: int, processes: int = 1) -> None:
    """Refuse a synthesis that would not fit this machine's free memory (shared by ``processes``
    processes here), naming the batch size that fits. Nothing is checked where the free memory
    cannot be read (no /proc/meminfo). A ``batch`` larger than ``images`` dreams them all at once."""
    free = available_memory()
    if free is None:
        return
    batch = min(batch, images)
    need = synthesis_bytes(module, spec, batch, images)
    share = free / processes
    if need <= share:
        return
    element = 4 * int(torch.tensor(spec.shape).prod())
    shape = "x".join(map(str, spec.shape))
    where = f"this machine has {_gb(free)} free" + (f" for {processes} processes" if processes > 1 else "")
    if images * element >= share:
        raise EdgefreeError(f"{images} dreams of {shape} take {_gb(images * element)} per process, and {where}: pass "
                            "fewer --images or a smaller --input-shape")
    per_image = (need - images * element) / batch
    fits = int((share - images * element) // per_image)
    fix = f"pass --synth-batch {fits} or less, or a smaller --input-shape" if fits >= 1 else \
        "pass fewer --images or a smaller --input-shape"
    raise EdgefreeError(f"synthesis at {shape} in batches of {batch} needs about {_gb(need)} per process, and "
                        f"{where}: {fix}")
