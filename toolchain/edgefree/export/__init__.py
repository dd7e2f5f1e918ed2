"""Export the recovered student for each runtime, check it against PyTorch, pack it, list it.

    student -> {onnx, openvino, executorch} x {fp32, int8} -> parity gate -> .efpk -> manifest.json

Every artifact takes a *normalized* float32 batch of 1, N x C x H x W (an image) or N x C x L (a signal),
as the manifest's ``model.input`` describes (ONNX graphs take any batch).
Parity is checked at batch 1, as a device runs it; each artifact's top-1 on the evaluation
set is then measured once, at the largest batch its runtime takes (``eval_batch``), and
written to the manifest, where the bench reads it. INT8 artifacts are calibrated on the
synthetic images only: no real data is needed to quantize. An operator a format cannot take, or
a runtime that fails to run the artifact, costs that format only (it is listed under ``failed``); an artifact that does not match
PyTorch fails the export with ParityError, and its files are never written to the output folder.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from edgefree.config import ExportConfig
from edgefree.data import EvalData
from edgefree.errors import ExportError, ParityError, first_line
from edgefree.export import executorch, onnx, openvino
from edgefree.export.manifest import MANIFEST, SCHEMA, artifact_entry, describe_files, write_manifest
from edgefree.export.parity import compare, gate, run_batch1, run_batched
from edgefree.export.runtime import require_runtimes
from edgefree.export.unpack import VERSION as PACK_VERSION
from edgefree.machine import versions
from edgefree.models import InputSpec
from edgefree.recover import Student, SyntheticSet
from edgefree.recover.checks import module_of, require
from edgefree.targets import FORMATS, PRECISIONS

BACKENDS = {"onnx": onnx, "openvino": openvino, "executorch": executorch}
_UNSUPPORTED_OP = (  # how each exporter names an operator it cannot take
    re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'"),
    re.compile(r"Operator (?:torch\._ops\.)?([\w.]+) is not in Core ATen"),
    re.compile(r"No conversion rule found for operations: ([^\n]+)"),
)


def _spread(count: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices spread evenly over ``count`` items (eval sets are often sorted by class)."""
    return np.unique(np.linspace(0, count - 1, num=min(count, limit)).round().astype(int))


def _deployable(student: nn.Module) -> nn.Module:
    model = copy.deepcopy(student).cpu().eval()
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.is_floating_point():
                # IEEE: -0.0 + 0.0 == +0.0, all else unchanged. Pruning by multiplication leaves -0.0
                # for negative weights, whose sign bits would otherwise cost the packer.
                tensor.add_(0.0)
    return model


