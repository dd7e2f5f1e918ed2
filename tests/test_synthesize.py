import pytest
import torch

from edgefree.config import SynthesisConfig
from edgefree.errors import NoBatchNormError
from edgefree.recover import SyntheticSet, synthesize
from edgefree.recover.synthesize import save_contact_sheet

TINY = SynthesisConfig(images=40, batch_size=20, iterations=30, jitter=1)


@pytest.fixture(scope="module")
def dreams(teacher):
    return synthesize(teacher, TINY, seed=3, progress=False)


def test_bn_loss_falls(dreams):
    curves = dreams.stats["bn_loss_curves"]
    assert [len(c) for c in curves] == [TINY.iterations] * 2
    assert all(c[-1] < 0.5 * c[0] for c in curves)
    assert dreams.stats["bn_loss_last"] < 0.5 * dreams.stats["bn_loss_first"]


def test_warm_start_continues_from_the_previous_batch(teacher, dreams):
    warm = synthesize(teacher, TINY.replace(warm_start=1.0, first_iterations=40, iterations=5, shards=1), seed=3,
                      progress=False)
    first, second = warm.stats["bn_loss_curves"]
    assert len(first) == 40 and len(second) == 5
    # the second batch starts from matched images, not noise: far below where the first began
    assert second[0] < 0.5 * first[0]
    assert warm.images.shape == dreams.images.shape


def test_images_are_valid_pixels_with_balanced_labels(dreams, teacher):
    assert dreams.images.shape == (40, 1, 8, 8)
    pixels = teacher.spec.denormalize(dreams.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.bincount(dreams.labels, minlength=10).tolist() == [4] * 10


def test_seeded_and_saved(dreams, teacher, tmp_path):
    again = synthesize(teacher, TINY, seed=3, progress=False)
    assert torch.equal(again.images, dreams.images) and torch.equal(again.labels, dreams.labels)
    dreams.save(tmp_path / "s.pt")
    loaded = SyntheticSet.load(tmp_path / "s.pt")
    assert torch.equal(loaded.images, dreams.images)
    save_contact_sheet(dreams, teacher.spec, tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_teacher_left_as_it_was(teacher, dreams):
    assert all(p.requires_grad for p in teacher.module.parameters())
    assert not teacher.module.training


# half the steps at half resolution: the BN loss jumps back up at the switch, so it falls less
@pytest.mark.parametrize("extra, fraction", [(dict(bf16=True, channels_last=True), 0.5),
                                             (dict(low_res_fraction=0.5, tv_l2_weight=1e-3, l2_weight=1e-4), 0.6)])
def test_cheaper_variants_still_match_statistics(teacher, extra, fraction):
    d = synthesize(teacher, SynthesisConfig(images=20, batch_size=20, iterations=30, jitter=1, **extra), progress=False)
    assert d.stats["bn_loss_last"] < fraction * d.stats["bn_loss_first"]


def test_model_without_batchnorm_is_refused(no_batchnorm):
    with pytest.raises(NoBatchNormError, match="no BatchNorm layers"):
        synthesize(no_batchnorm, TINY, progress=False)


def test_bf16_auto_follows_the_hardware(monkeypatch, teacher):
    from edgefree import machine

    monkeypatch.setattr(machine, "_cpu_flags", lambda: ["avx2", "avx512f"])
    assert machine.resolve_bf16("auto") is False and machine.resolve_bf16(True) is True
    d = synthesize(teacher, SynthesisConfig(images=10, batch_size=10, iterations=2, bf16="auto"), progress=False)
    assert d.stats["bf16"] is False
    monkeypatch.setattr(machine, "_cpu_flags", lambda: ["avx512_bf16"])
    assert machine.resolve_bf16("auto") is True
    d = synthesize(teacher, SynthesisConfig(images=10, batch_size=10, iterations=2, bf16="auto"), progress=False)
    assert d.stats["bf16"] is True and d.stats["steps"] == 2


def test_a_teacher_gets_its_own_layout_back_after_inversion(teacher):
    from edgefree.recover.inversion import layout, teacher_for_inversion

    for held in (torch.contiguous_format, torch.channels_last):  # distillation holds it channels-last
        teacher.module.to(memory_format=held)
        with teacher_for_inversion(teacher, TINY.replace(channels_last=held != torch.channels_last), "cpu") as opened:
            assert layout(opened[0]) != held
        assert layout(teacher.module) == held
    teacher.module.to(memory_format=torch.contiguous_format)


def test_bf16_auto_leaves_depthwise_models_in_fp32_on_a_cpu(monkeypatch):
    from torch import nn

    from edgefree import machine

    monkeypatch.setattr(machine, "_cpu_flags", lambda: ["avx512_bf16"])
    dense = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2))  # grouped, not depthwise
    depthwise = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8))
    assert machine.resolve_bf16("auto", "cpu", dense) is True
    assert machine.resolve_bf16("auto", "cpu", depthwise) is False
    assert machine.resolve_bf16(True, "cpu", depthwise) is True  # asked for, it is given
    assert machine.bf16_autocast("auto", "cpu", depthwise)[0] is False


