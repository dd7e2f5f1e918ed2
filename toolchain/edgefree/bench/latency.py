"""Measured on this machine: latency and top-1 per runtime, for PyTorch eager and each artifact.

Artifacts open through ``runner.open_artifact`` (the code that runs on a device and under
QEMU) and are timed with the runner's ``timings``. Every candidate, teacher and student,
is opened first; the timed runs are then taken in rounds that visit each candidate in
turn, so load from other processes on a shared machine falls on teacher and student alike
instead of on whichever ran during a busy second.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefree.bench import runner

# Timed runs come in up to 10 rounds of at least 5: finer interleaving would time models whose
# caches the others just evicted, coarser would let a busy second land on one model only.
MAX_ROUNDS, MIN_RUNS_PER_ROUND = 10, 5


@dataclass
class Candidate:
    """One model on one runtime and precision, and what was measured of it."""

    role: str
    runtime: str
    precision: str
    artifact: dict | None = None
    predict: object = None
    runtime_version: str | None = None
    bytes: int | None = None
    packed_bytes: int | None = None
    logits: np.ndarray | None = None
    latency_ms: dict | None = None
    error: str | None = None
    times: list = field(default_factory=list)


def top1_accuracy(top1, labels: np.ndarray | None) -> float | None:
    """Percent of ``top1`` predictions equal to ``labels``; None without labels."""
    if labels is None or top1 is None:
        return None
    return 100.0 * float(np.mean(np.asarray(top1) == labels[:len(top1)]))


@contextmanager
def torch_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def state_dict_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def _eager(model: nn.Module):
    model = model.eval().cpu()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return predict


def open_candidates(role: str, model: nn.Module, folder: Path, artifacts: list[dict], threads: int) -> list[Candidate]:
    """PyTorch eager for ``model``, then each artifact of ``folder`` opened with its runtime."""
    found = [Candidate(role, "pytorch", "fp32", predict=_eager(model), runtime_version=torch.__version__,
                       bytes=state_dict_bytes(model))]
    for artifact in artifacts:
        c = Candidate(role, artifact["runtime"], artifact["precision"], artifact, bytes=artifact["bytes"],
                      packed_bytes=artifact.get("packed_bytes"))
        try:
            c.predict, c.runtime_version, _ = runner.open_artifact(folder, artifact, threads)
        except Exception as exc:  # a runtime that cannot load one artifact must not stop the others
            c.error = f"{type(exc).__name__}: {exc}"
        found.append(c)
    return found


def _guarded(candidate: Candidate, work) -> None:
    if candidate.error:
        return
    try:
        work(candidate)
    except Exception as exc:  # recorded in the row, which the report shows as an error
        candidate.error = f"{type(exc).__name__}: {exc}"


def measure(candidates: list[Candidate], inputs: np.ndarray, runs: int, warmup: int, threads: int) -> None:
    """Fill each candidate's logits (every input, batch 1) and latency (first input, in rounds)."""
    first = np.ascontiguousarray(inputs[:1])
    with torch_threads(threads):
        for c in candidates:
            _guarded(c, lambda c: setattr(c, "logits", runner.logits_of(c.predict, inputs)))
            _guarded(c, lambda c: [c.predict(first) for _ in range(warmup)])
        for chunk in np.array_split(np.arange(runs), min(MAX_ROUNDS, max(1, runs // MIN_RUNS_PER_ROUND))):
            for c in candidates:
                _guarded(c, lambda c: c.times.append(runner.timings(c.predict, first, len(chunk))))
    for c in candidates:
        if not c.error:
            c.latency_ms = runner.summarize(np.concatenate(c.times))
