"""docker/: the arm64 runtime image built with podman from a local root, running a bundle under QEMU."""

import importlib.util
import json
import re
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"


def _requirements(name: str) -> list[str]:
    lines = (DOCKER / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_image_pins_are_the_toolchains():
    """The arm64 image runs what the toolchain exported with (pyproject) and what the QEMU bench measured."""
    from edgefree.bench import emulator_setup

    pinned = dict(re.match(r"([\w.-]+)==(.+)", dep).groups()
                  for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                  if "==" in dep)
    assert _requirements("arm64-requirements.txt") == [f"{n}=={pinned[n]}" for n in ("numpy", "onnxruntime",
                                                                                     "openvino")]
    assert _requirements("arm64-executorch.txt") == [*emulator_setup.EXECUTORCH_STACK,
                                                     *emulator_setup.EXECUTORCH_PURE_DEPS]


def _podman_ready() -> str | None:
    """Why the podman test cannot run here, or None."""
    if shutil.which("podman") is None:
        return "needs podman (apt-get install -y podman runc)"
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not binfmt.is_file() or "enabled" not in binfmt.read_text():
        return ("needs the qemu-aarch64 binfmt handler: apt-get install -y qemu-user-static binfmt-support; "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64")
    if not re.search(r"^flags:.*F", binfmt.read_text(), re.M):
        return "the qemu-aarch64 binfmt handler lacks the F flag (install qemu-user-static, not qemu-user-binfmt)"
    for tool in ("qemu-aarch64", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"needs {tool} for the arm64 root (apt-get install -y qemu-user mmdebstrap)"
    return None


@pytest.mark.podman
@pytest.mark.slow
def test_arm64_image_runs_a_packed_bundle(default_build, tmp_path):
    reason = _podman_ready()
    if reason:
        pytest.skip(reason)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_build / "artifacts", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["runtime"] == "onnxruntime" and a["precision"] == "fp32")
    for f in onnx["files"]:  # ship packed only: the image must unpack and check them itself
        (bundle / f["path"]).unlink()
    command = ["bash", str(DOCKER / "build-arm64-podman.sh"), str(bundle), "--artifacts", onnx["name"], "--runs", "3"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads((bundle / "results" / "arm64-podman.json").read_text())
    assert result["machine"]["isa"] == "aarch64"
    arm = result["artifacts"][onnx["name"]]
    assert arm["error"] is None, arm["error"]
    arm_logits = np.load(bundle / "results" / arm["outputs_npy"])

    spec = importlib.util.spec_from_file_location("runner", REPO / "toolchain/edgefree/bench/runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    here = runner.run(default_build / "artifacts" / "manifest.json", tmp_path / "x86" / "result.json",
                      [onnx["name"]], runs=1, warmup=0)["artifacts"][onnx["name"]]
    x86_logits = np.load(tmp_path / "x86" / here["outputs_npy"])
    assert arm_logits.shape == x86_logits.shape == (1, len(manifest["model"]["input"]["class_names"]))
    assert np.abs(arm_logits - x86_logits).max() < 1e-4
