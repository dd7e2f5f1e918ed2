"""Per-layer latency tables: one conv or linear layer at a given width, measured alone on a runtime.

Each entry is the cost of a one-node ONNX model (a Conv, a Gemm, or a residual Add + Relu) at
batch 1, built with ``onnx.helper`` and opened with the bench's runner (onnxruntime or OpenVINO;
INT8 as the export makes it: a QDQ graph from onnxruntime's static quantization). For ExecuTorch
the same layer is built in PyTorch and exported as the export stage does (XNNPACK; INT8 by its
PT2E quantization): an export and a lowering per entry, far slower to write, so the first build
of an architecture waits longer. A ``Meter`` says how it is measured:

* natively (``cpu`` None): the p50 in ms on this machine. The widths of one layer shape are
  timed in interleaved rounds, so load from other processes falls on all of them alike;
* under QEMU (``cpu``, an ARM core model such as ``cortex-a76``): millions of guest instructions
  per inference of the runtime's aarch64 build in the prepared arm64 environment (``edgefree
  emulator setup``), every missing entry of a table counted in one emulated process. Counts are
  repeatable and stand in for an ARM device's time; they are not milliseconds.

``CALL`` (an Identity model) is the cost of one call with no work: what a layer's entry carries
on top of its own.

Tables are cached per meter (runtime and its version, precision, threads, and this machine's CPU
model, or the emulated core with QEMU's and the arm64 environment's versions) and layer shape in
``cache_dir("latency")``: a second build of the same architecture measures no layer again (whole
models, ``models_latency``, are measured each time).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from edgefree.bench import runner
from edgefree.cache import cache_dir, read_entry, write_entry
from edgefree.errors import EdgefreeError, say
from edgefree.machine import machine_info

CALL = {"kind": "call"}  # an Identity on one number: the cost of a call, no work
OPSET = 18
X = "input"  # the export's input name, which its INT8 calibration feeds
WARMUP, ROUNDS, ROUND_MS, MAX_RUNS_PER_ROUND = 3, 5, 10.0, 200
FORMAT_OF_RUNTIME = {"onnxruntime": "onnx", "openvino": "onnx", "executorch": "executorch"}  # OpenVINO reads ONNX
COUNTED_RUNS = 2  # inferences counted per entry under QEMU (the counts repeat: more runs add nothing)


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


class _Add(torch.nn.Module):
    """A residual addition and its ReLU, as ``add`` entries measure it."""

    def forward(self, x):
        return torch.relu(x + x)


class _Call(torch.nn.Module):
    """Next to no work: what ``CALL`` measures (an ExecuTorch program cannot return its input unchanged)."""

    def forward(self, x):
        return x + 1


def _module(signature: dict, cin: int, cout: int) -> tuple[torch.nn.Module, list[int]]:
    """``(torch module, input shape)``: the layer ``_graph`` builds, for runtimes that export from PyTorch."""
    kind = signature["kind"]
    if kind == "call":
        return _Call(), [1, 1]
    if kind == "add":
        return _Add(), [1, cin, *signature["spatial"]]
    if kind == "linear":
        return torch.nn.Linear(cin, cout), [1, cin]
    if kind != "conv":
        raise ValueError(f"unknown layer kind {kind!r}")
    rank = len(signature["kernel"])
    conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[rank - 1]
    cout = cin if signature["depthwise"] else cout
    return (conv(cin, cout, signature["kernel"], signature["stride"], signature["pads"][:rank], signature["dilation"],
                 groups=cin if signature["depthwise"] else 1),
            [1, cin, *signature["spatial"]])


def _write_program(signature: dict, width: tuple[int, int], precision: str, folder: Path) -> tuple[Path, list[int]]:
    """One table entry as an ExecuTorch program (XNNPACK; INT8 as the export quantizes) in ``folder``."""
    from edgefree.export import executorch

    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():  # the same weights every time, and the build's own random state left as it was
        torch.manual_seed(0)
        module, shape = _module(signature, *width)
        example = torch.randn(shape)
    calibration = np.random.default_rng(2).standard_normal((8, *shape[1:]), dtype=np.float32)
    int8 = precision == "int8" and signature["kind"] != "call"
    stem = folder / f"{signature['kind']}-{_key(width)}{'-int8' if int8 else ''}"
    with torch.no_grad():
        path = executorch.export(module.eval(), example, "int8" if int8 else "fp32", calibration, stem, OPSET)[0]
    return path, shape


def _write(signature: dict, width: tuple[int, int], precision: str, folder: Path,
           runtime: str = "onnxruntime") -> tuple[Path, list[int]]:
    """Write one table entry's model (quantized for int8) into ``folder``: ``(path, input shape)``; ONNX, or an
    ExecuTorch program for ``runtime`` executorch."""
    if runtime == "executorch":
        return _write_program(signature, width, precision, folder)
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    model, shape = _graph(signature, *width)
    path = folder / f"{signature['kind']}-{_key(width)}.onnx"
    onnx.save(model, path)
    if precision == "int8" and signature["kind"] != "call":
        from edgefree.export.onnx import _quantize

        calibration = np.random.default_rng(2).standard_normal((8, *shape[1:]), dtype=np.float32)
        quantized = path.with_name(path.stem + "-int8.onnx")
        _quantize(path, quantized, calibration)
        path = quantized
    return path, shape


def _open(signature: dict, width: tuple[int, int], meter: Meter, folder: Path):
    """``(predict, input)`` for one natively timed table entry, written into ``folder``."""
    path, shape = _write(signature, width, meter.precision, folder, meter.runtime)
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    predict, _, _ = runner.OPENERS[meter.runtime](path, meter.threads, meter.precision)
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
        __import__(runtime)
        return importlib.metadata.version(runtime)
    except ImportError as exc:
        raise EdgefreeError(f"latency tables are measured with {runtime}, which is not installed: "
                            f"{runner.INSTALL_HINTS[runtime]}") from exc


@dataclass(frozen=True)
class Meter:
    """How table entries are measured: ``runtime`` at ``precision`` with ``threads``, timed natively
    (``cpu`` None: p50 ms) or counted under QEMU on the ARM core ``cpu`` (millions of instructions)."""

    runtime: str
    precision: str
    threads: int = 1
    cpu: str | None = None

    @property
    def unit(self) -> str:
        return "ms" if self.cpu is None else "M instructions"

    def version(self) -> str:
        if self.cpu is None:
            return runtime_version(self.runtime)
        from edgefree.bench.emulator_setup import default_home, prepared

        environment = prepared(default_home())
        if environment is None or self.runtime not in environment["runtimes"]:
            raise EdgefreeError(f"counting latency tables under QEMU needs {self.runtime} in the prepared arm64 "
                                f"environment: run `edgefree emulator setup --runtimes {self.runtime}`")
        return environment["runtimes"][self.runtime]

    def folder(self) -> Path:
        """Where this meter's tables live."""
        if self.cpu is not None:
            from edgefree.bench.emulator_setup import default_home, prepared

            environment = prepared(default_home()) or {}
            guest = hashlib.sha256(json.dumps([environment.get(k) for k in ("qemu", "suite", "python")]
                                              + [runtime_version("onnxruntime")]).encode()).hexdigest()[:8]
            return cache_dir("latency", f"{self.runtime}-{self.version()}-aarch64",
                             f"{self.precision}-{self.threads}t-qemu-{self.cpu}-{guest}")
        cpu = hashlib.sha256(machine_info()["cpu"].encode()).hexdigest()[:8]
        return cache_dir("latency", f"{self.runtime}-{self.version()}", f"{self.precision}-{self.threads}t-cpu{cpu}")

    def describe(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}, batch 1"
        if self.cpu is None:
            return f"measured natively on this x86-64 machine ({self.runtime} {self.version()}, {self.precision}, " \
                   f"{threads})"
        return f"counted under QEMU as a {self.cpu} (guest instructions per inference of {self.runtime} " \
               f"{self.version()} aarch64, {self.precision}, {threads})"


