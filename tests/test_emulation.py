"""arm64 under QEMU: the environment's pieces, and (marked qemu) real emulated runs with instruction counts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgefree.bench import emulation, runner
from edgefree.bench.emulator_setup import ARM_CPUS, _cpuinfo, default_home, prepared, require_tools, setup
from edgefree.cli import cli
from edgefree.errors import EmulationError, MissingRuntimeError
from edgefree.targets import list_targets

# Read before the test session points EDGEFREE_CACHE at a temporary folder: the prepared
# environment (`edgefree emulator setup`, run by .ci/run) lives in the user's cache.
ARM64_HOME = default_home()


def _needs_qemu():
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 is not installed: apt-get install qemu-user mmdebstrap gcc libc6-dev")
    record = prepared(ARM64_HOME)
    if record is None or "onnxruntime" not in record["runtimes"]:
        pytest.skip(f"no prepared arm64 environment with onnxruntime in {ARM64_HOME}: "
                    "run `edgefree emulator setup --runtimes onnxruntime`")


def test_every_aarch64_target_has_a_fake_cpuinfo():
    for target in list_targets().values():
        if target.emulated:
            assert target.emulation_cpu in ARM_CPUS


def test_fake_cpuinfo_names_the_core():
    assert f"0x{ARM_CPUS['neoverse-n1'].midr:016x}" == "0x00000000413fd0c1"  # the value measured in the notes
    text = _cpuinfo(ARM_CPUS["cortex-a72"])
    assert text.count("processor\t:") == 2 and "CPU part\t: 0xd08" in text and "asimddp" not in text
    assert "asimddp" in _cpuinfo(ARM_CPUS["cortex-a76"])


def test_plugin_counts_become_regions(tmp_path):
    counts = tmp_path / "counts.txt"
    counts.write_text("# icount v1\n1 0 100 150\n1 1 1100 1150\n2 0 1200 1250\n2 1 4200 4300\n3 0 5000 5000\n")
    assert emulation.read_counts(counts) == {1: {"thread": 1000, "all": 1000}, 2: {"thread": 3000, "all": 3050}}


def test_missing_tools_say_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingRuntimeError, match="apt-get install -y --no-install-recommends qemu-user mmdebstrap"):
        require_tools("qemu-aarch64", "mmdebstrap")
    with pytest.raises(EmulationError, match="unknown runtime"):
        setup(["tflite"])


@pytest.mark.qemu
def test_running_unprepared_says_how_to_prepare(tmp_path):
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 is not installed: apt-get install qemu-user")
    with pytest.raises(EmulationError, match="edgefree emulator setup"):
        emulation.run(tmp_path / "manifest.json", "cortex-a72", np.zeros((1, 1, 8, 8), np.float32), 1, 0, home=tmp_path)


@pytest.mark.qemu
def test_emulated_instruction_counts_repeat_and_logits_match_x86(default_build, tmp_path):
    _needs_qemu()
    manifest = default_build / "artifacts" / "manifest.json"
    inputs = runner.default_inputs(json.loads(manifest.read_text()), 4)
    first, second = (emulation.run(manifest, "cortex-a72", inputs, runs=3, warmup=1, names=["onnx-fp32"],
                                   home=ARM64_HOME)["artifacts"]["onnx-fp32"] for _ in range(2))
    a, b = first["instructions"]["total"], second["instructions"]["total"]
    assert a > 100_000 and abs(a - b) <= 1e-3 * a, (a, b)  # repeat within 0.1%
    native = runner.run(manifest, tmp_path / "native.json", ["onnx-fp32"], inputs, runs=1, warmup=0)
    x86 = np.load(tmp_path / native["artifacts"]["onnx-fp32"]["outputs_npy"])
    np.testing.assert_allclose(first["outputs"], x86, atol=1e-4)
    assert first["latency_ms"]["p50"] > 0


@pytest.mark.qemu
def test_bench_raspberry_pi_4_reports_parity_and_counts(default_build, tmp_path, monkeypatch):
    _needs_qemu()
    monkeypatch.setenv("EDGEFREE_ARM64_HOME", str(ARM64_HOME))
    build = Path(shutil.copytree(default_build, tmp_path / "build"))
    result = CliRunner().invoke(cli, ["bench", str(build), "--target", "raspberry-pi-4", "--runs", "5",
                                      "--emulated-runs", "2", "--emulated-inputs", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bench = json.loads((build / "bench-raspberry-pi-4" / "bench.json").read_text())
    emulated = bench["emulated"]
    assert emulated["cpu"] == "cortex-a72" and "qemu-aarch64 version" in emulated["qemu"]
    counted = {(r["model"], r["runtime"], r["precision"]): r for r in emulated["rows"]}
    for model in ("teacher", "student"):
        fp32 = counted[model, "onnxruntime", "fp32"]
        assert fp32["error"] is None and fp32["instructions"]["per_inference"] > 100_000
        assert fp32["parity_vs_x86"]["max_abs_diff"] < 1e-4 and fp32["parity_vs_x86"]["top1_agreement"] == 1.0
    # unstructured zeros are computed all the same: the dense student executes what the teacher does
    ratio = counted["student", "onnxruntime", "fp32"]["instructions"]["per_inference"] / \
        counted["teacher", "onnxruntime", "fp32"]["instructions"]["per_inference"]
    assert abs(ratio - 1) < 0.01
    markdown = (build / "bench-raspberry-pi-4" / "bench.md").read_text()
    assert "(EMULATED)" in markdown and "compare only within the `cortex-a72` model" in markdown
