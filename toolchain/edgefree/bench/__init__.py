"""The bench stage: teacher vs student, per runtime and precision, on this machine and emulated.

``bench()`` measures, for the dense teacher and the pruned student alike:

* on this machine (x86-64, *measured*): PyTorch eager and every artifact of the target's
  formats and precisions: latency (batch 1, pinned thread count, warm-up, then runs until
  the p50 is stable: p50/p90/mean/std and the p50's 95% interval), artifact size, and the
  top-1 on the evaluation set, read from where it was measured once: the export's manifest
  for an artifact, the build's evaluate stage for PyTorch (``remeasure_accuracy`` or
  ``eval_limit`` measures it again through each runtime);
* for an aarch64 target, under qemu-aarch64 with the target's CPU model (*emulated*): the
  same artifacts on a few evaluation images, their logits against this machine's, and the
  guest instructions per inference (repeatable; comparable only within one CPU model).

The teacher's rows are kept beside its cached export (``bench.teacher``): a second build of
the same teacher on this machine reuses them, and the report says so. It writes
``bench.json``, ``bench.md`` and ``bench.png`` to ``out`` and returns the JSON dict.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from torch import nn

from edgefree.bench import emulation, runner
from edgefree.bench.emulator_setup import default_home, not_prepared, prepared
from edgefree.bench.latency import SETTLED, Candidate, measure, open_candidates, top1_accuracy
from edgefree.bench.report import write_bench
from edgefree.bench.teacher import TeacherArtifacts, cached_rows, rows_key, store_rows
from edgefree.config import BenchConfig
from edgefree.cost import cost
from edgefree.data import EvalData
from edgefree.errors import EdgefreeError, EmulationError, first_line, warn
from edgefree.machine import machine_info
from edgefree.models import InputSpec
from edgefree.targets import Target
from edgefree.verify import read_manifest

ROLES = ("teacher", "student")
# Emulation runs one thread: multi-threaded runtimes spin and steal under QEMU, which makes
# both the instruction counts and the emulated times swing from run to run.
EMULATED_THREADS = 1


def check_runs(target: Target, config: BenchConfig) -> None:
    """Refuse, before any work, a bench that would measure nothing: an aarch64 target's emulated runs alone
    (``native`` off) where the emulator is not set up. Without it, this machine's rows are measured and the
    emulation named as not run."""
    if target.emulated and config.emulate and not config.native and prepared(default_home()) is None:
        raise EmulationError(f"target {target.name} is {target.isa} and --no-native asks for its emulated runs "
                             f"alone, but {not_prepared(default_home())}")


def selected_artifacts(manifest: dict, target: Target) -> list[dict]:
    """The manifest's artifacts in one of the target's formats and precisions, in manifest order."""
    return [a for a in manifest["artifacts"] if a["format"] in target.formats and a["precision"] in target.precisions]


def _read_manifest(path: Path) -> dict:
    if not Path(path).is_file():
        raise EdgefreeError(f"no artifacts manifest at {path}: run the export stage (edgefree build) first")
    return read_manifest(Path(path))


def _eval_inputs(eval_data: EvalData | None, spec, manifest: dict, limit: int | None):
    """Normalized float32 inputs and labels of the evaluation set, or one random image and no labels."""
    if eval_data is None:
        return runner.default_inputs(manifest), None
    n = len(eval_data) if limit is None else min(limit, len(eval_data))
    return eval_data.normalized(spec, slice(0, n)).numpy().astype(np.float32), eval_data.labels[:n].numpy()


def _row(c: Candidate, labels) -> dict:
    if c.accuracy_source == "bench":
        c.accuracy = None if c.logits is None else top1_accuracy(c.logits.argmax(1), labels)
    images = (c.artifact or {}).get("accuracy_images") if c.accuracy_source == "export" else None
    return {
        "model": c.role, "runtime": c.runtime, "precision": c.precision,
        "artifact": c.artifact["name"] if c.artifact else None, "bytes": c.bytes, "packed_bytes": c.packed_bytes,
        "latency_ms": c.latency_ms, "accuracy": c.accuracy, "accuracy_source": c.accuracy_source,
        "accuracy_batch": (c.artifact or {}).get("accuracy_batch") if c.accuracy_source == "export" else None,
        "eval_images": 0 if labels is None else images or len(labels),
        "runtime_version": c.runtime_version, "error": c.error, "seconds": round(c.seconds, 2),
    }


def _assign_accuracy(c: Candidate, known: dict, remeasure: bool, labels) -> None:
    """Where the candidate's top-1 comes from: the manifest, the build's evaluate stage, or a pass here."""
    if labels is None:
        return
    if not remeasure and c.artifact and c.artifact.get("accuracy") is not None:
        c.accuracy, c.accuracy_source = c.artifact["accuracy"], "export"
    elif not remeasure and not c.artifact and known.get(c.role) is not None:
        c.accuracy, c.accuracy_source = known[c.role], "evaluate"
    else:
        c.accuracy_source = "bench"


def _settled(rows: list[dict]) -> bool:
    """Whether every timed row stopped because its p50 settled (or its fixed run count was reached), not at the
    time or run cap: only such teacher rows are cached for later builds."""
    return all(r["error"] or (r["latency_ms"] or {}).get("stopped") in SETTLED for r in rows)


def _rows_settings(config: BenchConfig, threads: int, artifacts: list[dict], teacher: TeacherArtifacts,
                   accuracy) -> dict:
    latency = {k: getattr(config, k) for k in ("runs", "min_runs", "max_runs", "max_seconds", "p50_tolerance",
                                               "warmup")}
    m = machine_info()
    return {"latency": latency, "threads": threads, "artifacts": [a["name"] for a in artifacts],
            "teacher": teacher.key, "pytorch_accuracy": accuracy, "cpu": m["cpu"], "cores": m["cores"]}


def _native(models, manifests, target, config, inputs, labels, threads, known, teacher, progress,
            reuse_teacher_rows: bool = True) -> dict:
    remeasure = config.remeasure_accuracy or config.eval_limit is not None
    key = stored = None
    if teacher is not None and not remeasure:
        chosen = selected_artifacts(manifests["teacher"], target)
        key = rows_key(_rows_settings(config, threads, chosen, teacher, known.get("teacher")))
        stored = cached_rows(teacher.manifest, key) if reuse_teacher_rows else None
        stored = stored if stored and _settled(stored["rows"]) else None  # a row timed to its cap: time it again
    roles = ("student",) if stored else ROLES
    opened = time.perf_counter()
    candidates = [c for role in roles for c in open_candidates(
        role, models[role], manifests[role]["path"].parent, selected_artifacts(manifests[role], target), threads)]
    opened = time.perf_counter() - opened
    for c in candidates:
        _assign_accuracy(c, known, remeasure, labels)
    load_before = os.getloadavg()[0]  # other processes on the cores move absolute times, not the ratios
    measure(candidates, inputs, config, threads, progress)
    load = [load_before, os.getloadavg()[0]]
    rows = [_row(c, labels) for c in candidates]
    measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if stored:
        rows = [{**r, "cached": True} for r in stored["rows"]] + rows
        teacher_rows = {"cached": True, "key": key, "measured_at": stored["measured_at"],
                        "load_average_1min": stored["load_average_1min"]}
    else:
        teacher_rows = {"cached": False, "key": key, "measured_at": measured_at, "load_average_1min": load}
        if key and _settled(fresh := [r for r in rows if r["model"] == "teacher"]):
            store_rows(teacher.manifest, key, {"rows": fresh, "measured_at": measured_at, "load_average_1min": load})
    return {"kind": "measured", "threads": threads, "runs": config.runs, "min_runs": config.min_runs,
            "max_runs": config.max_runs, "max_seconds": config.max_seconds, "p50_tolerance": config.p50_tolerance,
            "warmup": config.warmup, "batch": 1, "load_average_1min": load, "teacher_rows": teacher_rows,
            "seconds": {"open": round(opened, 2), **{f"{r['model']} {r['runtime']} {r['precision']}": r["seconds"]
                                                     for r in rows if not r.get("cached")}},
            "rows": rows}


def _reference_logits(models, manifests, target, inputs, threads) -> dict:
    """This machine's logits of each artifact on ``inputs``, untimed: what emulated outputs are checked against."""
    logits = {}
    for role in ROLES:
        found = open_candidates(role, models[role], manifests[role]["path"].parent,
                                selected_artifacts(manifests[role], target), threads)
        for c in found[1:]:  # [0] is PyTorch eager
            logits[role, c.artifact["name"]] = None if c.error else runner.logits_of(c.predict, inputs)
    return logits