def table_folder(runtime: str, precision: str, threads: int) -> Path:
    """Where the native tables of ``runtime`` (this version), ``precision`` and ``threads`` on this CPU model live."""
    return Meter(runtime, precision, threads).folder()


def _count(folder: Path, models: list[tuple[Path, list[int]]], meter: Meter, names: list[str]) -> list[float]:
    """Millions of guest instructions per inference of each ``(ONNX file in folder, input shape)`` (``names``: what
    each is, for errors), all in one QEMU process on ``meter.cpu``."""
    from edgefree.bench import emulation

    artifacts = [{"name": f"model-{i}", "runtime": meter.runtime, "precision": meter.precision,
                  "entry": path.relative_to(folder).as_posix(), "files": [{"path": path.relative_to(folder).as_posix()}],
                  "input_shape": list(shape)} for i, (path, shape) in enumerate(models)]
    (folder / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    result = emulation.run(folder / "manifest.json", meter.cpu, np.zeros((1, 1), np.float32), runs=COUNTED_RUNS,
                           warmup=1, threads=meter.threads)
    counts = []
    for a, name in zip(artifacts, names):
        entry = result["artifacts"][a["name"]]
        if entry.get("error") or not entry.get("instructions"):
            raise EdgefreeError(f"counting {name} under QEMU as a {meter.cpu} failed: "
                                f"{entry.get('error') or 'no instruction count came back'}; set "
                                "latency_target.emulate = false to time the tables natively instead")
        counts.append(entry["instructions"]["per_inference"] / 1e6)
    return counts


def layer_tables(requests: list[tuple[dict, list[tuple[int, int]]]], meter: Meter, progress: bool = False
                 ) -> tuple[list[dict[tuple[int, int], float]], int]:
    """The table of each ``(signature, widths)`` request, and how many entries were measured now (the others
    come from the cache). Under QEMU every missing entry of every request is counted in one process."""
    folder = meter.folder()
    paths = [folder / (hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:20] + ".json")
             for sig, _ in requests]
    stored = {}
    for path in paths:
        if path not in stored:
            entries = (read_entry(path) or {}).get("entries")  # missing or damaged: measured again
            stored[path] = entries if isinstance(entries, dict) else {}
    missing = {}  # path -> (signature, sorted widths not in its table)
    for path, (signature, widths) in zip(paths, requests):
        todo = missing.setdefault(path, (signature, set()))[1]
        todo.update(w for w in widths if _key(w) not in stored[path])
    missing = {path: (sig, sorted(todo)) for path, (sig, todo) in missing.items() if todo}
    def save(path: Path, signature: dict) -> None:
        write_entry(path, {"signature": signature, "runtime": meter.runtime, "precision": meter.precision,
                           "threads": meter.threads, "cpu": meter.cpu, "unit": meter.unit, "entries": stored[path]},
                    indent=1)

    entries = sum(len(todo) for _, todo in missing.values())
    if meter.cpu is None:
        with tqdm(total=entries, desc="latency tables", unit="entry", disable=not progress, leave=False) as bar:
            for path, (signature, todo) in missing.items():
                with tempfile.TemporaryDirectory(prefix="edgefree-latency-") as tmp:
                    opened = [_open(signature, w, meter, Path(tmp)) for w in todo]
                    stored[path].update({_key(w): ms for w, ms in zip(todo, _time(opened))})
                    del opened
                save(path, signature)  # what is timed is kept, even if a later shape fails
                bar.update(len(todo))
    elif missing:
        if progress:  # beside the bars, on the console
            say(f"latency tables: counting {entries} entries, {meter.describe()}")
        flat = [(path, signature, w) for path, (signature, todo) in missing.items() for w in todo]
        with tempfile.TemporaryDirectory(prefix="edgefree-latency-") as tmp:
            models = [_write(sig, w, meter.precision, Path(tmp) / str(i)) for i, (_, sig, w) in enumerate(flat)]
            names = [f"{sig['kind']} {_key(w)} {json.dumps(sig, sort_keys=True)}" for _, sig, w in flat]
            for (path, _, w), count in zip(flat, _count(Path(tmp), models, meter, names)):
                stored[path][_key(w)] = count
        for path, (signature, _) in missing.items():
            save(path, signature)
    return ([{w: stored[path][_key(w)] for w in widths} for path, (_, widths) in zip(paths, requests)],
            entries)


