"""ExecuTorch ``.pte``: ``torch.export`` -> XNNPACK lowering -> ``to_executorch``, run with ``executorch.runtime``.

INT8 is PT2E post-training quantization with the XNNPACK quantizer (per-channel
symmetric weights), calibrated on synthetic images, then lowered the same way.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

RUNTIME = "executorch"


def _quantize(program: torch.export.ExportedProgram, calibration: np.ndarray) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # symmetric weights (zero point 0): every pruned weight stays an exact int8 zero
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for image in calibration:  # batch 1: the exported graph has the artifact's static shape
            prepared(torch.from_numpy(image[None]))
    return convert_pt2e(prepared)


def export(model: nn.Module, example: torch.Tensor, precision: str, calibration: np.ndarray, stem: Path,
           opset: int) -> list[Path]:
    """Write ``<stem>.pte`` (``opset`` is ONNX's and not used here); returns ``[path]``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(model, (example,))
    if precision == "int8":
        program = torch.export.export(_quantize(program, calibration), (example,))
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    path = stem.with_suffix(".pte")
    path.write_bytes(lowered.to_executorch().buffer)
    return [path]


def load(entry: Path):
    """A batch-1 predictor ``f(x: float32 NCHW) -> logits`` on ExecuTorch's runtime (XNNPACK delegate)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(entry).load_method("forward")
    # copy: the output tensor's memory belongs to the method
    return lambda x: method.execute([torch.from_numpy(x)])[0].numpy().copy()


def load_batched(entry: Path, batch: int, threads: int):
    """``(predict, 1)``: the program's memory is planned for batch 1, so its accuracy pass runs at batch 1.

    A dynamic batch would plan the device's memory for the largest batch, and a second,
    batch-``batch`` program for evaluation only would cost another lowering, the slowest step of
    this format's export (the manifest's ``seconds``). XNNPACK's thread pool gets ``threads``.
    """
    from edgefree.bench.runner import set_executorch_threads

    set_executorch_threads(threads)
    return load(entry), 1


def runtime_version() -> str:
    return importlib.metadata.version("executorch")
