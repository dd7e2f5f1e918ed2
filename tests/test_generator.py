import pytest
import torch

from edgefree.config import DistillConfig, MagnitudePruning, SynthesisConfig
from edgefree.errors import EdgefreeError, NoBatchNormError
from edgefree.evaluate import accuracy
from edgefree.models import load_teacher
from edgefree.recover import SyntheticSet, distill, prune, synthesize
from edgefree.recover.generator import DreamGenerator

GEN = SynthesisConfig(method="generator", images=256, batch_size=64, iterations=150, lr=0.01, jitter=1)


@pytest.fixture(scope="module")
def generated(teacher):
    return synthesize(teacher, GEN, seed=1, progress=False)


def test_generator_learns_the_statistics(generated, teacher):
    assert generated.stats["steps"] == GEN.iterations
    assert generated.stats["bn_loss_last"] < 0.3 * generated.stats["bn_loss_first"]
    assert generated.images.shape == (256, 1, 8, 8)
    pixels = teacher.spec.denormalize(generated.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.bincount(generated.labels, minlength=10).tolist() == [26] * 6 + [25] * 4
    assert all(p.requires_grad for p in teacher.module.parameters()) and not teacher.module.training


def test_generator_draws_new_images_and_survives_saving(generated, teacher, tmp_path):
    g = torch.Generator().manual_seed(0)
    fresh = generated.generator.sample(teacher.spec, generated.labels, g)
    assert fresh.shape == generated.images.shape and not torch.equal(fresh, generated.images)
    generated.save(tmp_path / "set.pt")
    loaded = SyntheticSet.load(tmp_path / "set.pt")
    assert torch.equal(loaded.images, generated.images)
    again = loaded.generator.sample(teacher.spec, generated.labels, torch.Generator().manual_seed(0))
    assert torch.equal(again, fresh)  # the same generator, bit for bit


def test_seeded(generated, teacher):
    small = GEN.replace(iterations=5, images=20)
    a, b = (synthesize(teacher, small, seed=4, progress=False) for _ in range(2))
    assert torch.equal(a.images, b.images)


def test_distillation_takes_new_images_every_epoch(generated, teacher, digits, monkeypatch):
    calls = []
    original = DreamGenerator.sample
    monkeypatch.setattr(DreamGenerator, "sample", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    pruned = prune(teacher, MagnitudePruning(0.75))
    student = distill(teacher, pruned, generated, DistillConfig(epochs=8, batch_size=64, lr=0.01), progress=False).model
    assert len(calls) == 7  # every epoch after the first
    assert accuracy(student, digits, teacher.spec) > accuracy(pruned.model, digits, teacher.spec) + 10


def test_generator_needs_batchnorm_and_a_size_it_can_reach():
    with pytest.raises(NoBatchNormError, match="no BatchNorm layers"):
        synthesize(load_teacher("digits-mlp-nobn"), GEN, progress=False)
    with pytest.raises(EdgefreeError, match="multiple of 4"):
        DreamGenerator((3, 30, 30), 10)
    with pytest.raises(EdgefreeError, match="method"):
        SynthesisConfig(method="gan")