def layer_latency(signature: dict, widths: list[tuple[int, int]], meter: Meter
                  ) -> tuple[dict[tuple[int, int], float], int]:
    """The cost (``meter.unit``) of one layer of ``signature`` at each ``(in, out)`` width, and how many were
    measured now (the others come from the cache).

    ``signature``: ``{"kind": "conv", "kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1],
    "dilation": [1, 1], "depthwise": False, "spatial": [32, 32]}`` (the input's spatial size),
    ``{"kind": "linear"}``, ``{"kind": "add", "spatial": [...]}`` (a residual addition and its
    ReLU: ``in`` is the channels) or ``CALL``.

    Example:
        >>> table, _ = layer_latency({"kind": "linear"}, [(64, 10)], Meter("onnxruntime", "fp32"))
        >>> table[64, 10] > 0
        True
    """
    tables, measured = layer_tables([(signature, widths)], meter)
    return tables[0], measured


def models_latency(models: list, example, meter: Meter) -> list[float]:
    """The cost (``meter.unit``) of each whole model exported as the export stage does (ONNX, or an ExecuTorch
    program for ``meter.runtime`` executorch; batch 1); under QEMU all in one emulated process."""
    exporter = importlib.import_module(f"edgefree.export.{FORMAT_OF_RUNTIME[meter.runtime]}")
    calibration = example.repeat(8, *([1] * (example.dim() - 1))).numpy()
    x = np.ascontiguousarray(example[:1].cpu().numpy())
    with tempfile.TemporaryDirectory(prefix="edgefree-latency-") as tmp:
        paths = [Path(exporter.export(model.eval().cpu(), example[:1].cpu(), meter.precision, calibration,
                                      Path(tmp) / f"model-{i}", OPSET)[0]) for i, model in enumerate(models)]
        if meter.cpu is None:  # timed in interleaved rounds: load falls on all of them alike
            opened = [runner.OPENERS[meter.runtime](path, meter.threads, meter.precision)[0] for path in paths]
            return _time([(predict, x) for predict in opened], rounds=4 * ROUNDS)
        return _count(Path(tmp), [(path, list(x.shape)) for path in paths], meter,
                      [f"whole model {i + 1} of {len(paths)}" for i in range(len(paths))])


def model_latency(model, example, meter: Meter) -> float:
    """The cost (``meter.unit``) of a whole model exported as the export stage does (batch 1)."""
    return models_latency([model], example, meter)[0]