def _emulated(manifests, target, config, inputs, reference) -> dict:
    home = default_home()
    environment = prepared(home)
    if environment is None:
        return {"skipped": not_prepared(home)}
    native_logits = reference()
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


def bench(models: dict[str, nn.Module], manifests: dict[str, Path], spec: InputSpec, target: Target, out: Path,
          config: BenchConfig = BenchConfig(), eval_data: EvalData | None = None,
          accuracy: dict[str, float | None] | None = None, teacher: TeacherArtifacts | None = None,
          progress: bool = False, published_as: Path | None = None, reuse_teacher_rows: bool = True) -> dict:
    """Measure teacher and student per runtime; write bench.json/.md/.png into ``out``.

    Args:
        models: ``{"teacher": ..., "student": ...}`` PyTorch modules (normalized input).
        manifests: ``{"teacher": .../manifest.json, "student": .../manifest.json}`` of their artifacts.
        spec: the input both take (shape and normalization).
        target: the profile: its formats and precisions pick the artifacts; an aarch64 target
            is also run under QEMU with its ``emulation_cpu`` (when ``config.emulate``).
        out: folder for bench.json, bench.md and bench.png.
        config: latency budget, warm-up, threads, evaluation images, emulation settings.
        eval_data: held-out images for top-1 per runtime (None: latency only, on a random image).
        published_as: the folder the results are moved to when ``out`` is a staging folder
            (recorded as the results' place).
        accuracy: ``{"teacher": ..., "student": ...}`` PyTorch top-1 on ``eval_data`` measured
            already (the build's evaluate stage); a role without one is measured here.
        teacher: the teacher's cached export (``export_teacher``): its rows are then reused
            from, or stored in, the cache.
        reuse_teacher_rows: False times the teacher again, in turns with the student, even where its rows are
            cached: a ratio that decides something (a latency target met) is measured side by side.
        progress: show progress bars.

    Usage, with exported teacher and student::

        result = bench({"teacher": t, "student": s}, {"teacher": tm, "student": sm}, teacher.spec,
                       load_target("x86-64"), Path("out"), eval_data=data)
        [r["latency_ms"]["p50"] for r in result["native"]["rows"]]
    """
    started = time.perf_counter()
    manifests = {role: {**_read_manifest(path), "path": Path(path)} for role, path in manifests.items()}
    inputs, labels = _eval_inputs(eval_data, spec, manifests["student"], config.eval_limit)
    threads = config.threads or (1 if target.emulated else target.threads)
    native = None
    if config.native or not target.emulated:
        native = _native(models, manifests, target, config, inputs, labels, threads, accuracy or {}, teacher,
                         progress, reuse_teacher_rows)
    emulated = None
    if target.emulated and config.emulate:  # this machine's outputs are the parity reference
        emulated = _emulated(manifests, target, config, inputs, lambda: _reference_logits(
            models, manifests, target, inputs[:config.emulated_inputs], threads))
    images = [r["eval_images"] for r in (native or {}).get("rows", []) if r["accuracy"] is not None]
    result = {
        "schema": 1,
        "target": target.to_dict(),
        "model": {"arch": manifests["student"]["model"]["arch"]},
        "cost": {role: cost(model, spec.example_inputs()[0]) for role, model in models.items()},
        "eval": {"name": eval_data.name if eval_data is not None else None,
                 "images": max(images) if images else (len(inputs) if labels is not None else 0)},
        "teacher_export": teacher.to_dict() if teacher else None,
        "native": native,
        "emulated": emulated,
        "seconds": round(time.perf_counter() - started, 2),
        "config": config.to_dict(),
        "machine": machine_info(),
        "out": str(published_as or out),
    }
    write_bench(result, Path(out))
    rows = (native or {}).get("rows", [])
    if rows and all(r["error"] for r in rows):
        warn(f"no runtime could be measured on this machine (every row of bench.md is an error; the first: "
             f"{rows[0]['model']} {rows[0]['runtime']} {rows[0]['precision']}: {first_line(rows[0]['error'], 160)})")
    return result
