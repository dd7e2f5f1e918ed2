"""Layer-wise reconstruction: the exact least-squares refit, masks kept, real gains on the digits teacher."""

import copy
import sys

import pytest
import torch
from torch import nn

from edgefree.config import MagnitudePruning, ReconstructConfig
from edgefree.evaluate import accuracy
from edgefree.models import InputSpec, Teacher
from edgefree.recover import SyntheticSet, prune, reconstruct


def as_teacher(model: nn.Module, shape: tuple) -> Teacher:
    """A bare module as a teacher; the refit reads the images only, never the spec."""
    return Teacher(model.eval(), InputSpec(shape), type(model).__name__)


def test_a_linear_layer_gets_the_least_squares_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    teacher = as_teacher(model, (12, 1))  # 12 features, read as a signal of one step
    pruned = prune(teacher, MagnitudePruning(sparsity=0.5))
    x = torch.randn(400, 12) @ torch.randn(12, 12)  # correlated inputs: kept weights can stand in for pruned ones
    result = reconstruct(teacher, pruned, SyntheticSet(x[:, :, None], torch.zeros(400, dtype=torch.long)),
                         ReconstructConfig(images=400, batch_size=64, damping=1e-9), progress=False)
    target = model(x).detach()
    mask = pruned.masks["1.weight"]
    for r in range(5):  # each output row: lstsq on its kept inputs plus the bias column
        kept = mask[r].nonzero().squeeze(1)
        design = torch.cat([x[:, kept], torch.ones(400, 1)], 1).double()
        solution = torch.linalg.lstsq(design, target[:, r:r + 1].double()).solution.squeeze(1)
        assert torch.allclose(result.model[1].weight[r, kept].double(), solution[:-1], atol=1e-4)
        assert result.model[1].bias[r].item() == pytest.approx(solution[-1].item(), abs=1e-4)
    assert (result.model[1].weight[~mask] == 0).all()
    with torch.no_grad():
        error = lambda m: (m(x) - target).pow(2).mean().item()  # noqa: E731
        assert error(result.model) < error(pruned.model)


def test_grouped_convs_are_refit_per_group_and_keep_their_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 3)).eval()
    teacher = as_teacher(model, (4, 6, 6))
    pruned = prune(teacher, MagnitudePruning(sparsity=0.6))
    x = torch.randn(64, 4, 6, 6)
    before = copy.deepcopy(pruned.model.state_dict())
    result = reconstruct(teacher, pruned, SyntheticSet(x, torch.zeros(64, dtype=torch.long)), progress=False)
    assert all(torch.equal(before[k], v) for k, v in pruned.model.state_dict().items())  # input untouched
    params = dict(result.model.named_parameters())
    for name, mask in pruned.masks.items():
        assert (params[name][~mask] == 0).all(), name
    assert result.stats["layers"] == 3 and result.stats["images"] == 64
    with torch.no_grad():
        gap = lambda m: (m(x) - model(x)).pow(2).mean().item()  # noqa: E731
        assert gap(result.model) < gap(pruned.model)


def test_products_in_chunks_give_the_same_weights(monkeypatch):
    torch.manual_seed(0)
    teacher = as_teacher(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(6 * 5 * 5, 4)), (3, 5, 5))
    pruned = prune(teacher, MagnitudePruning(sparsity=0.5))
    dreams = SyntheticSet(torch.randn(32, 3, 5, 5), torch.zeros(32, dtype=torch.long))
    whole = reconstruct(teacher, pruned, dreams, progress=False)
    module = sys.modules["edgefree.recover.reconstruct"]  # the package's name is the function
    monkeypatch.setattr(module, "_BMM_FLOATS", 1)  # one sample per product: the bound for wide layers
    chunked = reconstruct(teacher, pruned, dreams, progress=False)
    for a, b in zip(whole.model.parameters(), chunked.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_wide_rows_solved_by_conjugate_gradients_match_the_exact_solve(monkeypatch):
    """A 3x3 conv over 32 channels seen at few positions (a rank-deficient Gram, as for a wide layer
    at a small input size): the iterative path reaches the exact per-row least-squares weights."""
    torch.manual_seed(0)
    teacher = as_teacher(nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                       nn.Flatten(), nn.Linear(16 * 4 * 4, 4)), (32, 4, 4))
    pruned = prune(teacher, MagnitudePruning(sparsity=0.5))
    dreams = SyntheticSet(torch.randn(24, 32, 4, 4), torch.zeros(24, dtype=torch.long))
    module = sys.modules["edgefree.recover.reconstruct"]
    solved = []
    iterate = module._conjugate_gradients
    monkeypatch.setattr(module, "_conjugate_gradients", lambda *a: solved.append(len(a[2])) or iterate(*a))
    exact = reconstruct(teacher, pruned, dreams, progress=False)
    assert solved == []  # every row of these layers is solved exactly by default
    monkeypatch.setattr(module, "_exact_limit", lambda inputs: 8)  # every row of both layers goes the iterative way
    iterative = reconstruct(teacher, pruned, dreams, progress=False)
    assert solved == [16, 4]  # both layers' rows, by conjugate gradients
    first_exact, first_iterative = exact.model[0].weight, iterative.model[0].weight  # the same inputs: the same fit
    assert torch.allclose(first_exact, first_iterative, atol=1e-4 * first_exact.abs().max().item())
    assert (first_iterative[~pruned.masks["0.weight"]] == 0).all() and (iterative.model[4].weight[~pruned.masks["4.weight"]] == 0).all()
    with torch.no_grad():  # the last layer sees the first one's (slightly different) outputs: compare the fit
        gap = lambda m: (m(dreams.images) - teacher.module(dreams.images)).pow(2).mean().item()  # noqa: E731
        assert gap(iterative.model) == pytest.approx(gap(exact.model), rel=0.02)
        assert gap(exact.model) < 0.5 * gap(pruned.model)
    assert not torch.allclose(exact.model[0].weight, pruned.model[0].weight)  # the refit moved the weights


