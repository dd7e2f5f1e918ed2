"""The bench stage: teacher vs student per runtime, the standalone runner, the report's honesty."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgefree.bench import report as bench_report
from edgefree.bench import runner
from edgefree.cli import cli
from edgefree.export.unpack import sha256_file

RUNNER = Path(runner.__file__)
UNPACK = RUNNER.parents[1] / "export" / "unpack.py"


@pytest.fixture()
def build_copy(default_build, tmp_path):
    return Path(shutil.copytree(default_build, tmp_path / "build"))


def _rows(result, model):
    return {(r["runtime"], r["precision"]): r for r in result["native"]["rows"] if r["model"] == model}


def test_build_benches_teacher_and_student_on_every_artifact(default_build):
    result = json.loads((default_build / "bench.json").read_text())
    manifest = json.loads((default_build / "artifacts" / "manifest.json").read_text())
    built = {(a["runtime"], a["precision"]) for a in manifest["artifacts"]}
    for model in ("teacher", "student"):
        rows = _rows(result, model)
        assert set(rows) == built | {("pytorch", "fp32")}
        for row in rows.values():
            assert row["error"] is None, row
            assert row["latency_ms"]["runs"] == 50 and 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"]
            assert row["eval_images"] == 360 and 0 <= row["accuracy"] <= 100
        # fp32 through any runtime classifies the evaluation set as PyTorch does
        for runtime in ("onnxruntime", "openvino", "executorch"):
            assert abs(rows[runtime, "fp32"]["accuracy"] - rows["pytorch", "fp32"]["accuracy"]) <= 100 / 360 + 1e-9
    report = json.loads((default_build / "report.json").read_text())
    assert report["bench"]["native"]["rows"] == result["native"]["rows"] and "bench" in report["seconds"]
    markdown = (default_build / "report.md").read_text()
    assert "## Latency and accuracy per runtime" in markdown and "![latency" in markdown
    assert (default_build / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_student_size_is_measured_from_the_artifacts(default_build):
    result = json.loads((default_build / "bench.json").read_text())
    manifest = json.loads((default_build / "artifacts" / "manifest.json").read_text())
    student = _rows(result, "student")
    for artifact in manifest["artifacts"]:
        row = student[artifact["runtime"], artifact["precision"]]
        assert (row["bytes"], row["packed_bytes"]) == (artifact["bytes"], artifact["packed_bytes"])
    teacher = _rows(result, "teacher")
    assert student["onnxruntime", "fp32"]["packed_bytes"] < teacher["onnxruntime", "fp32"]["packed_bytes"] / 2


def test_runner_is_standalone_and_unpacks_what_is_missing(default_build, tmp_path):
    device = tmp_path / "device"
    shutil.copytree(default_build / "artifacts", device)
    shutil.copy(RUNNER, device)
    shutil.copy(UNPACK, device)
    manifest = json.loads((device / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["name"] == "onnx-fp32")
    for file in onnx["files"]:
        (device / file["path"]).unlink()  # a device gets the packed forms only
    inputs = runner.default_inputs(manifest, 3)
    np.save(tmp_path / "x.npy", inputs)
    probe = ("import runpy, sys; sys.argv = sys.argv[1:]; "
             "code = 0\ntry: runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e: code = e.code\n"
             "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'edgefree')], 'not standalone'\n"
             "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe, str(device / "runner.py"), "--manifest",
                           str(device / "manifest.json"), "--artifacts", "onnx-fp32", "--inputs", str(tmp_path / "x.npy"),
                           "--runs", "3", "--warmup", "1", "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for file in onnx["files"]:
        assert sha256_file(device / file["path"]) == file["sha256"]
    entry = json.loads((tmp_path / "r.json").read_text())["artifacts"]["onnx-fp32"]
    assert entry["error"] is None and entry["latency_ms"]["runs"] == 3
    logits = np.load(tmp_path / entry["outputs_npy"])
    from edgefree.models import load_model

    student = load_model("digits-cnn", default_build / "student.pt")
    with torch.no_grad():
        expected = student(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert entry["top1"] == expected.argmax(1).tolist()


def test_runner_reports_a_damaged_artifact_and_runs_the_rest(default_build, tmp_path):
    folder = Path(shutil.copytree(default_build / "artifacts", tmp_path / "artifacts"))
    manifest = json.loads((folder / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["name"] == "onnx-fp32")
    (folder / onnx["files"][0]["path"]).unlink()
    packed = folder / onnx["files"][0]["packed_path"]
    packed.write_bytes(packed.read_bytes()[:-10])  # truncated in transfer
    result = runner.run(folder / "manifest.json", tmp_path / "r.json", ["onnx-fp32", "onnx-int8"], runs=2, warmup=0)
    assert result["artifacts"]["onnx-fp32"]["error"] and result["artifacts"]["onnx-fp32"]["latency_ms"] is None
    assert result["artifacts"]["onnx-int8"]["error"] is None
    assert not (folder / onnx["files"][0]["path"]).exists()
    with pytest.raises(ValueError, match="unknown artifact"):
        runner.run(folder / "manifest.json", tmp_path / "r.json", ["tflite-fp32"])


def test_bench_command_reruns_and_updates_the_report(build_copy):
    result = CliRunner().invoke(cli, ["bench", str(build_copy), "--runs", "5", "--warmup", "1", "--eval-limit", "40"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "student  onnxruntime  int8" in result.output
    bench = json.loads((build_copy / "bench.json").read_text())
    assert bench["native"]["runs"] == 5 and bench["eval"]["images"] == 40
    assert json.loads((build_copy / "report.json").read_text())["bench"]["native"]["runs"] == 5


def test_bench_command_errors_name_the_fix(build_copy, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEFREE_ARM64_HOME", raising=False)
    runner_ = CliRunner()
    missing = runner_.invoke(cli, ["bench", str(tmp_path)], catch_exceptions=False)
    assert missing.exit_code == 2 and "no finished build" in missing.output
    # the test session's cache has no prepared arm64 environment
    arm = runner_.invoke(cli, ["bench", str(build_copy), "--target", "raspberry-pi-4"], catch_exceptions=False)
    assert arm.exit_code == 2 and "edgefree emulator setup" in arm.output


def test_another_target_without_emulation_writes_beside_the_build(build_copy):
    result = CliRunner().invoke(cli, ["bench", str(build_copy), "--target", "medical-sensor-a53", "--no-emulate",
                                      "--runs", "3", "--warmup", "0", "--eval-limit", "10"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bench = json.loads((build_copy / "bench-medical-sensor-a53" / "bench.json").read_text())
    assert {r["runtime"] for r in bench["native"]["rows"]} == {"pytorch", "onnxruntime", "executorch"}
    assert bench["emulated"] is None and bench["target"]["emulation_cpu"] == "cortex-a53"


def _fake_result(student_p50: float) -> dict:
    def row(model, runtime, precision, p50, packed):
        return {"model": model, "runtime": runtime, "precision": precision, "artifact": f"{runtime}-{precision}",
                "bytes": 4000, "packed_bytes": packed, "latency_ms": {"p50": p50, "p90": p50, "mean": p50, "std": 0.0,
                                                                      "runs": 50},
                "accuracy": 90.0, "eval_images": 100, "runtime_version": "1", "error": None}

    def counted(model, n):
        return {"model": model, "runtime": "onnxruntime", "precision": "fp32", "artifact": "onnx-fp32",
                "instructions": {"per_inference": n, "total": 3 * n, "calling_thread_total": 3 * n, "runs": 3},
                "emulated_latency_ms": {"p50": 1500.0}, "parity_vs_x86": {"max_abs_diff": 1e-6, "top1_agreement": 1.0},
                "runtime_version": "1", "error": None}

    return {
        "target": {"name": "raspberry-pi-4"}, "model": {"arch": "tiny"}, "eval": {"name": "digits", "images": 100},
        "machine": {"cpu": "test cpu", "cpu_flags": ["avx2"], "versions": {"onnxruntime": "1"}},
        "native": {"threads": 1, "runs": 50, "warmup": 10, "rows": [
            row("teacher", "onnxruntime", "fp32", 1.0, 4000), row("teacher", "onnxruntime", "int8", 0.5, 1000),
            row("student", "onnxruntime", "fp32", student_p50, 1000), row("student", "onnxruntime", "int8", 0.5, 400)]},
        "emulated": {"cpu": "cortex-a72", "qemu": "qemu 7.2", "threads": 1, "runs": 3, "warmup": 1, "parity_inputs": 8,
                     "rows": [counted("teacher", 20e6), counted("student", 20e6)], "skipped": []},
    }


def test_the_reading_shows_what_was_measured_and_labels_emulation():
    same = bench_report.render(_fake_result(1.02), plot=None)
    assert "| student | onnxruntime | fp32 | 1.020 |" in same and "1.02x" in same
    assert "multiplies them like any other weight" in same and "measured 2% faster" not in same
    assert "INT8 on onnxruntime: the teacher takes 0.50x" in same and "4.0x smaller" in same
    assert "p50 s (EMULATED)" in same and "1.500" in same and "compare only within the `cortex-a72` model" in same
    faster = bench_report.render(_fake_result(0.7), plot=None)
    assert "onnxruntime fp32: the student measured 30% faster" in faster


def test_the_plot_is_written(tmp_path):
    bench_report.plot(_fake_result(1.0), tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
