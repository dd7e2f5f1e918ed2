"""ARM64 on this x86 machine: QEMU user-mode runs ``runner.py`` in the prepared arm64 root.

``run()`` executes the runner under ``qemu-aarch64`` with ``QEMU_CPU`` set to the target's
core and the icount plugin loaded (both prepared by ``emulator_setup.setup()``), and turns
the plugin's marker counts into instructions per inference: repeatable, and comparable only
within one CPU model. Emulated wall time is reported, labelled as emulated: it says nothing
about a device.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgefree.bench.emulator_setup import (ARM_CPUS, cpu_view, default_home, not_prepared, plugin_path, prepared,
                                          require_tools)
from edgefree.errors import EmulationError

MARKER_SYSCALL = 4000  # no aarch64 Linux system call has this number (they end below 500)
RUNNER = Path(__file__).with_name("runner.py")


def qemu_version() -> str:
    require_tools("qemu-aarch64")
    return subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _guest_env(home: Path, cpu: str, work: Path) -> dict:
    """A small, fixed environment: the counts must not depend on who runs the bench."""
    sites = [str(p) for p in (home / "site-executorch", home / "site") if p.is_dir()]
    return {
        "PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8",  # runtimes' dot-files stay in the work dir
        "QEMU_CPU": cpu,
        "QEMU_RAND_SEED": "0",  # deterministic AT_RANDOM and getrandom(): same code paths every run
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join(sites), "PYTHONNOUSERSITE": "1",
    }


def read_counts(path: Path) -> dict[int, dict]:
    """The plugin's marker file -> {tag: {"all": instructions, "thread": instructions}} per region."""
    opened: dict[int, tuple[int, int]] = {}
    regions: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        tag, phase, thread, every = (int(v) for v in line.split())
        if phase == 0:
            opened[tag] = (thread, every)
        elif tag in opened:
            regions[tag] = {"thread": thread - opened[tag][0], "all": every - opened[tag][1]}
    return regions


def _run_once(manifest: Path, view: Path, home: Path, cpu: str, inputs: np.ndarray, runs: int, warmup: int,
              threads: int, names: list[str], timeout_s: int) -> dict:
    """One qemu-aarch64 process of the runner over ``names``; raises EmulationError if it dies."""
    with tempfile.TemporaryDirectory(prefix="edgefree-qemu-") as tmp:
        work = Path(tmp)
        np.save(work / "inputs.npy", np.ascontiguousarray(inputs, dtype=np.float32))
        command = ["qemu-aarch64", "-L", str(view),
                   "-plugin", f"{plugin_path(home)},out={work / 'counts.txt'},marker={MARKER_SYSCALL}",
                   str(view / "usr/bin/python3.11"), str(RUNNER), "--manifest", str(Path(manifest).resolve()),
                   "--artifacts", ",".join(names), "--inputs", str(work / "inputs.npy"), "--runs", str(runs),
                   "--warmup", str(warmup), "--threads", str(threads), "--mark-syscall", str(MARKER_SYSCALL),
                   "--out", str(work / "result.json")]
        try:
            done = subprocess.run(command, env=_guest_env(home, cpu, work), capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EmulationError(f"the emulated runner did not finish in {timeout_s} s (cpu {cpu})") from exc
        if not (work / "result.json").exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            died = "Illegal instruction" in tail and f"its aarch64 build uses instructions the {cpu} lacks: " or ""
            raise EmulationError(f"the emulated runner died (exit {done.returncode}) on {cpu}: {died}{tail}")
        result = json.loads((work / "result.json").read_text())
        counts = read_counts(work / "counts.txt") if (work / "counts.txt").exists() else {}
        for entry in result["artifacts"].values():
            if entry["outputs_npy"]:
                entry["outputs"] = np.load(work / entry["outputs_npy"])
            region = counts.get(entry["mark_tag"])
            entry["instructions"] = region and {"per_inference": region["all"] / runs, "total": region["all"],
                                                "calling_thread_total": region["thread"], "runs": runs}
    return result


def run(manifest: Path, cpu: str, inputs: np.ndarray, runs: int, warmup: int, threads: int = 1,
        names: list[str] | None = None, home: Path | None = None, timeout_s: int = 3600) -> dict:
    """Run ``runner.py`` under qemu-aarch64 with CPU model ``cpu``; return its result with instruction counts.

    One QEMU process per runtime, so a runtime that crashes (an aarch64 wheel built for a newer
    core dies of SIGILL on an older one) costs only its own artifacts, whose ``error`` says so.
    Each artifact gains ``instructions``: guest instructions of all threads during its timed runs
    (``total``, ``per_inference``; ``calling_thread_total`` for the runner's own thread) and
    ``outputs`` (its logits); its ``latency_ms`` are *emulated* milliseconds.

    Usage, after `edgefree emulator setup`::

        result = run(Path("build/artifacts/manifest.json"), "cortex-a72", inputs, runs=3, warmup=1)
        result["artifacts"]["onnx-fp32"]["instructions"]["per_inference"]
    """
    home = Path(home or default_home())
    require_tools("qemu-aarch64")
    if not prepared(home):
        raise EmulationError(not_prepared(home))
    if cpu not in ARM_CPUS:
        raise EmulationError(f"no /proc/cpuinfo description for QEMU CPU model {cpu!r}; known: {sorted(ARM_CPUS)}")
    view = cpu_view(home, cpu)
    artifacts = {a["name"]: a for a in json.loads(Path(manifest).read_text())["artifacts"]}
    by_runtime: dict[str, list[str]] = {}
    for name in names or list(artifacts):
        by_runtime.setdefault(artifacts[name]["runtime"], []).append(name)
    result = {"artifacts": {}, "emulation": {"qemu": qemu_version(), "cpu": cpu, "marker_syscall": MARKER_SYSCALL,
                                             "environment": prepared(home)}}
    for runtime, group in by_runtime.items():
        try:
            result["artifacts"].update(_run_once(manifest, view, home, cpu, inputs, runs, warmup, threads, group,
                                                 timeout_s)["artifacts"])
        except EmulationError as exc:
            if "did not finish" in str(exc):
                raise
            result["artifacts"].update({name: {"error": str(exc), "outputs_npy": None, "latency_ms": None,
                                               "instructions": None, "runtime_version": None} for name in group})
    return result
