"""OpenVINO IR (``.xml`` + ``.bin``), converted from the ONNX graph and run on OpenVINO's CPU plugin.

Converting from ONNX gives the INT8 IR for free: ``convert_model`` of the QDQ graph keeps
int8 weights with their scales, which the CPU plugin runs as int8. Weights are saved as
they are (no fp16 compression), so an fp32 IR holds the student's exact fp32 weights. The IR
is saved for batch 1 (the ONNX graph's batch is dynamic); the accuracy pass reshapes it to
``eval_batch`` when it loads it, which OpenVINO does without a second conversion.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefree.export import onnx

RUNTIME = "openvino"


def export(model: nn.Module, example: torch.Tensor, precision: str, calibration: np.ndarray, stem: Path,
           opset: int) -> list[Path]:
    """Write ``<stem>.xml`` and ``<stem>.bin``; returns them, the entry (.xml) first."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        graph = onnx.export(model, example, precision, calibration, Path(tmp) / "student", opset)[0]
        ir = ov.convert_model(str(graph))
    ir.reshape([1, *example.shape[1:]])  # a static batch 1, what a device runs and the latency times
    xml = stem.with_suffix(".xml")
    ov.save_model(ir, str(xml), compress_to_fp16=False)  # the default fp16 compression would change fp32 results
    return [xml, xml.with_suffix(".bin")]


def _compile(entry: Path, settings: dict, batch: int = 1):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(entry))
    if batch != 1:
        model.reshape([batch, *model.inputs[0].partial_shape.to_shape()[1:]])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, **settings})
    request = compiled.create_infer_request()
    # copy: the request reuses its output buffer on the next call
    return compiled, lambda x: np.array(request.infer([x])[0])


def load(entry: Path):
    """A batch-1 predictor computing in f32, the precision an fp32 artifact promises."""
    return _compile(entry, {"INFERENCE_PRECISION_HINT": "f32"})[1]


def load_default(entry: Path):
    """A predictor at OpenVINO's default precision on this CPU (bf16 with AMX or AVX512-BF16), and its name."""
    compiled, predict = _compile(entry, {})
    return predict, compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def load_batched(entry: Path, batch: int, threads: int):
    """``(predict, batch)``: the IR reshaped to exactly ``batch`` inputs, in f32, on ``threads`` threads."""
    return _compile(entry, {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}, batch)[1], batch


def runtime_version() -> str:
    import openvino as ov

    return ov.__version__