def _torch_logits(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in np.array_split(
            inputs, max(1, len(inputs) // 500))])


def _explain(fmt: str, name: str, exc: Exception) -> str:
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    for text, pattern in itertools.product(chain, _UNSUPPORTED_OP):
        found = pattern.search(text)
        if found:
            return (f"{fmt} cannot take the operator {found.group(1).strip()}, so {name} was not built: "
                    f"replace that operation in the model, or leave {fmt} out with --formats")
    return f"{name} could not be exported to {fmt} ({type(exc).__name__}: {first_line(exc, 300)})"


def _exported(folder: Path) -> list[Path]:
    """What an export wrote into ``folder``: ``student-<precision>.*``, its manifest and a stopped export's
    staging folders."""
    previous = [path for precision in PRECISIONS for path in folder.glob(f"student-{precision}.*")]
    manifest = [folder / MANIFEST] if (folder / MANIFEST).exists() else []
    return [*previous, *folder.glob(".staging-*"), *manifest]


def refuse_foreign_files(folder: Path, replaced_by: str) -> None:
    """Refuse, before any work, files of the user's own in ``folder`` (a build's ``artifacts/``), which
    ``replaced_by`` (the command) replaces as a whole.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "student-fp32.onnx").write_text("an artifact") and refuse_foreign_files(folder, "a rebuild")
        >>> (folder / "NOTES.txt").write_text("mine") and refuse_foreign_files(folder, "a rebuild")
        Traceback (most recent call last):
        ...
        edgefree.errors.ExportError: ... holds NOTES.txt, which edgefree did not write, and a rebuild replaces ...
    """
    if not folder.is_dir():
        return
    foreign = sorted(p.name for p in set(folder.iterdir()) - set(_exported(folder)))
    if foreign:
        raise ExportError(f"{folder} holds {', '.join(foreign)}, which edgefree did not write, and {replaced_by} "
                          "replaces that folder as a whole: move them out of it first")


def _clean(folder: Path) -> Path:
    """Remove a previous export's files (``_exported``), so nothing stale looks like a fresh artifact; any other
    file in ``folder`` stays."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in _exported(folder):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return folder


class _Checks:
    """The inputs every artifact runs, PyTorch's logits on the parity spread, and where they came from."""

    def __init__(self, model: nn.Module, spec: InputSpec, config: ExportConfig, calibration: SyntheticSet,
                 eval_data: EvalData | None, reference_accuracy: float | None):
        if eval_data is not None:  # all of it, for accuracy; parity on an even spread of it
            self.inputs = eval_data.normalized(spec).numpy()
            self.labels, self.source = eval_data.labels.numpy(), "eval"
        else:
            picked = _spread(len(calibration), config.check_images)
            self.inputs, self.labels, self.source = calibration.images[picked].numpy(), None, "synthetic"
        self.inputs = np.ascontiguousarray(self.inputs, dtype=np.float32)
        self.parity = _spread(len(self.inputs), config.check_images)
        self.reference = _torch_logits(model, self.inputs[self.parity])
        if self.labels is None:
            self.reference_accuracy = None
        elif reference_accuracy is None:  # nobody measured the PyTorch model on these images yet
            self.reference_accuracy = self.accuracy(_torch_logits(model, self.inputs))
        else:
            self.reference_accuracy = reference_accuracy

    def accuracy(self, outputs: np.ndarray) -> float | None:
        return None if self.labels is None else float(100.0 * (outputs.argmax(1) == self.labels).mean())

    def parity_figures(self, predict, precision: str, config: ExportConfig) -> tuple[dict, np.ndarray]:
        outputs = run_batch1(predict, self.inputs[self.parity])
        figures = compare(outputs, self.reference)
        return {"inputs": self.source, "images": len(self.parity), **figures, **gate(precision, figures, config)}, outputs


def _failure(fmt: str, precision: str, stage: str, error: str, **details) -> dict:
    return {"name": f"{fmt}-{precision}", "format": fmt, "precision": precision, "stage": stage, "error": error,
            **details}


def _accuracy(backend, entry: Path, checks: _Checks, batch1: np.ndarray, config: ExportConfig, desc: str,
              show: bool) -> dict:
    """Top-1 on every evaluation image, once, at the largest batch the runtime takes.

    ``batched_vs_batch1`` compares the batched logits with the batch-1 parity run on the same
    images: kernels picked for another batch may round differently, and this says by how much.
    """
    predict, batch = backend.load_batched(entry, config.eval_batch, torch.get_num_threads())
    with tqdm(total=len(checks.inputs), desc=f"{desc}: top-1 at batch {batch}", unit="img", leave=False,
              disable=not show) as images:
        outputs = run_batched(predict, checks.inputs, batch, images)
    return {"accuracy": checks.accuracy(outputs), "accuracy_batch": batch, "accuracy_images": len(outputs),
            "batched_vs_batch1": compare(outputs[checks.parity], batch1)}


def _build(fmt: str, precision: str, model: nn.Module, checks: _Checks, calibration: np.ndarray,
           config: ExportConfig, folder: Path, bar, bar_label: str) -> tuple[dict | None, dict | None]:
    """One artifact: (its manifest entry, None) when built and verified, else (None, the failure)."""
    name, backend = f"{fmt}-{precision}", BACKENDS[fmt]
    staging = folder / f".staging-{name}"
    staging.mkdir()
    clock = time.perf_counter
    seconds, started = {}, clock()
    try:
        try:
            bar.set_postfix_str(f"{name}: export")
            files = backend.export(model, torch.from_numpy(checks.inputs[:1].copy()), precision, calibration,
                                   staging / f"student-{precision}", config.opset)
            seconds["export"], mark = round(clock() - started, 2), clock()
            bar.set_postfix_str(f"{name}: parity")
            parity, batch1 = checks.parity_figures(backend.load(files[0]), precision, config)
            if hasattr(backend, "load_default"):  # OpenVINO: also report the precision it picks by default here
                predict, hint = backend.load_default(files[0])
                parity["default_precision"] = {"hint": hint, **compare(
                    run_batch1(predict, checks.inputs[checks.parity]), checks.reference)}
        except Exception as exc:  # each exporter and runtime raises its own types; one format's failure ends only it
            return None, _failure(fmt, precision, "export", _explain(fmt, name, exc))
        seconds["parity"] = round(clock() - mark, 2)
        if not parity["passed"]:
            return None, _failure(fmt, precision, "parity", (
                f"{name} does not match the PyTorch student: needs {parity['rule']}, got max_abs_diff "
                f"{parity['max_abs_diff']:.3g}, top1_agreement {parity['top1_agreement']:.4f} on "
                f"{parity['images']} {checks.source} images"), parity=parity)
        mark = clock()
        figures = {"accuracy": None}
        if checks.labels is not None:
            bar.set_postfix_str(f"{name}: top-1")
            try:
                figures = _accuracy(backend, files[0], checks, batch1, config, f"{bar_label} {name}", not bar.disable)
            except Exception as exc:  # the runtime at a larger batch: as above, it ends only this format
                return None, _failure(fmt, precision, "accuracy", (
                    f"{name} was exported and matched PyTorch at batch 1, but its runtime failed while measuring "
                    f"top-1 at the largest batch it takes ({type(exc).__name__}: {first_line(exc, 300)}): leave "
                    f"{fmt} out with --formats, or report it"), parity=parity)
        seconds["accuracy"], mark = round(clock() - mark, 2), clock()
        bar.set_postfix_str(f"{name}: pack")
        moved = [shutil.move(path, folder / path.name) for path in files]
        described = describe_files([Path(p) for p in moved], folder)
        seconds["pack"], seconds["total"] = round(clock() - mark, 2), round(clock() - started, 2)
        return artifact_entry(name, fmt, precision, backend.RUNTIME, described, parity=parity, **figures,
                              runtime_versions={backend.RUNTIME: backend.runtime_version()}, seconds=seconds), None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_student(student: nn.Module | Student, spec: InputSpec, config: ExportConfig, out_dir: Path,
                   calibration: SyntheticSet, eval_data: EvalData | None = None,
                   reference_accuracy: float | None = None, progress: bool = False, label: str = "student",
                   arch: str | None = None) -> dict:
    """Export, verify and pack ``student`` (a module, or a ``Student``'s model; it takes inputs of ``spec``) into
    ``out_dir``, where a previous export's files are replaced and any other file stays; write and
    return ``manifest.json``'s content, which records ``spec`` and ``arch`` (the teacher's source).

    Parity runs on ``eval_data`` when given (which also gives each artifact's accuracy),
    else on synthetic images. ``reference_accuracy`` is the PyTorch model's top-1 on
    ``eval_data`` where the caller measured it already (None: measured here). ``progress``
    shows a bar named ``label``. Raises ParityError when an artifact does not match PyTorch
    and ExportError when no artifact could be built; the manifest then lists what was.

    Usage (``tests/test_export.py`` runs it on every format)::

        teacher = default_teacher()
        dreams = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=2), progress=False)
        manifest = export_student(teacher.module, teacher.spec, ExportConfig(formats=("onnx",), precisions=("fp32",)),
                                  Path("out"), dreams)
        [a["name"] for a in manifest["artifacts"]]  # ['onnx-fp32']
    """
    student = module_of(student)
    require(config, ExportConfig)
    require(calibration, SyntheticSet, "calibration")
    config = config.replace(formats=config.formats or FORMATS, precisions=config.precisions or PRECISIONS)
    require_runtimes(config.formats)
    folder = _clean(Path(out_dir))
    model = _deployable(student)
    checks = _Checks(model, spec, config, calibration, eval_data, reference_accuracy)
    calib = calibration.images[_spread(len(calibration), config.calibration_images)].numpy().astype(np.float32)
    built, failed = [], []
    jobs = list(itertools.product(config.precisions, config.formats))
    with tqdm(jobs, desc=f"export {label}", unit="artifact", disable=not progress) as bar:
        for precision, fmt in bar:
            artifact, failure = _build(fmt, precision, model, checks, calib, config, folder, bar, label)
            (built if artifact else failed).append(artifact or failure)
    manifest = {
        "schema": SCHEMA,
        "model": {"arch": arch or type(student).__name__, "input": spec.to_dict()},
        "artifacts": built,
        "failed": failed,
        "reference": {"runtime": "pytorch", "inputs": checks.source, "images": len(checks.inputs),
                      "accuracy": checks.reference_accuracy},
        "calibration": {"source": "synthetic", "images": len(calib),
                        "sha256": hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest()},
        "packing": {"format": "efpk", "version": PACK_VERSION, "unpack": "python unpack.py FILE.efpk FILE"},
        "settings": config.to_dict(),
        "versions": versions(),
    }
    write_manifest(manifest, folder)
    mismatched = [f["error"] for f in failed if f["stage"] == "parity"]
    if mismatched:
        raise ParityError("; ".join(mismatched) + ". Its files were not kept.")
    if not built:
        raise ExportError("no artifact could be built: " + "; ".join(f["error"] for f in failed))
    return manifest
