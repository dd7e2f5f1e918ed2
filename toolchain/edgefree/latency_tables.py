"""Per-layer latency tables: one conv or linear layer at a given width, timed alone on a runtime.

Each entry is the p50 of a one-node ONNX model (a Conv, a Gemm, or a residual Add + Relu) at
batch 1, built with ``onnx.helper`` and opened with the bench's runner (onnxruntime or OpenVINO;
INT8 as the export makes it: a QDQ graph from onnxruntime's static quantization). The widths of
one layer shape are timed in interleaved rounds, so load from other processes falls on all of
them alike. ``CALL`` (an Identity model) is the cost of one call with no work: what a layer's
entry carries on top of its own time.

Tables are cached per runtime (and its version), precision, thread count, CPU model and layer
shape in ``cache_dir("latency")``: a second build of the same architecture measures nothing.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from edgefree.bench import runner
from edgefree.cache import cache_dir
from edgefree.errors import EdgefreeError
from edgefree.machine import machine_info

CALL = {"kind": "call"}  # an Identity on one number: the cost of a call, no work
OPSET = 18
X = "input"  # the export's input name, which its INT8 calibration feeds
WARMUP, ROUNDS, ROUND_MS, MAX_RUNS_PER_ROUND = 3, 5, 10.0, 200


def _key(width: tuple[int, int]) -> str:
    return f"{width[0]}x{width[1]}"


def _graph(signature: dict, cin: int, cout: int):
    """``(onnx model, input shape)`` of one layer of ``signature`` with ``cin`` inputs and ``cout`` outputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    kind = signature["kind"]
    nodes, inits = [], []
    if kind == "call":
        shape = [1, 1]
        nodes.append(helper.make_node("Identity", [X], ["y"]))
    elif kind == "add":
        shape = [1, cin, *signature["spatial"]]
        nodes += [helper.make_node("Add", [X, X], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    elif kind == "conv":
        groups = cin if signature["depthwise"] else 1
        cout = cin if signature["depthwise"] else cout
        shape = [1, cin, *signature["spatial"]]
        weight = rng.standard_normal((cout, cin // groups, *signature["kernel"]), dtype=np.float32) * 0.1
        inits += [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(cout, np.float32), "b")]
        nodes.append(helper.make_node("Conv", [X, "w", "b"], ["y"], kernel_shape=signature["kernel"],
                                      strides=signature["stride"], pads=signature["pads"],
                                      dilations=signature["dilation"], group=groups))
    elif kind == "linear":
        shape = [1, cin]
        weight = rng.standard_normal((cout, cin), dtype=np.float32) * 0.1
        inits += [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(cout, np.float32), "b")]
        nodes.append(helper.make_node("Gemm", [X, "w", "b"], ["y"], transB=1))
    else:
        raise ValueError(f"unknown layer kind {kind!r}")
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info(X, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9  # what every supported onnxruntime and OpenVINO read
    return model, shape


def _open(signature: dict, width: tuple[int, int], runtime: str, precision: str, threads: int, folder: Path):
    """``(predict, input)`` for one table entry, written into ``folder``."""
    import onnx

    model, shape = _graph(signature, *width)
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    path = folder / f"{signature['kind']}-{_key(width)}.onnx"
    onnx.save(model, path)
    if precision == "int8" and signature["kind"] != "call":
        from edgefree.export.onnx import _quantize

        calibration = np.random.default_rng(2).standard_normal((8, *shape[1:]), dtype=np.float32)
        quantized = path.with_name(path.stem + "-int8.onnx")
        _quantize(path, quantized, calibration)
        path = quantized
    predict, _, _ = runner.OPENERS[runtime](path, threads, precision)
    return predict, x


def _time(entries: list[tuple], rounds: int = ROUNDS) -> list[float]:
    """p50 ms of each ``(predict, input)``, timed in ``rounds`` interleaved rounds."""
    times = [[] for _ in entries]
    sizes = []
    for predict, x in entries:
        warm = runner.timings(predict, x, WARMUP)
        sizes.append(int(np.clip(ROUND_MS / max(float(np.median(warm)), 1e-3), 3, MAX_RUNS_PER_ROUND)))
    for _ in range(rounds):
        for i, (predict, x) in enumerate(entries):
            times[i].extend(runner.timings(predict, x, sizes[i]))
    return [float(np.median(t)) for t in times]


def runtime_version(runtime: str) -> str:
    try:
        return __import__(runtime).__version__
    except ImportError as exc:
        raise EdgefreeError(f"latency tables are measured with {runtime}, which is not installed: "
                            f"{runner.INSTALL_HINTS[runtime]}") from exc


def table_folder(runtime: str, precision: str, threads: int) -> Path:
    """Where the tables of ``runtime`` (this version), ``precision`` and ``threads`` on this CPU model live."""
    cpu = hashlib.sha256(machine_info()["cpu"].encode()).hexdigest()[:8]
    return cache_dir("latency", f"{runtime}-{runtime_version(runtime)}", f"{precision}-{threads}t-cpu{cpu}")


def layer_latency(signature: dict, widths: list[tuple[int, int]], runtime: str, precision: str,
                  threads: int = 1) -> tuple[dict[tuple[int, int], float], int]:
    """p50 ms of one layer of ``signature`` at each ``(in, out)`` width, and how many were measured now
    (the others come from the cache).

    ``signature``: ``{"kind": "conv", "kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1],
    "dilation": [1, 1], "depthwise": False, "spatial": [32, 32]}`` (the input's spatial size),
    ``{"kind": "linear"}``, ``{"kind": "add", "spatial": [...]}`` (a residual addition and its
    ReLU: ``in`` is the channels) or ``CALL``.

    Example:
        >>> table, _ = layer_latency({"kind": "linear"}, [(64, 10)], "onnxruntime", "fp32")
        >>> table[64, 10] > 0
        True
    """
    path = table_folder(runtime, precision, threads) / (
        hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:20] + ".json")
    stored = json.loads(path.read_text())["entries"] if path.is_file() else {}
    missing = sorted({w for w in widths if _key(w) not in stored})
    if missing:
        with tempfile.TemporaryDirectory(prefix="edgefree-latency-") as tmp:
            opened = [_open(signature, w, runtime, precision, threads, Path(tmp)) for w in missing]
            stored.update({_key(w): ms for w, ms in zip(missing, _time(opened))})
            del opened
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps({"signature": signature, "runtime": runtime, "precision": precision,
                                        "threads": threads, "entries": stored}, indent=1))
        tmp_path.replace(path)
    return {w: stored[_key(w)] for w in widths}, len(missing)


def model_latency(model, example, runtime: str, precision: str, threads: int = 1) -> float:
    """p50 ms of a whole model exported to ONNX as the export stage does (batch 1), on ``runtime``."""
    from edgefree.export import onnx as onnx_export

    with tempfile.TemporaryDirectory(prefix="edgefree-latency-") as tmp:
        calibration = example.repeat(8, *([1] * (example.dim() - 1))).numpy()
        path = onnx_export.export(model.eval().cpu(), example[:1].cpu(), precision, calibration,
                                  Path(tmp) / "model", OPSET)[0]
        predict, _, _ = runner.OPENERS[runtime](path, threads, precision)
        return _time([(predict, np.ascontiguousarray(example[:1].cpu().numpy()))], rounds=4 * ROUNDS)[0]
