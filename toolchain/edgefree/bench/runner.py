"""Run exported artifacts with their runtimes: latency, logits and top-1, as JSON.

STANDALONE: the standard library, numpy and the runtime of each artifact only (no
edgefree, no torch unless ExecuTorch needs it), so it can be copied to a device with
``unpack.py`` and ``artifacts/``, or run under qemu-aarch64. Usage:

    python runner.py --manifest DIR/manifest.json [--artifacts onnx-fp32,...] [--inputs x.npy]
                     [--runs 50] [--warmup 10] [--threads 1] [--mark-syscall 4000] --out result.json

Each artifact's dense files are unpacked from their ``.efpk`` forms when absent (and
checked against the manifest's sha256). Every input (normalized float32, N x C x H x W or N x C x L,
as the manifest's ``model.input`` says; default: one deterministic random input) runs once at batch 1 for the logits; then the
first input runs ``warmup`` + ``runs`` times for the latency. An artifact whose manifest entry has its
own ``input_shape`` (a latency table's model) runs on one deterministic random input of that
shape instead. With ``--mark-syscall N``
the timed runs of the k-th artifact are enclosed in ``syscall(N, k, 0)`` and
``syscall(N, k, 1)``: a no-op on a real kernel (ENOSYS), the marker the QEMU
instruction-count plugin (icount.c) records.

The result holds, per artifact: ``latency_ms`` {p50, p90, mean, std, runs}, ``outputs_npy``
(the logits, a file named relative to the result file), ``top1``, ``runtime_version``,
``mark_tag`` and ``error`` (null, or why this artifact could not run; the others still run,
and the exit status is 1).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

INSTALL_HINTS = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install openvino",
                 "executorch": "pip install executorch"}


def _unpack_module():
    """unpack.py beside this file (a device copy) or in the source tree's export/: ``unpack``, ``sha256_file``."""
    here = Path(__file__).resolve().parent
    for path in (here / "unpack.py", here.parent / "export" / "unpack.py"):
        if path.is_file():
            # loaded by path: putting export/ on sys.path would let its onnx.py shadow the onnx package
            spec = importlib.util.spec_from_file_location("unpack", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"unpack.py is neither beside {__file__} nor in ../export: copy it next to runner.py")


def ensure_dense(folder: Path, artifact: dict) -> Path:
    """Make every file of ``artifact`` present in dense form; return the entry file's path."""
    for file in artifact["files"]:
        dense = folder / file["path"]
        if dense.exists():
            continue
        packed = folder / file.get("packed_path", "")
        if not file.get("packed_path") or not packed.is_file():
            raise FileNotFoundError(f"{dense} is missing and has no packed form to rebuild it from")
        unpack = _unpack_module()
        unpack.unpack(str(packed), str(dense))
        if unpack.sha256_file(dense) != file["sha256"]:
            dense.unlink()
            raise ValueError(f"unpacking {packed} gave a file whose sha256 differs from the manifest's")
    return folder / artifact["entry"]


def _import(runtime: str):
    try:
        return __import__(runtime)
    except ImportError as exc:
        raise RuntimeError(f"{runtime} is not installed here ({exc}): {INSTALL_HINTS[runtime]}") from exc


def open_onnxruntime(path: Path, threads: int, precision: str):
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), ort.__version__, {"intra_op_num_threads": threads}


