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
    report = json.loads((default_build / "report.json").read_text())
    for model, stage in (("teacher", "teacher"), ("student", "recovered")):
        rows = _rows(result, model)
        assert set(rows) == built | {("pytorch", "fp32")}
        for row in rows.values():
            assert row["error"] is None, row
            latency = row["latency_ms"]
            assert 20 <= latency["runs"] <= 2000 and latency["stopped"] in ("stable", "max_runs", "max_seconds")
            assert latency["p50_ci95"][0] <= latency["p50"] <= latency["p50_ci95"][1] <= latency["p90"] * 1.5
            assert row["eval_images"] == 360 and 0 <= row["accuracy"] <= 100
        # top-1 measured once: PyTorch's by the evaluate stage, each artifact's by the export
        assert rows["pytorch", "fp32"]["accuracy_source"] == "evaluate"
        assert rows["pytorch", "fp32"]["accuracy"] == report["accuracy"][stage]
        assert {r["accuracy_source"] for key, r in rows.items() if key[0] != "pytorch"} == {"export"}
        # fp32 through any runtime classifies the evaluation set as PyTorch does
        for runtime in ("onnxruntime", "openvino", "executorch"):
            assert abs(rows[runtime, "fp32"]["accuracy"] - rows["pytorch", "fp32"]["accuracy"]) <= 100 / 360 + 1e-9
    assert report["bench"]["native"]["rows"] == result["native"]["rows"] and "bench" in report["seconds"]
    markdown = (default_build / "report.md").read_text()
    assert "## Latency and accuracy per runtime" in markdown and "![latency" in markdown
    assert "| export | onnx-int8 |" in markdown and "| bench | student onnxruntime int8 |" in markdown
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
    from edgefree.models import load_teacher

    student = load_teacher("digits-cnn", default_build / "student.pt").module
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


