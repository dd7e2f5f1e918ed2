"""Builds with ``device="cuda"``: every stage on the GPU, the student back on the CPU. They skip
without a CUDA GPU (CI has none) unless REQUIRE_MARKERS names cuda."""

import pytest
import torch

from edgefree.config import BuildConfig, ChannelPruning, DistillConfig, SynthesisConfig

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")]


def _build(tmp_path, **changes) -> dict:
    from edgefree.pipeline import build

    small = {"synthesis": SynthesisConfig(images=256, batch_size=128, iterations=60, lr=0.1, jitter=1),
             "distill": DistillConfig(epochs=6, batch_size=64, lr=0.01)}
    config = BuildConfig(out=tmp_path / "out", cache=tmp_path / "cache", export=None, device="cuda",
                         **{**small, **changes})
    return build(config, progress=False)


def test_a_magnitude_build_runs_on_the_gpu(tmp_path):
    report = _build(tmp_path)
    assert report["config"]["device"] == "cuda"
    a = report["accuracy"]
    assert a["recovered"] > a["pruned"] and a["recovered"] > 80.0
    assert report["sparsity"] == pytest.approx(0.75, abs=0.02)
    assert report["estimate"]["recovered"]["drop"] >= 0
    weights = torch.load(tmp_path / "out" / "student.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in weights.values())  # saved for any machine


def test_a_channel_build_runs_on_the_gpu(tmp_path):
    report = _build(tmp_path, prune=(ChannelPruning(macs_target=0.6),))
    assert report["cost"]["macs_ratio"] <= 0.65
    assert report["accuracy"]["recovered"] > report["accuracy"]["pruned"]


def test_a_generator_build_with_adversarial_refresh_runs_on_the_gpu(tmp_path):
    report = _build(tmp_path, synthesis=SynthesisConfig(method="generator", images=256, batch_size=64, iterations=150,
                                                        lr=0.01, jitter=1),
                    distill=DistillConfig(epochs=3, batch_size=64, lr=0.01, adversarial_steps=2))
    assert len(report["distill"]["adversarial"]) == 2
    assert report["accuracy"]["recovered"] > report["accuracy"]["pruned"]