def open_openvino(path: Path, threads: int, precision: str):
    ov = _import("openvino")
    # Where the CPU has AMX or fp16 units OpenVINO's default is bf16/fp16 inference; an fp32
    # artifact is run as fp32 so that its figures and its parity mean what the label says.
    settings = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False}
    if precision == "fp32":
        settings["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(path), "CPU", settings)
    request = compiled.create_infer_request()
    return (lambda x: request.infer([x])[0]), ov.__version__, settings


_POOL: dict = {}  # the thread count ExecuTorch's pool was last set to in this process


def set_executorch_threads(threads: int) -> None:
    """Size XNNPACK's thread pool (its default uses every core), unless it already has ``threads``: each reset
    logs a line."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    if _POOL.get("threads") != threads:
        _unsafe_reset_threadpool(threads)
        _POOL["threads"] = threads


def open_executorch(path: Path, threads: int, precision: str):
    _import("executorch")
    import torch
    from executorch.runtime import Runtime

    set_executorch_threads(threads)
    data = sorted(path.parent.glob(path.stem + "*.ptd"))  # weights kept outside the .pte, if any
    # older runtimes (the aarch64 executorch 1.1.0) have no data_path: pass it only when needed
    program = Runtime.get().load_program(path, **({"data_path": data[0]} if data else {}))
    method = program.load_method("forward")
    predict = lambda x: method.execute([torch.from_numpy(x)])[0].numpy()  # noqa: E731
    return predict, importlib.metadata.version("executorch"), {"threadpool": threads}


OPENERS = {"onnxruntime": open_onnxruntime, "openvino": open_openvino, "executorch": open_executorch}


def default_inputs(manifest: dict, count: int = 1, seed: int = 0) -> np.ndarray:
    """Deterministic random inputs of the manifest's ``model.input``: uniform in its value range, normalized
    per channel as the model expects (images N x C x H x W, signals N x C x L)."""
    spec = manifest["model"]["input"]
    shape = (count, *spec["shape"])
    low, high = spec.get("value_range", (0.0, 1.0))
    raw = low + (high - low) * np.random.default_rng(seed).random(shape, dtype=np.float32)
    per_channel = (1, -1, *([1] * (len(spec["shape"]) - 1)))
    mean = np.asarray(spec["mean"], np.float32).reshape(per_channel)
    std = np.asarray(spec["std"], np.float32).reshape(per_channel)
    return ((raw - mean) / std).astype(np.float32)


def _mark(syscall: int | None, tag: int, phase: int) -> None:
    if syscall is not None:
        ctypes.CDLL(None).syscall(syscall, tag, phase)


def timings(predict, x: np.ndarray, runs: int) -> np.ndarray:
    """Milliseconds of each of ``runs`` calls of ``predict(x)``, with the garbage collector held off."""
    times = np.empty(runs)
    collecting = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            started = time.perf_counter_ns()
            predict(x)
            times[i] = (time.perf_counter_ns() - started) / 1e6
    finally:
        if collecting:
            gc.enable()
    return times


def summarize(times: np.ndarray) -> dict:
    return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
            "mean": float(times.mean()), "std": float(times.std()), "runs": len(times)}


def time_runs(predict, x: np.ndarray, runs: int, warmup: int, mark=None, tag: int = 0) -> dict:
    """Latency of ``predict(x)`` in ms over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        predict(x)
    _mark(mark, tag, 0)
    times = timings(predict, x, runs)
    _mark(mark, tag, 1)
    return summarize(times)


def open_artifact(folder: Path, artifact: dict, threads: int):
    """``(predict, runtime version, runtime settings)`` for one manifest artifact in ``folder``."""
    entry = ensure_dense(folder, artifact)
    opener = OPENERS.get(artifact["runtime"])
    if opener is None:
        raise ValueError(f"unknown runtime {artifact['runtime']!r}; this runner knows {sorted(OPENERS)}")
    return opener(entry, threads, artifact.get("precision", "fp32"))


def logits_of(predict, inputs: np.ndarray) -> np.ndarray:
    """Each input through ``predict`` at batch 1, stacked."""
    return np.concatenate([np.asarray(predict(np.ascontiguousarray(x[None]))).reshape(1, -1) for x in inputs])


def run_artifact(folder: Path, artifact: dict, inputs: np.ndarray, runs: int, warmup: int, threads: int,
                 mark: int | None, tag: int) -> dict:
    """Open one artifact, compute its logits on every input, then time it on the first."""
    predict, version, settings = open_artifact(folder, artifact, threads)
    logits = logits_of(predict, inputs)
    latency = time_runs(predict, np.ascontiguousarray(inputs[:1]), runs, warmup, mark, tag)
    return {"logits": logits, "latency_ms": latency, "runtime_version": version, "settings": settings}


def run(manifest_path: Path, out: Path, names=None, inputs: np.ndarray | None = None, runs: int = 50,
        warmup: int = 10, threads: int = 1, mark: int | None = None) -> dict:
    """Run the chosen artifacts of a manifest and write ``out`` (JSON) plus one .npy of logits each."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    artifacts = {a["name"]: a for a in manifest["artifacts"]}
    chosen = list(artifacts) if not names else list(names)
    unknown = [n for n in chosen if n not in artifacts]
    if unknown:
        raise ValueError(f"unknown artifact(s) {unknown}; the manifest has {sorted(artifacts)}")
    inputs = default_inputs(manifest) if inputs is None else np.asarray(inputs, np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for tag, name in enumerate(chosen, start=1):
        entry = {"latency_ms": None, "outputs_npy": None, "top1": None, "runtime_version": None,
                 "mark_tag": tag, "error": None}
        own = artifacts[name].get("input_shape")
        x = inputs if own is None else np.random.default_rng(0).standard_normal((1, *own[1:]), dtype=np.float32)
        try:
            got = run_artifact(manifest_path.parent, artifacts[name], x, runs, warmup, threads, mark, tag)
            npy = out.with_name(f"{out.stem}-{name}.npy")
            np.save(npy, got["logits"])
            entry.update(latency_ms=got["latency_ms"], outputs_npy=npy.name, top1=got["logits"].argmax(1).tolist(),
                         runtime_version=got["runtime_version"], settings=got["settings"])
        except Exception as exc:  # one broken artifact must not hide the others' results
            entry["error"] = f"{type(exc).__name__}: {exc}"
        results[name] = entry
    result = {
        "schema": 1,
        "machine": {"isa": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "settings": {"runs": runs, "warmup": warmup, "threads": threads, "inputs": len(inputs), "batch": 1,
                     "mark_syscall": mark},
        "artifacts": results,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="artifacts/manifest.json")
    parser.add_argument("--artifacts", help="comma-separated artifact names (default: all)")
    parser.add_argument("--inputs", type=Path, help=".npy of normalized float32 inputs (N x C x H x W or N x C x L)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mark-syscall", type=int, help="enclose timed runs in syscall(N, tag, 0/1)")
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1 and --warmup >= 0")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    inputs = np.load(args.inputs) if args.inputs else None
    try:
        result = run(args.manifest, args.out, args.artifacts.split(",") if args.artifacts else None, inputs,
                     args.runs, args.warmup, args.threads, args.mark_syscall)
    except (OSError, ValueError, KeyError) as exc:
        parser.error(f"cannot run {args.manifest}: {exc}")
    failed = [name for name, r in result["artifacts"].items() if r["error"]]
    for name in failed:
        print(f"{name}: {result['artifacts'][name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
