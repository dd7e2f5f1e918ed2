import copy

import pytest
import torch

from edgefree.config import DistillConfig
from edgefree.errors import DivergenceError, EdgefreeError
from edgefree.evaluate import accuracy
from edgefree.recover import distill, sparsity_report
from edgefree.recover.prune import prunable_weights


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or k.endswith(("num_batches_tracked",))} | {
        n: p.detach().clone() for n, p in model.named_parameters()
        if isinstance(dict(model.named_modules())[n.rsplit(".", 1)[0]], torch.nn.BatchNorm2d)}


def test_student_batchnorm_is_frozen(recovered):
    pruned, _, student = recovered
    before, after = _bn_state(pruned.model), _bn_state(student)
    assert before.keys() == after.keys() and len(before) > 0
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_masks_hold_after_distillation(recovered):
    pruned, _, student = recovered
    weights = prunable_weights(student)
    for name, mask in pruned.masks.items():
        assert torch.all(weights[name][~mask] == 0), name
    assert sparsity_report(student)["overall"] == pytest.approx(0.75, abs=1e-4)
    # and the kept weights did train
    assert any(not torch.equal(weights[n], w) for n, w in prunable_weights(pruned.model).items())


def test_recovered_beats_pruned_on_the_default(recovered, teacher, digits):
    pruned, _, student = recovered
    acc_pruned, acc_student = accuracy(pruned.model, digits, teacher.spec), accuracy(student, digits, teacher.spec)
    assert acc_student > acc_pruned + 10
    assert acc_student >= accuracy(teacher.module, digits, teacher.spec) - 5


def test_divergence_stops_with_a_clear_error(teacher, recovered):
    pruned, dreams, _ = recovered
    with pytest.raises(DivergenceError, match="diverged"):
        distill(teacher, pruned, dreams, DistillConfig(epochs=3, lr=1e12, grad_clip=0), progress=False)
    # clipped steps at a huge rate keep the loss finite while the weights run away: refused all the same
    with pytest.raises(DivergenceError, match="logits reach .* where the teacher's stay within"):
        distill(teacher, pruned, dreams, DistillConfig(epochs=1, lr=1e6), progress=False)


@pytest.mark.parametrize("extra", [dict(feature_weight=1.0), dict(feature_weight=1.0, bf16=True, mixup=0.5)])
def test_feature_matching_and_bf16_recover_and_clean_up(teacher, digits, recovered, extra):
    pruned, dreams, _ = recovered
    config = DistillConfig(epochs=15, batch_size=64, lr=0.01, **extra)
    before = {k: v.clone() for k, v in pruned.model.state_dict().items()}
    distilled = distill(teacher, pruned, dreams, config, progress=False)
    student = distilled.model
    assert accuracy(student, digits, teacher.spec) > accuracy(pruned.model, digits, teacher.spec) + 10
    assert len(distilled.stats["loss_per_epoch"]) == 15 and distilled.stats["seconds"] > 0
    assert all(torch.equal(v, pruned.model.state_dict()[k]) for k, v in before.items())  # the input is untouched
    assert sparsity_report(student)["overall"] == pytest.approx(0.75, abs=1e-4)
    # the feature hooks are gone from both models
    assert not any(m._forward_hooks for m in teacher.module.modules())
    assert not any(m._forward_hooks for m in student.modules())


def test_channels_last_distils_the_same_student_and_hands_back_the_usual_layout(teacher, recovered):
    pruned, dreams, _ = recovered
    config = DistillConfig(epochs=2, batch_size=64, lr=0.01, feature_weight=1.0)
    plain = distill(teacher, pruned, dreams, config, progress=False)
    last = distill(teacher, pruned, dreams, config.replace(channels_last=True), progress=False)
    four_d = [p for p in last.model.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous() for p in four_d)  # the student as the later stages expect it
    assert all(p.is_contiguous() for p in teacher.module.parameters())  # and the teacher put back
    assert last.stats["channels_last"] and not plain.stats["channels_last"]
    for (name, a), b in zip(plain.model.state_dict().items(), last.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), name  # a layout: the same arithmetic, reordered
    weights = prunable_weights(last.model)
    assert all(torch.all(weights[name][~mask] == 0) for name, mask in pruned.masks.items())


