"""The bench stage: teacher vs student, per runtime and precision, on this machine and emulated.

``bench()`` measures, for the dense teacher and the pruned student alike:

* on this machine (x86-64, *measured*): PyTorch eager and every artifact of the target's
  formats and precisions: latency (batch 1, pinned thread count, warm-up then N runs:
  p50/p90/mean/std), top-1 on the evaluation set through that runtime, artifact size;
* for an aarch64 target, under qemu-aarch64 with the target's CPU model (*emulated*): the
  same artifacts on a few evaluation images, their logits against this machine's, and the
  guest instructions per inference (repeatable; comparable only within one CPU model).

It writes ``bench.json``, ``bench.md`` and ``bench.png`` to ``out`` and returns the JSON dict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from torch import nn

from edgefree.bench import emulation, runner
from edgefree.bench.emulator_setup import default_home, prepared
from edgefree.bench.latency import Candidate, measure, open_candidates, top1_accuracy
from edgefree.bench.report import write_bench
from edgefree.config import BenchConfig
from edgefree.cost import cost
from edgefree.data import LabeledImages
from edgefree.errors import EdgefreeError
from edgefree.machine import machine_info
from edgefree.targets import Target

ROLES = ("teacher", "student")
# Emulation runs one thread: multi-threaded runtimes spin and steal under QEMU, which makes
# both the instruction counts and the emulated times swing from run to run.
EMULATED_THREADS = 1


def selected_artifacts(manifest: dict, target: Target) -> list[dict]:
    """The manifest's artifacts in one of the target's formats and precisions, in manifest order."""
    return [a for a in manifest["artifacts"] if a["format"] in target.formats and a["precision"] in target.precisions]


def _read_manifest(path: Path) -> dict:
    if not Path(path).is_file():
        raise EdgefreeError(f"no artifacts manifest at {path}: run the export stage (edgefree build) first")
    return json.loads(Path(path).read_text())


def _eval_inputs(eval_data: LabeledImages | None, spec, manifest: dict, limit: int | None):
    """Normalized float32 inputs and labels of the evaluation set, or one random image and no labels."""
    if eval_data is None:
        return runner.default_inputs(manifest), None
    n = len(eval_data) if limit is None else min(limit, len(eval_data))
    subset = LabeledImages(eval_data.pixels[:n], eval_data.labels[:n], eval_data.name)
    return subset.normalized(spec).numpy().astype(np.float32), subset.labels.numpy()


def _row(c: Candidate, labels) -> dict:
    return {
        "model": c.role, "runtime": c.runtime, "precision": c.precision,
        "artifact": c.artifact["name"] if c.artifact else None, "bytes": c.bytes, "packed_bytes": c.packed_bytes,
        "latency_ms": c.latency_ms,
        "accuracy": None if c.logits is None else top1_accuracy(c.logits.argmax(1), labels),
        "eval_images": 0 if labels is None else len(labels),
        "runtime_version": c.runtime_version, "error": c.error,
    }


def _native(models, manifests, target, config, inputs, labels, threads) -> tuple[list[dict], dict]:
    candidates = [c for role in ROLES for c in open_candidates(
        role, models[role], manifests[role]["path"].parent, selected_artifacts(manifests[role], target), threads)]
    measure(candidates, inputs, config.runs, config.warmup, threads)
    logits = {(c.role, c.artifact["name"]): c.logits for c in candidates if c.artifact}
    return [_row(c, labels) for c in candidates], logits


def _reference_logits(models, manifests, target, inputs, threads) -> dict:
    """This machine's logits of each artifact on ``inputs``, untimed: what emulated outputs are checked against."""
    logits = {}
    for role in ROLES:
        found = open_candidates(role, models[role], manifests[role]["path"].parent,
                                selected_artifacts(manifests[role], target), threads)
        for c in found[1:]:  # [0] is PyTorch eager
            logits[role, c.artifact["name"]] = None if c.error else runner.logits_of(c.predict, inputs)
    return logits


