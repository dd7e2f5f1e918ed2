"""Gradual channel pruning: steps that compose into one plan, the MACs target still reached, the refit between."""

import pytest
import torch

from edgefree.config import (BuildConfig, ChannelPruning, DistillConfig, LatencyTarget, MagnitudePruning,
                             ReconstructConfig, SynthesisConfig)
from edgefree.cost import count_macs
from edgefree.errors import EdgefreeError
from edgefree.models import create_model, load_teacher
from edgefree.recover import PrunePlan, SyntheticSet, prune
from edgefree.recover.gradual import prune_gradually
from edgefree.recover.saved import load_student, save_student


def _dreams(teacher, n=64):
    return SyntheticSet(teacher.spec.example_inputs(n)[0], torch.arange(n) % 10)


def test_kept_follows_operations_in_order():
    plan = PrunePlan(channels=[("conv", "prune_out_channels", [0, 2]), ("conv", "prune_out_channels", [1]),
                               ("conv", "prune_in_channels", [5])])
    assert plan.kept("conv", 6) == [1, 4, 5]  # then [1, 3, 4, 5] loses its second, 3
    assert plan.kept("conv", 6, "prune_in_channels") == [0, 1, 2, 3, 4]


def test_steps_reach_the_macs_target_and_replay_on_the_teachers_architecture(tmp_path):
    teacher = load_teacher("resnet20-cifar")
    dreams = _dreams(teacher)
    student = prune_gradually(teacher, [ChannelPruning(macs_target=0.5, steps=3)], dreams, ReconstructConfig(images=16))
    x = teacher.spec.example_inputs(2)[0]
    whole = count_macs(teacher.module, x)
    one_shot = prune(teacher, ChannelPruning(macs_target=0.5), dreams).model
    assert count_macs(student.model, x) == count_macs(one_shot, x)  # the one-shot student's widths, reached in steps
    assert count_macs(student.model, x) / whole == pytest.approx(0.5, abs=0.06)
    assert student.stats["macs_kept"] == pytest.approx(count_macs(student.model, x) / whole)
    kept = [s["macs_kept"] for s in student.stats["steps"]]
    assert len(kept) == 3 and kept[0] > kept[1] > kept[2]  # each step removes more
    assert len({name for name, _, _ in student.plan.channels}) < len(student.plan.channels)  # layers pruned twice
    # the plan (every step's operations in order) rebuilds the student's shapes from a fresh teacher
    rebuilt = student.plan.apply(create_model("resnet20-cifar"))
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in student.model.parameters()]
    # and the saved student loads back to the same outputs
    save_student(student, tmp_path)
    assert torch.equal(load_student(tmp_path, "resnet20-cifar", 10)(x), student.model.eval()(x))
    # the weights of a layer pruned twice are the refit's, not the teacher's rows
    name = "layer2.1.conv1"
    rows = student.plan.kept(name, 32)
    assert len(rows) == student.model.get_submodule(name).out_channels
    assert not torch.equal(student.model.get_submodule(name).weight,
                           teacher.module.get_submodule(name).weight[rows][:, :student.model.get_submodule(name).in_channels])


def test_one_step_is_prune_and_magnitude_follows_the_last_step():
    teacher = load_teacher("resnet20-cifar")
    dreams = _dreams(teacher, 32)
    one = prune_gradually(teacher, [ChannelPruning(ratio=0.5)], dreams, ReconstructConfig(images=32))
    assert one.plan.channels == prune(teacher, ChannelPruning(ratio=0.5)).plan.channels
    both = prune_gradually(teacher, [ChannelPruning(ratio=0.5, steps=2), MagnitudePruning(0.5)], dreams,
                           ReconstructConfig(images=32))
    assert both.masks and both.stats["macs_kept"] < 0.75
    assert sum(int((~m).sum()) for m in both.masks.values()) == pytest.approx(
        0.5 * sum(m.numel() for m in both.masks.values()), rel=0.01)


def test_gradual_build_on_the_digits_teacher_recovers(tmp_path, teacher):
    from edgefree.pipeline import build

    config = BuildConfig(prune=(ChannelPruning(ratio=0.5, steps=2),), out=tmp_path / "out", cache=tmp_path / "cache",
                         export=None, synthesis=SynthesisConfig(images=128, batch_size=64, iterations=20, jitter=1),
                         distill=DistillConfig(epochs=3, batch_size=64, lr=0.01))
    report = build(config, progress=False)
    assert report["pruning"]["steps"][0]["macs_kept"] > report["pruning"]["steps"][1]["macs_kept"]
    assert report["accuracy"]["recovered"] > report["accuracy"]["pruned"]
    assert report["config"]["prune"][0]["steps"] == 2


def test_steps_are_checked():
    with pytest.raises(EdgefreeError, match="steps"):
        ChannelPruning(steps=0)
    with pytest.raises(EdgefreeError, match="channel-steps"):
        BuildConfig(model="m.pt", arch="resnet20-cifar", prune=(ChannelPruning(steps=2),),
                    latency_target=LatencyTarget(ratio=0.5))