def test_feature_loss_is_zero_only_for_equal_features():
    from edgefree.recover.distill import feature_loss

    a = {"x": torch.ones(2, 3, 4, 4), "y": torch.zeros(2, 5)}
    pairs = {"x": None, "y": None}
    assert feature_loss(a, {k: t.clone() for k, t in a.items()}, pairs).item() == 0
    assert feature_loss(a, {"x": a["x"] + 1, "y": a["y"]}, pairs).item() == pytest.approx(0.5)
    # a student that kept channels 0 and 2 of the teacher's 3 is compared on those channels only
    teacher = {"x": torch.stack([a["x"][:, 0], a["x"][:, 1] + 7, a["x"][:, 2]], 1), "y": a["y"]}
    kept = {"x": {"x": a["x"][:, [0, 2]], "y": a["y"]}}
    assert feature_loss(kept["x"], teacher, {"x": [0, 2], "y": None}).item() == 0


def test_feature_matching_needs_batchnorm(recovered, no_batchnorm):
    from edgefree.errors import EdgefreeError
    from edgefree.recover import prune

    from edgefree.recover.inversion import SyntheticSet

    nobn = no_batchnorm
    dreams = SyntheticSet(torch.randn(16, *nobn.spec.shape), torch.zeros(16, dtype=torch.long))  # its own input
    with pytest.raises(EdgefreeError, match="no BatchNorm"):
        distill(nobn, prune(nobn), dreams, DistillConfig(epochs=1, feature_weight=1.0), progress=False)


def test_warmup_raises_the_rate_linearly_then_follows_the_cosine():
    from edgefree.recover.distill import _schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = _schedule(opt, steps=10, warmup=4)
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] < rates[1] < rates[2] < rates[3] < rates[4] == pytest.approx(0.1)
    assert rates[4] > rates[6] > rates[9] > 0  # the cosine over the remaining steps
    with pytest.raises(EdgefreeError, match="warmup_epochs"):
        DistillConfig(epochs=2, warmup_epochs=2)


def test_bn_affine_trains_scale_and_shift_only_and_the_average_keeps_the_masks(teacher, digits, recovered):
    pruned, dreams, _ = recovered
    config = DistillConfig(epochs=6, batch_size=64, lr=0.01, bn_affine=True, ema=0.9)
    student = distill(teacher, pruned, dreams, config, progress=False).model
    bns = [(a, b) for a, b in zip(pruned.model.modules(), student.modules()) if isinstance(a, torch.nn.BatchNorm2d)]
    assert bns and all(torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
                       for a, b in bns)  # the statistics stay the teacher's
    assert any(not torch.equal(a.weight, b.weight) or not torch.equal(a.bias, b.bias) for a, b in bns)
    weights = prunable_weights(student)
    assert all(torch.all(weights[name][~mask] == 0) for name, mask in pruned.masks.items())  # the average's zeros
    assert accuracy(student, digits, teacher.spec) > accuracy(pruned.model, digits, teacher.spec) + 10
    # the average is not the last step's weights: the same run without it ends elsewhere
    last = distill(teacher, pruned, dreams, config.replace(ema=0.0), progress=False).model
    assert not torch.equal(prunable_weights(last)[next(iter(pruned.masks))], weights[next(iter(pruned.masks))])
    with pytest.raises(EdgefreeError, match="ema"):
        DistillConfig(ema=1.0)
    from edgefree.recover.distill import _parameter_groups, freeze_batchnorm

    model = freeze_batchnorm(copy.deepcopy(pruned.model), affine=True)
    groups = _parameter_groups(model, [p for p in model.parameters() if p.requires_grad], 5e-4)
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]  # BatchNorm's scale and shift are not decayed
    assert {id(p) for p in groups[1]["params"]} == bn and not bn & {id(p) for p in groups[0]["params"]}