def _emulated(manifests, target, config, inputs, native_logits) -> dict:
    home = default_home()
    environment = prepared(home)
    if environment is None:
        return {"skipped": "the arm64 environment is not prepared: run `edgefree emulator setup`"}
    parity_inputs = inputs[:config.emulated_inputs]
    rows, skipped = [], []
    for role in ROLES:
        chosen = selected_artifacts(manifests[role], target)
        runnable = [a for a in chosen if a["runtime"] in environment["runtimes"]]
        skipped += [f"{role} {a['name']}: {a['runtime']} is not installed in the arm64 root "
                    f"(edgefree emulator setup --runtimes {a['runtime']})" for a in chosen if a not in runnable]
        if not runnable:
            continue
        result = emulation.run(manifests[role]["path"], target.emulation_cpu, parity_inputs, config.emulated_runs,
                               config.emulated_warmup, EMULATED_THREADS, [a["name"] for a in runnable], home,
                               config.emulation_timeout_s)
        for artifact in runnable:
            entry = result["artifacts"][artifact["name"]]
            reference = native_logits.get((role, artifact["name"]))
            rows.append(_emulated_row(role, artifact, entry, reference))
    return {"cpu": target.emulation_cpu, "qemu": emulation.qemu_version(), "threads": EMULATED_THREADS,
            "runs": config.emulated_runs, "warmup": config.emulated_warmup, "parity_inputs": len(parity_inputs),
            "environment": environment, "rows": rows, "skipped": skipped}


def _emulated_row(role: str, artifact: dict, entry: dict, reference) -> dict:
    outputs = entry.get("outputs")
    parity = None
    if outputs is not None and reference is not None:
        reference = reference[:len(outputs)]
        parity = {"max_abs_diff": float(np.abs(outputs - reference).max()),
                  "top1_agreement": float(np.mean(outputs.argmax(1) == reference.argmax(1)))}
    return {"model": role, "runtime": artifact["runtime"], "precision": artifact["precision"],
            "artifact": artifact["name"], "bytes": artifact["bytes"], "packed_bytes": artifact.get("packed_bytes"),
            "instructions": entry.get("instructions"),
            "emulated_latency_ms": entry.get("latency_ms"), "parity_vs_x86": parity,
            "runtime_version": entry.get("runtime_version"), "error": entry.get("error")}


def bench(models: dict[str, nn.Module], manifests: dict[str, Path], target: Target, out: Path,
          config: BenchConfig = BenchConfig(), eval_data: LabeledImages | None = None,
          published_as: Path | None = None) -> dict:
    """Measure teacher and student per runtime; write bench.json/.md/.png into ``out``.

    Args:
        models: ``{"teacher": ..., "student": ...}`` PyTorch modules (normalized input).
        manifests: ``{"teacher": .../manifest.json, "student": .../manifest.json}`` of their artifacts.
        target: the profile: its formats and precisions pick the artifacts; an aarch64 target
            is also run under QEMU with its ``emulation_cpu`` (when ``config.emulate``).
        out: folder for bench.json, bench.md and bench.png.
        config: runs, warm-up, threads, evaluation images, emulation settings.
        eval_data: held-out images for top-1 per runtime (None: latency only, on a random image).
        published_as: the folder the results are moved to when ``out`` is a staging folder
            (recorded as the results' place).

    Usage, with exported teacher and student::

        result = bench({"teacher": t, "student": s}, {"teacher": tm, "student": sm},
                       load_target("x86-64"), Path("out"), eval_data=data)
        [r["latency_ms"]["p50"] for r in result["native"]["rows"]]
    """
    manifests = {role: {**_read_manifest(path), "path": Path(path)} for role, path in manifests.items()}
    spec = models["teacher"].input_spec
    inputs, labels = _eval_inputs(eval_data, spec, manifests["student"], config.eval_limit)
    threads = config.threads or (1 if target.emulated else target.threads)
    if config.native or not target.emulated:
        load_before = os.getloadavg()[0]  # other processes on the cores move absolute times, not the ratios
        rows, native_logits = _native(models, manifests, target, config, inputs, labels, threads)
        native = {"kind": "measured", "threads": threads, "runs": config.runs, "warmup": config.warmup, "batch": 1,
                  "load_average_1min": [load_before, os.getloadavg()[0]], "rows": rows}
    else:  # emulation only: this machine's outputs are still needed, as the parity reference
        native, native_logits = None, _reference_logits(models, manifests, target, inputs[:config.emulated_inputs],
                                                        threads)
    result = {
        "schema": 1,
        "target": target.to_dict(),
        "model": {"arch": manifests["student"]["model"]["arch"]},
        "cost": {role: cost(model, spec.example_inputs()[0]) for role, model in models.items()},
        "eval": {"name": eval_data.name if eval_data is not None else None, "images": len(inputs) if labels is not None else 0},
        "native": native,
        "emulated": (_emulated(manifests, target, config, inputs, native_logits)
                     if target.emulated and config.emulate else None),
        "config": config.to_dict(),
        "machine": machine_info(),
        "out": str(published_as or out),
    }
    write_bench(result, Path(out))
    return result
