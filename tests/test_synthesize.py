import pytest
import torch

from edgefree.config import SynthesisConfig
from edgefree.errors import NoBatchNormError
from edgefree.models import create_model
from edgefree.recover import SyntheticSet, synthesize
from edgefree.recover.synthesize import save_contact_sheet

TINY = SynthesisConfig(images=40, batch_size=20, iterations=30, jitter=1)


@pytest.fixture(scope="module")
def dreams(teacher):
    return synthesize(teacher, TINY, seed=3, progress=False)


def test_bn_loss_falls(dreams):
    curve = dreams.stats["bn_loss_curve"]
    assert len(curve) == TINY.iterations
    assert curve[-1] < 0.5 * curve[0]


def test_images_are_valid_pixels_with_balanced_labels(dreams, teacher):
    assert dreams.images.shape == (40, 1, 8, 8)
    pixels = teacher.input_spec.denormalize(dreams.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.bincount(dreams.labels, minlength=10).tolist() == [4] * 10


def test_seeded_and_saved(dreams, teacher, tmp_path):
    again = synthesize(teacher, TINY, seed=3, progress=False)
    assert torch.equal(again.images, dreams.images) and torch.equal(again.labels, dreams.labels)
    dreams.save(tmp_path / "s.pt")
    loaded = SyntheticSet.load(tmp_path / "s.pt")
    assert torch.equal(loaded.images, dreams.images)
    save_contact_sheet(dreams, teacher.input_spec, tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_teacher_left_as_it_was(teacher, dreams):
    assert all(p.requires_grad for p in teacher.parameters())
    assert not teacher.training


@pytest.mark.parametrize("extra", [dict(bf16=True, channels_last=True), dict(low_res_fraction=0.5, tv_l2_weight=1e-3, l2_weight=1e-4)])
def test_cheaper_variants_still_match_statistics(teacher, extra):
    d = synthesize(teacher, SynthesisConfig(images=20, batch_size=20, iterations=30, jitter=1, **extra), progress=False)
    assert d.stats["bn_loss_curve"][-1] < 0.5 * d.stats["bn_loss_curve"][0]


def test_model_without_batchnorm_is_refused():
    with pytest.raises(NoBatchNormError, match="no BatchNorm layers"):
        synthesize(create_model("digits-mlp-nobn"), TINY, progress=False)
