import pytest
import torch

from edgefree.config import BuildConfig, DistillConfig, MagnitudePruning, SynthesisConfig
from edgefree.errors import EdgefreeError, NoBatchNormError
from edgefree.evaluate import accuracy
from edgefree.recover import SyntheticSet, distill, prune, synthesize
from edgefree.recover.generator import DreamGenerator, GeneratorAdversary

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


def test_generator_needs_batchnorm_and_a_size_it_can_reach(no_batchnorm):
    with pytest.raises(NoBatchNormError, match="no BatchNorm layers"):
        synthesize(no_batchnorm, GEN, progress=False)
    with pytest.raises(EdgefreeError, match=r"images \(C x H x W\) or signals \(C x L\).*'deepinversion'"):
        DreamGenerator((1, 3, 30, 30), 10)
    # sizes that are not a multiple of 4 are drawn a little larger and cropped
    net = DreamGenerator((3, 30, 18), 10)
    assert net(torch.randn(2, 128), torch.tensor([0, 9])).shape == (2, 3, 30, 18)
    with pytest.raises(EdgefreeError, match="method"):
        SynthesisConfig(method="gan")


def _disagreement(teacher, student, images):
    with torch.no_grad():
        return torch.nn.functional.kl_div(torch.log_softmax(student(images), 1), torch.log_softmax(teacher(images), 1),
                                          reduction="batchmean", log_target=True).item()


def test_adversary_moves_the_dreams_to_where_the_student_disagrees(generated, teacher):
    student = prune(teacher, MagnitudePruning(0.9)).model.train()
    modes = [m.training for m in student.modules()]
    before = {k: v.clone() for k, v in generated.generator.state_dict().items()}
    module, disagreement = teacher.module.eval(), {}
    for weight in (0.0, 20.0):  # 0: the same steps without the adversarial term, the control
        adversary = GeneratorAdversary(teacher, generated, steps=10, weight=weight)
        for _ in range(3):
            adversary.step(student, torch.Generator().manual_seed(0))
        assert [m.training for m in student.modules()] == modes  # the student's modes as they were
        assert all(p.requires_grad for p in teacher.module.parameters())  # the teacher as it was
        assert len(adversary.history) == 3 and all(set(h) == {"bn", "kl"} for h in adversary.history)
        disagreement[weight] = _disagreement(module, student.eval(), adversary.sample(generated.labels,
                                                                                      torch.Generator()))
        student.train()
    assert all(torch.equal(before[k], v) for k, v in generated.generator.state_dict().items())  # the set's: untouched
    assert disagreement[20.0] > 1.3 * disagreement[0.0]


def test_adversarial_distillation_records_its_steps_and_needs_a_generator(generated, teacher, digits):
    pruned = prune(teacher, MagnitudePruning(0.75))
    config = DistillConfig(epochs=4, batch_size=64, lr=0.01, adversarial_steps=2)
    student = distill(teacher, pruned, generated, config, progress=False)
    assert len(student.stats["adversarial"]) == 3  # every epoch after the first
    assert accuracy(student.model, digits, teacher.spec) > accuracy(pruned.model, digits, teacher.spec)
    dreamed = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=2), progress=False)
    with pytest.raises(EdgefreeError, match="adversarial_steps to 0"):
        distill(teacher, pruned, dreamed, config, progress=False)
    with pytest.raises(EdgefreeError, match="synthesis method 'generator'"):
        BuildConfig(distill=config)
    with pytest.raises(EdgefreeError, match="adversarial_steps"):
        DistillConfig(adversarial_steps=-1)


def test_an_adversarial_build_runs_end_to_end(tmp_path):
    from edgefree.pipeline import build

    config = BuildConfig(out=tmp_path / "out", cache=tmp_path / "cache", export=None,
                         synthesis=GEN.replace(images=128, iterations=40),
                         distill=DistillConfig(epochs=3, batch_size=64, lr=0.01, adversarial_steps=2))
    report = build(config, progress=False)
    assert len(report["distill"]["adversarial"]) == 2 and report["distill"]["adversarial_steps"] == 2
    assert report["accuracy"]["recovered"] > report["accuracy"]["pruned"]
    assert report["estimate"]["recovered"]["drop"] >= 0  # estimated on held-out DeepInversion dreams


def test_draws_under_bf16_autocast_are_the_fp32_draws_to_bf16_precision(generated, teacher):
    from edgefree.machine import bf16_autocast

    _, autocast = bf16_autocast(True)
    fp32 = generated.generator.sample(teacher.spec, generated.labels, torch.Generator().manual_seed(0))
    bf16 = generated.generator.sample(teacher.spec, generated.labels, torch.Generator().manual_seed(0),
                                      autocast=autocast)
    assert bf16.dtype == torch.float32 and bf16.is_contiguous()
    gap = (teacher.spec.denormalize(bf16) - teacher.spec.denormalize(fp32)).abs()
    assert 0 < gap.max() < 0.02  # bf16 ran (not the same bits), and its images are fp32's to ~1/100 of the range


def test_a_depthwise_teacher_runs_in_fp32_beside_a_bf16_generator(monkeypatch):
    from edgefree import machine
    from edgefree.models import load_teacher

    monkeypatch.setattr(machine, "_cpu_flags", lambda: ["avx512_bf16"])  # a CPU with native bf16
    mobilenet = load_teacher("torchvision:mobilenet_v3_small", None, input_spec={"shape": [3, 32, 32]})
    config = GEN.replace(images=8, batch_size=8, iterations=2, bf16="auto")
    made = synthesize(mobilenet, config, progress=False)
    assert made.stats["generator_bf16"] is True and made.stats["bf16"] is False
    plain = synthesize(load_teacher("digits-cnn", None), config, progress=False)
    assert plain.stats["generator_bf16"] is True and plain.stats["bf16"] is True


def test_the_generator_recipe_picks_its_batchnorm_weight_per_teacher(teacher):
    from edgefree.config import recipe
    from edgefree.recover.synthesize import BN_WEIGHTS

    config = recipe("generator").synthesis.replace(images=64, batch_size=32, iterations=20, bf16=False)
    auto = synthesize(teacher, config, seed=2, progress=False)
    probes, weight = auto.stats["bn_weight_probes"], auto.stats["bn_weight"]
    assert probes and weight in BN_WEIGHTS and weight == auto.stats["config"]["bn_weight"]
    assert auto.stats["steps"] == 20  # the generator trained after the probes, at the weight they chose
    fixed = synthesize(teacher, config.replace(bn_weight=weight), seed=2, progress=False)
    assert torch.equal(fixed.images, auto.images)
