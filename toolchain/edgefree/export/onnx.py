"""ONNX: ``torch.onnx.export(dynamo=True)`` at a pinned opset, run with onnxruntime's CPU provider.

The graph's batch dimension is dynamic: a device runs it at batch 1 (what the latency
figures time), the export's accuracy pass at ``eval_batch``. fp32 weights go to an external-data file (``student-fp32.onnx.data``): its tensors are
4-byte aligned, so the packer sees every pruned weight as a zero word. INT8 is a QDQ
graph from ``onnxruntime.quantization.quantize_static``, calibrated on synthetic images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

RUNTIME = "onnxruntime"
INPUT_NAME = "input"


def _export_fp32(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> list[Path]:
    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset, external_data=True,
                      input_names=[INPUT_NAME], output_names=["logits"], verbose=False,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    data = path.with_name(path.name + ".data")  # absent when no tensor was large enough to move out
    return [path, data] if data.exists() else [path]


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over synthetic images, one batch-1 input at a time."""

    def __init__(self, images: np.ndarray):
        self._images = iter(images)

    def get_next(self) -> dict | None:
        image = next(self._images, None)
        return None if image is None else {INPUT_NAME: image[None]}


def _quantize(fp32: Path, path: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))  # shape inference and Conv+BatchNorm folding
    # Per-channel symmetric int8 weights (zero point 0) keep every pruned weight an exact int8 zero;
    # uint8 activations with a zero point suit the ReLU outputs and run on x86 VNNI and Arm dot-product kernels.
    # Weights use 7 bits (reduce_range): x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply
    # u8 x s8 pairs into a saturating int16 sum, which 8-bit weights overflow: on such a host the INT8
    # student's top-1 drifts from the fp32 one's. The artifact is for any host and device, so it gives up
    # the bit that keeps it exact everywhere.
    quantize_static(str(prepared), str(path), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True})


def export(model: nn.Module, example: torch.Tensor, precision: str, calibration: np.ndarray, stem: Path,
           opset: int) -> list[Path]:
    """Write ``<stem>.onnx`` (and its external data for fp32); returns the files, the entry first."""
    path = stem.with_suffix(".onnx")
    if precision == "fp32":
        return _export_fp32(model, example, path, opset)
    with tempfile.TemporaryDirectory() as tmp:
        _quantize(_export_fp32(model, example, Path(tmp) / "fp32.onnx", opset)[0], path, calibration)
    return [path]


def load(entry: Path):
    """A batch-1 predictor ``f(x: float32 NCHW) -> logits`` on onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # parity needs no speed; the build machine's cores are shared
    session = ort.InferenceSession(str(entry), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def load_batched(entry: Path, batch: int, threads: int):
    """``(predict, batch)``: a predictor for batches of up to ``batch`` inputs on ``threads`` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(entry), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), batch


def runtime_version() -> str:
    import onnxruntime as ort

    return ort.__version__