@pytest.mark.parametrize("bad", [dict(bf16="yes"), dict(warm_start=1.5), dict(first_iterations=0)])
def test_bad_synthesis_settings_are_refused(bad):
    from edgefree.errors import EdgefreeError

    with pytest.raises(EdgefreeError, match="synthesis"):
        SynthesisConfig(**bad)


def test_saving_over_a_hard_link_leaves_the_other_name_alone(dreams, tmp_path):
    import os

    dreams.save(tmp_path / "cached.pt")
    os.link(tmp_path / "cached.pt", tmp_path / "published.pt")
    SyntheticSet(dreams.images[:2], dreams.labels[:2], {}).save(tmp_path / "published.pt")
    assert len(SyntheticSet.load(tmp_path / "cached.pt")) == len(dreams)
    assert len(SyntheticSet.load(tmp_path / "published.pt")) == 2
    assert not list(tmp_path.glob("*.part"))


def test_a_cached_set_whose_tensors_changed_is_dreamed_again(dreams, teacher, tmp_path, capsys):
    from edgefree.config import BuildConfig
    from edgefree.errors import EdgefreeError
    from edgefree.pipeline import _fingerprint, synthesize_cached

    config = BuildConfig(cache=tmp_path / "cache", synthesis=SynthesisConfig(images=16, batch_size=16, iterations=3))
    first = synthesize_cached(teacher, config, tmp_path / "out", progress=False)
    cached = tmp_path / "cache" / f"synthetic-{_fingerprint(teacher, config)}.pt"
    # an edit of the published copy leaves the cached set whole
    (tmp_path / "out" / "synthetic.pt").write_bytes(b"edited")
    assert torch.equal(SyntheticSet.load(cached).images, first.images)
    # a damaged cached set that still reads as tensors: one image flipped, the sha256 stored with it kept
    saved = torch.load(cached, weights_only=True)
    saved["images"][0] = -saved["images"][0]
    torch.save(saved, cached)
    with pytest.raises(EdgefreeError, match="differ from the sha256 stored with them"):
        SyntheticSet.load(cached)
    again = synthesize_cached(teacher, config, None, progress=False)
    assert "cached dreams" in capsys.readouterr().err and not again.stats.get("cached")
    assert torch.equal(again.images, first.images)  # dreamed again, the same seed: the same set
    # a cached set whose sha256 was taken out reads nowhere unchecked
    saved = torch.load(cached, weights_only=True)
    saved["images"][0] = -saved["images"][0]
    del saved["sha256"]
    torch.save(saved, cached)
    assert torch.equal(SyntheticSet.load(cached).images[0], -first.images[0])  # a build folder's older set still reads
    again = synthesize_cached(teacher, config, None, progress=False)
    assert "cached dreams" in capsys.readouterr().err and torch.equal(again.images, first.images)


def test_first_bn_loss_is_the_first_step_alone(teacher):
    """Finding the number of classes runs the teacher once; that pass must not count as a step."""
    from edgefree.distributed import shard_seed
    from edgefree.recover.inversion import BatchNormMatcher

    config = SynthesisConfig(images=10, batch_size=10, iterations=1, jitter=0, flip=False)
    d = synthesize(teacher, config, seed=5, progress=False)
    matcher = BatchNormMatcher(teacher.module)
    g = torch.Generator().manual_seed(shard_seed(5, 0))  # the first shard's chain draws its noise first
    with torch.no_grad():
        teacher.module(torch.randn(10, *teacher.spec.shape, generator=g))
    matcher.remove()
    assert d.stats["bn_loss_first"] == pytest.approx(matcher.take(1.0).item(), rel=1e-4)


def test_the_dreams_cache_key_changes_with_edgefree_version_and_the_dreams_revision(teacher, monkeypatch):
    from edgefree import pipeline
    from edgefree.config import BuildConfig

    key = pipeline._fingerprint(teacher, BuildConfig())
    assert pipeline._fingerprint(teacher, BuildConfig()) == key
    monkeypatch.setattr(pipeline, "DREAMS_REVISION", pipeline.DREAMS_REVISION + 1)
    revised = pipeline._fingerprint(teacher, BuildConfig())
    assert revised != key
    monkeypatch.setattr(pipeline, "__version__", "0.0.0+other")
    assert pipeline._fingerprint(teacher, BuildConfig()) not in (key, revised)


def test_cache_keys_take_a_teacher_whose_weights_are_bfloat16(teacher):
    """A module of the user's own may hold bf16 weights (``.numpy()`` refuses them); its keys differ from fp32's
    and an fp32 teacher's keys are the bytes they always were."""
    import copy
    import hashlib

    from edgefree import pipeline
    from edgefree.bench.teacher import teacher_key
    from edgefree.config import BuildConfig, ExportConfig
    from edgefree.digests import state_sha256
    from edgefree.models import Teacher

    half = Teacher(copy.deepcopy(teacher.module).to(torch.bfloat16), teacher.spec, teacher.name)
    assert pipeline._fingerprint(half, BuildConfig()) != pipeline._fingerprint(teacher, BuildConfig())
    assert teacher_key(half, ExportConfig(), None) != teacher_key(teacher, ExportConfig(), None)
    old = hashlib.sha256()
    for name, tensor in teacher.module.state_dict().items():
        old.update(name.encode())
        old.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    assert state_sha256(teacher.module.state_dict()).hexdigest() == old.hexdigest()