def test_a_layer_the_forward_pass_never_calls_is_reported_not_fit():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.used(x.flatten(1))

    torch.manual_seed(0)
    teacher = as_teacher(WithSpare(), (6, 1))
    pruned = prune(teacher, MagnitudePruning(sparsity=0.5))
    result = reconstruct(teacher, pruned, SyntheticSet(torch.randn(50, 6, 1), torch.zeros(50, dtype=torch.long)),
                         progress=False)
    assert result.stats["skipped"] == ["spare"] and result.stats["layers"] == 1
    assert torch.equal(result.model.spare.weight, pruned.model.spare.weight)


def test_zero_images_returns_the_pruned_weights(teacher, recovered):
    pruned, dreams, _ = recovered
    result = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=0), progress=False)
    assert result.stats["layers"] == 0
    assert all(torch.equal(a, b) for a, b in zip(result.model.state_dict().values(), pruned.model.state_dict().values()))


def test_refit_on_dreams_recovers_the_pruned_digits_teacher(teacher, digits, recovered):
    pruned, dreams, _ = recovered
    result = reconstruct(teacher, pruned, dreams, progress=False)
    # 75% pruned loses far more than 20 points; refit on 256 dreams alone, no gradient step: near the teacher
    teacher_top1 = accuracy(teacher.module, digits, teacher.spec)
    assert accuracy(pruned.model, digits, teacher.spec) < teacher_top1 - 20
    assert accuracy(result.model, digits, teacher.spec) >= teacher_top1 - 3
    params = dict(result.model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in pruned.masks.items())
    assert set(result.masks) == set(pruned.masks)


def test_inputs_from_cached_blocks_give_the_weights_of_full_forward_passes(monkeypatch):
    from edgefree.models.cifar_resnet import CifarResNet

    torch.manual_seed(0)
    teacher = as_teacher(CifarResNet(blocks_per_stage=2), (3, 16, 16))  # stages: nn.Sequential of residual blocks
    pruned = prune(teacher, MagnitudePruning(sparsity=0.75))
    dreams = SyntheticSet(torch.randn(24, 3, 16, 16), torch.zeros(24, dtype=torch.long))
    config = ReconstructConfig(images=24, batch_size=8)
    module = sys.modules["edgefree.recover.walk"]
    anchors = module.anchors(teacher.module, dreams.images[:2])
    assert anchors["layer2.1.conv2"] == ("layer2", 1) and "conv1" not in anchors and "linear" not in anchors
    cached = reconstruct(teacher, pruned, dreams, config, progress=False)
    monkeypatch.setattr(module, "anchors", lambda model, example: {})  # every layer from the images
    direct = reconstruct(teacher, pruned, dreams, config, progress=False)
    assert cached.stats["layers"] == direct.stats["layers"] == 2 * 3 * 2 + 2
    for a, b in zip(cached.model.parameters(), direct.model.parameters()):
        assert torch.equal(a, b)


def test_a_sequential_called_twice_is_not_used_as_a_cache():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))

        def forward(self, x):
            return self.body(self.body(x))

    from edgefree.recover.walk import anchors

    once = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert anchors(Twice(), torch.randn(2, 4)) == {}
    assert anchors(once, torch.randn(2, 4)) == {"0": ("", 0), "1": ("", 1)}
