import pytest
import torch

from edgefree.config import MagnitudePruning
from edgefree.errors import EdgefreeError
from edgefree.models import load_teacher
from edgefree.recover import prune, sparsity_report
from edgefree.recover.prune import prunable_weights


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75, 0.9])
def test_mask_is_exact_and_global(sparsity):
    torch.manual_seed(0)
    teacher = load_teacher("resnet20-cifar")
    pruned = prune(teacher, MagnitudePruning(sparsity=sparsity))
    total = sum(m.numel() for m in pruned.masks.values())
    assert sum(int((~m).sum()) for m in pruned.masks.values()) == round(sparsity * total)
    weights = prunable_weights(pruned.model)
    for name, mask in pruned.masks.items():
        assert torch.all(weights[name][~mask] == 0)
        assert torch.all(weights[name][mask] != 0)
    # global ranking: every kept weight is at least as large as every pruned one
    original = prunable_weights(teacher.module)
    kept = torch.cat([original[n][m].abs() for n, m in pruned.masks.items()])
    dropped = torch.cat([original[n][~m].abs() for n, m in pruned.masks.items()])
    if len(dropped) and len(kept):
        assert kept.min() >= dropped.max()
    assert sparsity_report(pruned.model)["overall"] == pytest.approx(sparsity, abs=1e-5)


def test_teacher_is_untouched():
    teacher = load_teacher("digits-cnn")
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    prune(teacher, MagnitudePruning(sparsity=0.75))
    assert all(torch.equal(before[k], v) for k, v in teacher.module.state_dict().items())


def test_keep_first_last_dense():
    pruned = prune(load_teacher("resnet20-cifar"), MagnitudePruning(sparsity=0.75, keep_first_last_dense=True))
    layers = sparsity_report(pruned.model)["layers"]
    assert layers["conv1.weight"]["sparsity"] == 0.0
    assert layers["linear.weight"]["sparsity"] == 0.0
    assert "conv1.weight" not in pruned.masks and "linear.weight" not in pruned.masks


def test_per_layer_report_covers_every_conv_and_linear():
    report = sparsity_report(prune(load_teacher("digits-cnn")).model)
    assert list(report["layers"]) == ["0.0.weight", "1.0.weight", "2.0.weight", "3.0.weight", "6.weight"]
    assert report["zeros"] == sum(round(l["sparsity"] * l["params"]) for l in report["layers"].values())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range(bad):
    with pytest.raises(EdgefreeError, match="sparsity must be in"):
        MagnitudePruning(sparsity=bad)


def _scaled_teacher():
    """Two layers whose weights differ 100x in scale (a wide classifier of small weights, say)."""
    from torch import nn

    from edgefree.models import InputSpec, Teacher

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    with torch.no_grad():
        model[5].weight.mul_(0.01)
    return Teacher(model.eval(), InputSpec((3, 6, 6)), "scaled")


def test_layer_scope_zeroes_the_same_fraction_of_every_layer(capsys):
    pruned = prune(_scaled_teacher(), MagnitudePruning(sparsity=0.75, scope="layer"))
    for name, mask in pruned.masks.items():
        assert int((~mask).sum()) == round(0.75 * mask.numel()), name
    assert "zeroed every weight" not in capsys.readouterr().err


def test_global_ranking_that_empties_a_layer_says_so(capsys):
    pruned = prune(_scaled_teacher(), MagnitudePruning(sparsity=0.75))
    assert not pruned.masks["5.weight"].any()  # the small classifier goes first
    err = capsys.readouterr().err
    assert "zeroed every weight of 5" in err and "--magnitude-scope layer" in err


def test_magnitude_scope_is_checked_and_recorded():
    with pytest.raises(EdgefreeError, match="magnitude scope must be 'global' or 'layer'"):
        MagnitudePruning(scope="per-channel")
    assert MagnitudePruning(scope="layer").to_dict()["scope"] == "layer"
