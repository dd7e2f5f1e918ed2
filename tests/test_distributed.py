"""Builds over 2 processes (gloo, the built-in default teacher, tiny budgets) against 1 process."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgefree import distributed
from edgefree.cli import cli
from edgefree.config import BuildConfig, ReconstructConfig, SynthesisConfig, recipe
from edgefree.errors import EdgefreeError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--images", "64", "--synth-batch", "16", "--iterations", "8", "--epochs", "3", "--threads", "1",
        "--formats", "onnx", "--precisions", "fp32", "--bench-runs", "1", "--quiet"]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "toolchain"), **extra}


@pytest.fixture(scope="module")
def builds(teacher, tmp_path_factory):
    """The same tiny build by torchrun on 2 processes and in this process: (one, two) folders."""
    base = tmp_path_factory.mktemp("distributed")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "edgefree",
                           "build", "--out", str(base / "two"), *TINY], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = CliRunner().invoke(cli, ["build", "--out", str(base / "one"), *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return base / "one", base / "two"


def test_two_processes_dream_the_same_set_bit_for_bit(builds):
    one, two = (torch.load(b / "synthetic.pt", weights_only=True) for b in builds)
    assert torch.equal(one["images"], two["images"]) and torch.equal(one["labels"], two["labels"])


def test_two_processes_build_a_valid_student_as_good(builds):
    one, two = (json.loads((b / "report.json").read_text()) for b in builds)
    assert two["distributed"]["world_size"] == 2 and two["distributed"]["backend"] == "gloo"
    assert [r["rank"] for r in two["distributed"]["ranks"]] == [0, 1]
    for rank in two["distributed"]["ranks"]:
        assert rank["threads"] == 1 and all(rank[f"{s}_images_per_s"] > 0 for s in ("synthesize", "reconstruct", "distill"))
    assert one["distributed"]["world_size"] == 1
    assert two["sparsity"] == pytest.approx(one["sparsity"])
    # the same refit, up to float64 sums taken in another order: at most a few images' rounding
    assert two["accuracy"]["reconstructed"] == pytest.approx(one["accuracy"]["reconstructed"], abs=1)
    # another split of each step's batch and other augmentations: the same accuracy within noise
    assert abs(two["accuracy"]["recovered"] - one["accuracy"]["recovered"]) < 5
    assert two["accuracy"]["recovered"] > two["accuracy"]["pruned"] + 20
    assert (builds[1] / "student.pt").is_file() and (builds[1] / "artifacts" / "manifest.json").is_file()


def _refit_on_two_ranks(teacher, pruned, dreams, config):
    from edgefree.recover import reconstruct

    with distributed.session(threads=1):
        return reconstruct(teacher, pruned, dreams, config, progress=False).model.state_dict()


def test_two_processes_refit_the_same_weights(teacher):
    from edgefree.config import MagnitudePruning
    from edgefree.recover import prune, reconstruct, synthesize

    pruned = prune(teacher, MagnitudePruning(sparsity=0.75))
    dreams = synthesize(teacher, SynthesisConfig(images=96, batch_size=32, iterations=10, jitter=1), progress=False)
    config = ReconstructConfig(images=96, batch_size=16)
    alone = reconstruct(teacher, pruned, dreams, config, progress=False).model.state_dict()
    shared = distributed.launch(_refit_on_two_ranks, teacher, pruned, dreams, config, workers=2, threads=1)
    assert alone.keys() == shared.keys()
    for name in alone:  # float64 sums in another order: equal to float32 rounding
        torch.testing.assert_close(shared[name], alone[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fault, expected", [("1:synthesize:raise", "rank 1 of 2 failed: RuntimeError: fault injected"),
                                             ("1:distill:hang", "rank 0 waited over 10 s for the other ranks in stage distill")])
def test_a_failing_or_hanging_rank_ends_the_job_without_a_report(teacher, tmp_path, monkeypatch, fault, expected):
    monkeypatch.setenv("EDGEFREE_FAULT", fault)
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "out"), "--workers", "2", "--dist-timeout", "10",
                                      *TINY])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "out" / "report.json").exists() and not (tmp_path / "out" / "student.pt").exists()


def test_a_bad_input_is_refused_before_the_processes_start(tmp_path):
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "out"), "--workers", "2", "--model",
                                      str(tmp_path / "none.pt"), "--arch", "resnet20-cifar", *TINY])
    assert result.exit_code == 2 and result.output.startswith("Error: checkpoint") and "rank" not in result.output
    assert result.output.count("\n") == 1 and time.perf_counter() - started < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runtime log, no staging folder


def test_memory_is_checked_for_every_process_before_they_start(tmp_path, monkeypatch):
    from edgefree import resources
    from edgefree.models import create_model, load_teacher

    model = tmp_path / "r20.pt"
    torch.save(create_model("resnet20-cifar").state_dict(), model)
    teacher = load_teacher("resnet20-cifar", model)
    need = resources.synthesis_bytes(teacher.module, teacher.spec, 16, 64)  # TINY's batch and images
    monkeypatch.setattr(resources, "available_memory", lambda: int(1.5 * need))  # one process fits, two do not
    result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "out"), "--workers", "2", "--model", str(model),
                                      "--arch", "resnet20-cifar", *TINY])
    assert result.exit_code == 2 and "free for 2 processes" in result.output and "rank" not in result.output
    assert result.output.count("\n") == 1


def test_a_batch_larger_than_the_set_is_checked_as_the_set_it_dreams(teacher, monkeypatch):
    from edgefree import resources
    from edgefree.errors import EdgefreeError

    need = resources.synthesis_bytes(teacher.module, teacher.spec, 64, 64)
    monkeypatch.setattr(resources, "available_memory", lambda: int(1.5 * need))
    resources.check_memory(teacher.module, teacher.spec, 10**12, 64)  # synthesis runs one batch of the 64
    with pytest.raises(EdgefreeError, match="batches of 640"):
        resources.check_memory(teacher.module, teacher.spec, 640, 6400)


def test_the_generator_recipe_trains_once_and_shares_its_set_over_processes(teacher, tmp_path):
    tiny = ["--recipe", "generator", "--images", "32", "--synth-batch", "16", "--iterations", "6", "--bn-weight", "10",
            "--epochs", "2", "--threads", "1", "--formats", "onnx", "--precisions", "fp32", "--bench-runs", "1",
            "--quiet"]
    for name, workers in (("one", "1"), ("two", "2")):
        result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / name), "--workers", workers, *tiny])
        assert result.exit_code == 0, result.output
    one, two = (torch.load(tmp_path / n / "synthetic.pt", weights_only=True) for n in ("one", "two"))
    assert torch.equal(one["images"], two["images"]) and torch.equal(one["labels"], two["labels"])
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["distributed"]["world_size"] == 2 and report["synthesis"]["method"] == "generator"
    # rank 0 published the build in a process of its own: the launcher's runtime log joins it
    assert "build.log" in json.loads((tmp_path / "two" / ".edgefree-complete").read_text())["entries"]
    assert (tmp_path / "two" / "build.log").is_file() and not list(tmp_path.glob(".two.*"))


def test_a_log_published_after_the_build_is_listed_and_gives_back_its_warnings(tmp_path):
    import os

    from edgefree.logs import publish_log, runtime_output_to
    from edgefree.outfolder import staged, written_entries

    with staged(tmp_path / "out") as folder:
        (folder / "report.json").write_text("{}")
    with runtime_output_to(tmp_path / ".out.build.log"):
        os.write(2, b"Warning: a rank's warning\nan ordinary log line\n")
        assert publish_log(tmp_path / "out") == ["Warning: a rank's warning"]
    assert sorted(written_entries(tmp_path / "out")) == ["build.log", "report.json"]
    assert not (tmp_path / ".out.build.log").exists() and "ordinary" in (tmp_path / "out" / "build.log").read_text()


def test_the_adversarial_generator_refuses_several_processes(tmp_path):
    generator = recipe("generator")
    config = BuildConfig(out=tmp_path, recipe="generator", synthesis=generator.synthesis,
                         distill=generator.distill.replace(adversarial_steps=5))
    from edgefree.pipeline import build_on_workers

    with pytest.raises(EdgefreeError, match="adversarial_steps .* does not split over processes"):
        build_on_workers(config, 2)


def test_workers_under_torchrun_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(EdgefreeError, match="already runs under torchrun"):
        distributed.launch(print, workers=2)


def test_one_process_shares_nothing():
    images = torch.arange(10.0)
    assert [b.tolist() for b in distributed.rank_batches(images, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    g = torch.Generator().manual_seed(0)
    batches = distributed.EpochBatches(10, 4, g)
    assert len(batches) == 3 and batches.per_rank == 10 and batches.mean(20.0) == 2.0
    assert sorted(torch.cat(batches.epoch(0)).tolist()) == list(range(10))
    assert distributed.rank_seed(7) == 7 and distributed.all_gather("x") == ["x"]


def test_a_log_is_not_moved_into_a_folder_another_build_holds(tmp_path):
    import os

    from edgefree.logs import publish_log, runtime_output_to
    from edgefree.outfolder import locked, staged, written_entries

    with staged(tmp_path / "out") as folder:
        (folder / "report.json").write_text("{}")
    with runtime_output_to(tmp_path / ".out.build.log"), locked(tmp_path / "out", "build"):  # a build started since
        os.write(2, b"Warning: a rank's warning\n")
        assert publish_log(tmp_path / "out") == ["Warning: a rank's warning"]
    assert written_entries(tmp_path / "out") == ["report.json"] and not (tmp_path / "out" / "build.log").exists()


@pytest.mark.parametrize("raised, expected", [
    (RuntimeError("[gloo] Timed out waiting 10000ms for recv operation"), "rank 1 waited over 10 s for the other ranks"),
    (torch.distributed.DistNetworkError("Connection reset by peer"), "rank 1 lost the other ranks in stage distill: "
                                                                      "one of them died or stopped (Connection reset"),
])
def test_a_stage_tells_a_timeout_from_a_lost_peer(monkeypatch, raised, expected):
    from edgefree.errors import EdgefreeError

    monkeypatch.setattr(distributed, "world", lambda: distributed.World(rank=1, size=2))
    with pytest.raises(EdgefreeError, match=re.escape(expected)), distributed.stage("distill", timeout_s=10):
        raise raised
    with pytest.raises(ValueError), distributed.stage("distill", timeout_s=10):  # any other error is its own
        raise ValueError("a bug")