def test_the_dreams_cache_key_follows_the_bf16_this_machine_resolves(teacher, monkeypatch):
    from edgefree import machine, pipeline
    from edgefree.config import BuildConfig

    config = BuildConfig(synthesis=SynthesisConfig(bf16="auto"))
    monkeypatch.setattr(machine, "_cpu_flags", lambda: ["avx512_bf16"])
    native = pipeline._fingerprint(teacher, config)
    assert pipeline._fingerprint(teacher, config.replace(synthesis=SynthesisConfig(bf16=True))) != native  # the setting
    monkeypatch.setattr(machine, "_cpu_flags", lambda: ["avx2"])
    assert pipeline._fingerprint(teacher, config) != native  # "auto" is fp32 on this CPU: other dreams


@pytest.mark.parametrize("images, batch, shards, expected", [(100, 20, 2, [3, 2]), (40, 20, 4, [1, 1]), (512, 256, 1, [2])])
def test_shards_hold_whole_batches_and_ignore_the_world_size(images, batch, shards, expected):
    from edgefree.recover.synthesize import shard_batches

    plan = shard_batches(SynthesisConfig(images=images, batch_size=batch, shards=shards))
    assert [len(p) for p in plan] == expected
    assert [b for p in plan for b in p] == list(range(sum(expected)))


def test_each_shard_is_its_own_seeded_chain(teacher):
    """Two shards are two chains: the second starts from noise (its own seed), not from the first."""
    config = TINY.replace(warm_start=1.0, first_iterations=40, iterations=5, shards=2)
    d = synthesize(teacher, config, seed=3, progress=False)
    assert [len(c) for c in d.stats["bn_loss_curves"]] == [40, 40] and d.stats["shards"] == 2
    other = synthesize(teacher, config, seed=4, progress=False)
    assert not torch.equal(d.images[20:], other.images[20:])


def test_fidelity_is_measured_on_the_set(dreams, teacher):
    with torch.no_grad():
        p = torch.softmax(teacher.module(dreams.images), 1)
    assert dreams.stats["teacher_agreement"] == pytest.approx((p.argmax(1) == dreams.labels).float().mean().item())
    assert dreams.stats["teacher_confidence"] == pytest.approx(p.gather(1, dreams.labels[:, None]).mean().item(),
                                                               abs=1e-5)


def test_auto_bn_weight_is_the_strongest_that_keeps_the_labels(teacher):
    from edgefree.recover.synthesize import BN_WEIGHTS

    auto = synthesize(teacher, TINY.replace(bn_weight="auto", fidelity_floor=0.8), seed=3, progress=False)
    probes = auto.stats["bn_weight_probes"]
    # tried strongest first, stopped at the first that reaches the floor; every stronger one fell short
    assert [p["bn_weight"] for p in probes] == list(BN_WEIGHTS[:len(probes)])
    assert probes[-1]["teacher_agreement"] >= 0.8 > max(p["teacher_agreement"] for p in probes[:-1] or [{"teacher_agreement": 0}])
    assert auto.stats["bn_weight"] == probes[-1]["bn_weight"] == auto.stats["config"]["bn_weight"]
    # the dreams are those of that weight, set by hand
    fixed = synthesize(teacher, TINY.replace(bn_weight=auto.stats["bn_weight"]), seed=3, progress=False)
    assert torch.equal(fixed.images, auto.images)


def test_an_unreachable_floor_takes_the_weight_that_came_closest(teacher):
    from edgefree.recover.synthesize import BN_WEIGHTS, choose_bn_weight

    weight, probes = choose_bn_weight(teacher, TINY.replace(fidelity_floor=1.0, iterations=2), progress=False)
    if len(probes) < len(BN_WEIGHTS):  # some weight reached 100%: it was the last tried
        assert probes[-1]["teacher_agreement"] == 1.0 and weight == probes[-1]["bn_weight"]
    else:
        assert weight == max(probes, key=lambda p: p["teacher_agreement"])["bn_weight"]


def test_probes_carry_the_loss_weights_the_dreams_are_made_with(teacher):
    from edgefree.recover.synthesize import choose_bn_weight

    def probes(**changes):
        return choose_bn_weight(teacher, TINY.replace(fidelity_floor=1.0, **changes), progress=False)[1]

    plain = probes()
    # pixels dreamed with a prior are probed with it; a generator, which trains without it, is probed without
    assert probes(tv_l2_weight=1e4) != plain
    assert probes(method="generator", tv_l2_weight=1e4) == probes(method="generator") == plain


@pytest.mark.parametrize("value", ["loud", -1.0])
def test_bn_weight_must_be_a_weight_or_auto(value):
    from edgefree.errors import EdgefreeError

    with pytest.raises(EdgefreeError, match="bn_weight"):
        SynthesisConfig(bn_weight=value)