def test_a_bench_whose_every_row_failed_says_so(build_copy, monkeypatch, capfd):
    import edgefree.bench

    def failing(candidates, *args):
        for c in candidates:
            c.error = "RuntimeError: no such device"

    monkeypatch.setattr(edgefree.bench, "measure", failing)
    result = CliRunner().invoke(cli, ["bench", str(build_copy), "--runs", "2", "--quiet"], catch_exceptions=False)
    warnings = [line for line in (result.output + capfd.readouterr().err).splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "no runtime could be measured" in warnings[0] and "no such device" in warnings[0]


def test_bench_command_errors_name_the_fix(build_copy, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEFREE_ARM64_HOME", raising=False)
    runner_ = CliRunner()
    missing = runner_.invoke(cli, ["bench", str(tmp_path)], catch_exceptions=False)
    assert missing.exit_code == 2 and "no finished build" in missing.output
    # the test session's cache has no prepared arm64 environment: the emulated runs alone cannot be had
    arm = runner_.invoke(cli, ["bench", str(build_copy), "--target", "raspberry-pi-4", "--no-native"],
                         catch_exceptions=False)
    assert arm.exit_code == 2 and "edgefree emulator setup" in arm.output and "--no-native" in arm.output
    # with this machine's runs, as a build does: they are measured, and the emulation named as not run
    both = runner_.invoke(cli, ["bench", str(build_copy), "--target", "raspberry-pi-4", "--runs", "3", "--warmup", "0",
                                "--eval-limit", "10", "--quiet"], catch_exceptions=False)
    assert both.exit_code == 0, both.output
    assert "arm64 emulation not run" in both.output and "edgefree emulator setup" in both.output


def test_another_target_without_emulation_writes_beside_the_build(build_copy):
    result = CliRunner().invoke(cli, ["bench", str(build_copy), "--target", "medical-sensor-a53", "--no-emulate",
                                      "--runs", "3", "--warmup", "0", "--eval-limit", "10"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bench = json.loads((build_copy / "bench-medical-sensor-a53" / "bench.json").read_text())
    assert {r["runtime"] for r in bench["native"]["rows"]} == {"pytorch", "onnxruntime", "executorch"}
    assert bench["emulated"] is None and bench["target"]["emulation_cpu"] == "cortex-a53"
    from edgefree.outfolder import written_entries

    assert "bench-medical-sensor-a53" in written_entries(build_copy)  # the next build into it replaces it


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


# --- measured once: the teacher's cache, the adaptive latency budget ------------------------------------


def test_the_teachers_export_and_rows_are_cached(teacher, digits, tmp_path):
    """A second export_teacher of the same teacher is a hit that costs no export; bench reuses its rows."""
    from edgefree.bench import bench
    from edgefree.bench.teacher import cached_rows, export_teacher
    from edgefree.config import BenchConfig, ExportConfig
    from edgefree.evaluate import accuracy
    from edgefree.export import export_student
    from edgefree.recover import SyntheticSet

    def gaussian_noise_set(spec, n, classes, seed=0):
        images = spec.example_inputs(n, seed=seed)[0]
        return SyntheticSet(images, torch.arange(n) % classes)
    from edgefree.targets import load_target

    config = ExportConfig(formats=("onnx",), precisions=("fp32",), check_images=64)
    first = export_teacher(teacher, config, gaussian_noise_set(teacher.spec, 32, 10), digits, progress=False)
    other_dreams = gaussian_noise_set(teacher.spec, 32, 10, seed=1)  # another recipe's dreams
    second = export_teacher(teacher, config, other_dreams, digits)
    assert not first.cached and second.cached and second.manifest == first.manifest
    assert second.seconds < 2.0 and second.seconds < first.seconds / 3, (first, second)
    assert export_teacher(teacher, config.replace(check_images=32), other_dreams, digits).key != first.key

    student = export_student(teacher.module, teacher.spec, config, tmp_path / "student", other_dreams, digits)
    # the "student" is the teacher itself: its ONNX file scores what PyTorch does on the digits
    assert student["artifacts"][0]["accuracy"] == pytest.approx(accuracy(teacher.module, digits, teacher.spec), abs=0.01)
    run = lambda out, reuse=True: bench({"teacher": teacher.module, "student": teacher.module},  # noqa: E731
                                        {"teacher": second.manifest, "student": tmp_path / "student" / "manifest.json"},
                                        teacher.spec, load_target("x86-64"), tmp_path / out,
                                        BenchConfig(runs=5, warmup=1), digits, teacher=second, reuse_teacher_rows=reuse)
    measured, reused = run("first"), run("second")
    side_by_side = run("third", reuse=False)  # a ratio that decides something: the teacher timed in turns again
    assert side_by_side["native"]["teacher_rows"]["cached"] is False
    assert any(key.startswith("teacher") for key in side_by_side["native"]["seconds"])
    assert measured["native"]["teacher_rows"]["cached"] is False and reused["native"]["teacher_rows"]["cached"]
    teacher_rows = lambda result: [r for r in result["native"]["rows"] if r["model"] == "teacher"]  # noqa: E731
    assert [{**r, "cached": True} for r in teacher_rows(measured)] == teacher_rows(reused)
    assert not any(key.startswith("teacher") for key in reused["native"]["seconds"])
    assert "taken from the cache" in (tmp_path / "second" / "bench.md").read_text()
    # rows timed to their cap (here 1 microsecond) are not cached: the next bench times the teacher again
    capped = lambda out: bench({"teacher": teacher.module, "student": teacher.module},  # noqa: E731
                               {"teacher": second.manifest, "student": tmp_path / "student" / "manifest.json"},
                               teacher.spec, load_target("x86-64"), tmp_path / out,
                               BenchConfig(min_runs=1000, max_seconds=1e-6, warmup=1), digits, teacher=second)
    first_capped = capped("c1")
    assert cached_rows(second.manifest, first_capped["native"]["teacher_rows"]["key"]) is None  # not stored
    assert not first_capped["native"]["teacher_rows"]["cached"] and not capped("c2")["native"]["teacher_rows"]["cached"]
    assert "Timing reached its cap before the p50's interval settled on teacher pytorch fp32" in \
        (tmp_path / "c2" / "bench.md").read_text()


def test_batched_top1_equals_batch1_top1_on_the_same_images(manifest_of_build, default_build, teacher, digits):
    """Each artifact's manifest top-1 (batched) against the same artifact run one image at a time.

    Any image whose class differs must be a near tie, within the batched-vs-batch-1 difference
    the manifest reports: that is the only way parity allows the two figures to differ.
    """
    from edgefree.export import BACKENDS
    from edgefree.export.parity import run_batch1, run_batched

    inputs = digits.normalized(teacher.spec).numpy()
    labels = digits.labels.numpy()
    for artifact in manifest_of_build["artifacts"]:
        entry = default_build / "artifacts" / artifact["entry"]
        backend = BACKENDS[artifact["format"]]
        batch1 = run_batch1(backend.load(entry), inputs)
        predict, batch = backend.load_batched(entry, 64, 1)
        batched = run_batched(predict, inputs, batch)
        assert batch == (1 if artifact["accuracy_batch"] == 1 else 64)  # ExecuTorch's program is batch 1
        assert artifact["accuracy_images"] == len(inputs)
        assert 100.0 * float((batched.argmax(1) == labels).mean()) == artifact["accuracy"]
        one_at_a_time = 100.0 * float((batch1.argmax(1) == labels).mean())
        differ = np.flatnonzero(batched.argmax(1) != batch1.argmax(1))
        allowed = 2 * max(artifact["batched_vs_batch1"]["max_abs_diff"], 1e-5)
        for i in differ:
            top2 = np.sort(batch1[i])[-2:]
            assert top2[1] - top2[0] <= allowed, (artifact["name"], i)
        assert abs(one_at_a_time - artifact["accuracy"]) <= 100.0 * len(differ) / len(inputs)


@pytest.fixture(scope="module")
def manifest_of_build(default_build):
    return json.loads((default_build / "artifacts" / "manifest.json").read_text())


def test_even_the_fastest_model_is_timed_in_rounds():
    from edgefree.bench.latency import MAX_ROUNDS, _round_size
    from edgefree.config import BenchConfig

    config = BenchConfig()
    assert _round_size(config, 0.001) == config.max_runs // MAX_ROUNDS  # a 1 µs model: rounds, not one batch
    assert _round_size(config, 50.0) == 5  # a slow one: the fewest runs a round takes


def test_the_latency_budget_stops_when_the_p50_is_stable():
    from edgefree.bench.latency import p50_interval, stop_reason
    from edgefree.config import BenchConfig

    rng = np.random.default_rng(0)
    config = BenchConfig(min_runs=20, max_runs=500, p50_tolerance=0.02, max_seconds=10.0)
    steady = rng.normal(1.0, 0.01, 20)  # 1 ms +- 1%: stable at the floor
    assert stop_reason(steady[:19], config) is None and stop_reason(steady, config) == "stable"
    noisy = rng.lognormal(0.0, 0.5, 100)  # +-50%: 100 runs do not pin the p50 within 2%
    assert stop_reason(noisy, config) is None
    assert stop_reason(rng.lognormal(0.0, 0.5, 500), config) == "max_runs"
    assert stop_reason(np.full(30, 400.0) * rng.lognormal(0, 0.5, 30), config) == "max_seconds"  # 12 s timed
    assert stop_reason(noisy[:5], config.replace(runs=5)) == "runs"
    assert stop_reason(rng.normal(1.0, 0.01, 500), config) == "stable"  # settled as it reached the cap: settled
    # the interval holds the true median (1.0 for lognormal(0, s)) about 95% of the time
    covered = [low <= 1.0 <= high for low, high in (p50_interval(rng.lognormal(0, 0.5, 101)) for _ in range(400))]
    assert 0.9 <= np.mean(covered) <= 0.99


def test_damaged_cached_rows_are_a_miss_and_are_written_anew(tmp_path):
    from edgefree.bench.teacher import ROWS, cached_rows, store_rows

    manifest = tmp_path / "manifest.json"
    (tmp_path / ROWS).write_text('{"key": {"rows"')  # cut short
    assert cached_rows(manifest, "key") is None
    store_rows(manifest, "key", {"rows": [1]})
    assert cached_rows(manifest, "key") == {"rows": [1]} and not list(tmp_path.glob("*.tmp"))


def test_a_teacher_export_another_build_finished_first_is_kept(tmp_path, monkeypatch, teacher):
    """Two builds exporting one teacher: each writes a folder of its own; the first complete one stays."""
    import edgefree.export
    from edgefree.bench.teacher import export_teacher, teacher_key
    from edgefree.config import ExportConfig
    from edgefree.recover import SyntheticSet

    monkeypatch.setenv("EDGEFREE_CACHE", str(tmp_path))
    config = ExportConfig(formats=("onnx",), precisions=("fp32",))
    final = tmp_path / "teacher-artifacts" / teacher_key(teacher, config, None)

    def export_student(module, spec, config, out, *args, **kwargs):
        Path(out).mkdir(parents=True)
        (Path(out) / "manifest.json").write_text("ours")
        final.mkdir(parents=True)  # meanwhile another build's export of the same key completed
        (final / "manifest.json").write_text(json.dumps({"artifacts": [], "by": "theirs"}))  # whole: no files

    monkeypatch.setattr(edgefree.export, "export_student", export_student)
    found = export_teacher(teacher, config, SyntheticSet(torch.zeros(2, 1, 8, 8), torch.zeros(2).long()))
    assert json.loads(found.manifest.read_text())["by"] == "theirs"
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_a_damaged_cached_teacher_export_is_exported_again(teacher, tmp_path, capsys):
    from edgefree.bench.teacher import export_teacher
    from edgefree.config import ExportConfig
    from edgefree.recover import SyntheticSet

    dreams = SyntheticSet(teacher.spec.example_inputs(16)[0], torch.arange(16) % 10)
    config = ExportConfig(formats=("onnx",), precisions=("fp32",), check_images=16, calibration_images=16)
    first = export_teacher(teacher, config, dreams)
    data = next(first.manifest.parent.glob("*.onnx.data"))
    data.write_bytes(data.read_bytes()[:100])  # a disk that lost the end of a file
    again = export_teacher(teacher, config, dreams)
    assert not again.cached and "the teacher's cached export" in capsys.readouterr().err
    assert export_teacher(teacher, config, dreams).cached  # whole again
