"""Measured on this machine: latency per runtime, for PyTorch eager and each artifact.

Artifacts open through ``runner.open_artifact`` (the code that runs on a device and under
QEMU) and are timed with the runner's ``timings``. Every candidate, teacher and student,
is opened first; the timed runs are then taken in rounds that visit each candidate in
turn, so load from other processes on a shared machine falls on teacher and student alike
instead of on whichever ran during a busy second.

How many runs: a candidate stops once its p50 is known well enough, i.e. the 95% confidence
interval of the median (distribution-free, from order statistics) is within
``p50_tolerance`` of it, after at least ``min_runs`` and at most ``max_runs`` runs or
``max_seconds`` of timed runs. A 10 ms model stops after a few dozen runs, a 0.04 ms one
takes hundreds, which cost it less than a second.
"""

from __future__ import annotations

import io
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefree.bench import runner
from edgefree.config import BenchConfig

# Timed runs come in rounds of about ROUND_S seconds and at least 5 runs per candidate: finer
# interleaving would time models whose caches the others just evicted, coarser would let a busy
# second land on one model only. A fixed count is split into up to 10 rounds.
MAX_ROUNDS, MIN_RUNS_PER_ROUND, ROUND_S = 10, 5, 0.1
Z95 = 1.96


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
    accuracy: float | None = None
    accuracy_source: str | None = None  # "export" (the manifest), "evaluate" (the build's), "bench" (measured here)
    latency_ms: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    times: list = field(default_factory=list)
    stopped: str | None = None


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


def p50_interval(times) -> tuple[float, float]:
    """A distribution-free 95% confidence interval of the median of ``times``.

    The ranks n/2 -+ 1.96 sqrt(n)/2 of the sorted sample (the binomial's normal approximation):
    no assumption about the shape of the latency distribution, whose tail is long.

    Example:
        >>> p50_interval(list(range(1, 101)))
        (40, 60)
    """
    ordered = np.sort(np.asarray(times))
    n = len(ordered)
    half = Z95 * np.sqrt(n) / 2
    low, high = max(0, int(np.floor(n / 2 - half)) - 1), min(n - 1, int(np.ceil(n / 2 + half)) - 1)
    return ordered[low].item(), ordered[high].item()


SETTLED = ("stable", "runs")  # why timing stopped where the p50 is as certain as the settings ask


def stop_reason(times, config: BenchConfig) -> str | None:
    """Why timing may stop after ``times`` (ms): "runs" (a fixed count), "stable" (checked first: a sample
    that settled as it reached a cap has settled), "max_runs", "max_seconds"; None while more runs are needed."""
    n = len(times)
    if config.runs is not None:
        return "runs" if n >= config.runs else None
    if n >= config.min_runs:
        low, high = p50_interval(times)
        if (high - low) / 2 <= config.p50_tolerance * float(np.median(times)):
            return "stable"
    if n >= config.max_runs:
        return "max_runs"
    if n and sum(times) / 1000 >= config.max_seconds:
        return "max_seconds"
    return None


def _round_size(config: BenchConfig, estimate_ms: float) -> int:
    if config.runs is not None:
        return int(np.ceil(config.runs / min(MAX_ROUNDS, max(1, config.runs // MIN_RUNS_PER_ROUND))))
    # at most a MAX_ROUNDS-th of the cap per round: a fast model that has not settled takes turns with the others
    return int(np.clip(ROUND_S * 1000 / max(estimate_ms, 1e-3), MIN_RUNS_PER_ROUND,
                       max(MIN_RUNS_PER_ROUND, config.max_runs // MAX_ROUNDS)))


def summary(times, stopped: str) -> dict:
    """The runner's summary (p50, p90, mean, std, runs), the p50's 95% interval and why timing stopped."""
    low, high = p50_interval(times)
    return {**runner.summarize(np.asarray(times)), "p50_ci95": [low, high], "stopped": stopped}


def measure(candidates: list[Candidate], inputs: np.ndarray, config: BenchConfig, threads: int,
            progress: bool = False) -> None:
    """Fill each candidate's latency (first input, batch 1, in rounds, until ``config``'s stopping
    rule holds) and, for one whose top-1 is measured here (``accuracy_source`` "bench"), its
    logits on every input, at batch 1."""
    from tqdm.auto import tqdm

    first = np.ascontiguousarray(inputs[:1])
    sizes = {}
    with torch_threads(threads), tqdm(candidates, desc="bench", unit="runtime", disable=not progress) as bar:
        for c in bar:
            bar.set_postfix_str(f"{c.role} {c.runtime} {c.precision}: warm-up")
            started = time.perf_counter()
            if c.accuracy_source == "bench":
                _guarded(c, lambda c: setattr(c, "logits", runner.logits_of(c.predict, inputs)))
            warm = []
            _guarded(c, lambda c: warm.extend(runner.timings(c.predict, first, max(1, config.warmup))))
            c.seconds += time.perf_counter() - started
            sizes[id(c)] = _round_size(config, float(np.median(warm)) if warm else 1.0)
        active = [c for c in candidates if not c.error]
        with tqdm(total=len(active), desc="bench: timing until the p50 is stable", unit="runtime",
                  disable=not progress) as timing:
            while active:
                for c in list(active):
                    timing.set_postfix_str(f"{c.role} {c.runtime} {c.precision}")
                    started = time.perf_counter()
                    done = sum(len(t) for t in c.times)
                    chunk = min(sizes[id(c)], (config.runs or config.max_runs) - done)
                    _guarded(c, lambda c: c.times.append(runner.timings(c.predict, first, chunk)))
                    c.seconds += time.perf_counter() - started
                    c.stopped = "error" if c.error else stop_reason(np.concatenate(c.times), config)
                    if c.stopped:
                        active.remove(c)
                        timing.update()
    for c in candidates:
        if not c.error:
            c.latency_ms = summary(np.concatenate(c.times), c.stopped)
