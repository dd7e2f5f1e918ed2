"""Channel and block pruning: shapes, dependencies, the plan, recovery and the saved student."""

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner

from edgefree.config import ChannelPruning, DistillConfig, MagnitudePruning, ReconstructConfig, SynthesisConfig
from edgefree.cost import count_macs
from edgefree.errors import CheckpointError, EdgefreeError
from edgefree.models import create_model, load_teacher
from edgefree.recover import PrunePlan, SyntheticSet, distill, prune, reconstruct, synthesize
from edgefree.recover.channels import identity_residual_blocks
from edgefree.recover.saved import load_student, save_student


def _noise_set(teacher, n=32):
    return SyntheticSet(teacher.spec.example_inputs(n)[0], torch.arange(n) % 10)


def _widths(model, suffix):
    return [m.out_channels for name, m in model.named_modules() if name.endswith(suffix)]


def test_resnet20_loses_only_inner_channels_in_multiples_of_8():
    teacher = load_teacher("resnet20-cifar")
    student = prune(teacher, ChannelPruning(ratio=0.5))
    x = teacher.spec.example_inputs(2)[0]
    assert student.model(x).shape == (2, 10)
    # each block's inner channels halve; the residual stream (tied through the zero-pad shortcut) stays
    assert _widths(student.model, "conv1")[1:] == [8] * 3 + [16] * 3 + [32] * 3
    assert _widths(student.model, "conv2") == _widths(teacher.module, "conv2")
    assert teacher.module.layer1[0].conv1.out_channels == 16  # the input is untouched
    kept = student.plan.kept("layer2.1.conv1", 32)
    assert len(kept) == 16 and torch.equal(student.model.layer2[1].conv1.weight, teacher.module.layer2[1].conv1.weight[kept])


def test_pruning_nothing_changes_no_output():
    teacher = load_teacher("resnet20-cifar")
    x = teacher.spec.example_inputs(4)[0]
    student = prune(teacher, ChannelPruning(ratio=0.0))
    assert torch.equal(student.model(x), teacher.module(x)) and student.plan.channels == []


def test_macs_target_is_reached_by_searching_the_ratio():
    teacher = load_teacher("resnet20-cifar")
    student = prune(teacher, ChannelPruning(macs_target=0.5))
    x = teacher.spec.example_inputs()[0]
    assert count_macs(student.model, x) / count_macs(teacher.module, x) == pytest.approx(0.5, abs=0.06)
    assert student.stats["macs_kept"] == pytest.approx(count_macs(student.model, x) / count_macs(teacher.module, x))


def test_the_ratio_search_takes_a_smaller_student_over_a_nearer_one_past_the_target(monkeypatch):
    from edgefree.recover import channels

    # channels go in steps: here every ratio below 0.71 keeps 65% of the multiply-adds, every one above 41%
    monkeypatch.setattr(channels, "_prune_at", lambda model, example, config, ratio, dreams, scored: (ratio, []))
    monkeypatch.setattr(channels, "count_macs", lambda ratio, example: 41 if ratio >= 0.71 else 65)
    ratio = channels._search_ratio(None, None, ChannelPruning(), 56.7, 5.67, None, False, {}, [])
    assert ratio >= 0.71  # 65 is nearer to 56.7, but over it by more than the slack: 41 reaches the target
    assert channels._search_ratio(None, None, ChannelPruning(), 62.0, 6.2, None, False, {}, []) < 0.71  # 65 fits


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small"])
def test_torchvision_models_prune_through_their_dependencies(name):
    teacher = load_teacher(f"torchvision:{name}", input_spec={"shape": (3, 32, 32)})
    model = teacher.module
    x = teacher.spec.example_inputs(2)[0]
    student = prune(teacher, ChannelPruning(ratio=0.5))
    assert student.model(x).shape == (2, 10)
    assert count_macs(student.model, x) < 0.8 * count_macs(model, x)
    widths = [m.out_channels for m in student.model.modules() if isinstance(m, torch.nn.Conv2d)]
    teacher_widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 or w == t for w, t in zip(widths, teacher_widths))
    fresh = getattr(torchvision.models, name)(num_classes=10)
    PrunePlan.from_json(student.plan.to_json()).apply(fresh)
    fresh.load_state_dict(student.model.state_dict())
    assert torch.equal(fresh.eval()(x), student.model(x))


def test_depth_removes_the_blocks_that_matter_least_on_the_dreams():
    teacher = load_teacher("resnet20-cifar")
    assert len(identity_residual_blocks(teacher.module)) == 7  # 9 blocks, 2 with a zero-pad shortcut
    with pytest.raises(EdgefreeError, match="synthetic images"):
        prune(teacher, ChannelPruning(ratio=0.0, depth=0.3))
    student = prune(teacher, ChannelPruning(ratio=0.0, depth=0.3), _noise_set(teacher))
    digits = load_teacher("digits-cnn")  # no residual blocks: the stage says so, as the build does
    with pytest.raises(EdgefreeError, match="this model has none"):
        prune(digits, ChannelPruning(ratio=0.5, depth=0.3), _noise_set(digits))
    scores = student.stats["block_scores"]
    removed = student.plan.removed_blocks
    assert len(removed) == 2 and max(scores[b] for b in removed) <= min(v for b, v in scores.items() if b not in removed)
    assert isinstance(student.model.get_submodule(removed[0]), torch.nn.Identity)
    assert student.model(teacher.spec.example_inputs()[0]).shape == (1, 10)


def test_a_plan_that_does_not_fit_is_a_clear_error():
    plan = prune(load_teacher("resnet56-cifar"), ChannelPruning(ratio=0.5)).plan
    with pytest.raises(EdgefreeError, match="does not fit"):
        plan.apply(create_model("resnet20-cifar"))
    with pytest.raises(EdgefreeError, match="malformed"):
        PrunePlan.from_json({"channels": "nope"})


def test_saved_student_loads_from_its_plan_and_as_an_exported_program(tmp_path):
    teacher = load_teacher("digits-cnn")
    student = prune(teacher, [ChannelPruning(ratio=0.5), MagnitudePruning(0.5)])
    save_student(student, tmp_path)
    x = teacher.spec.example_inputs(3)[0]
    loaded = load_student(tmp_path, "digits-cnn", 10)
    assert torch.equal(loaded(x), student.model(x))
    program = torch.export.load(tmp_path / "student.pt2").module()
    assert torch.allclose(program(x), student.model(x), atol=1e-6)
    (tmp_path / "student-plan.json").write_text(json.dumps(PrunePlan().to_json()))  # a plan of another build
    with pytest.raises(CheckpointError, match="does not fit"):
        load_student(tmp_path, "digits-cnn", 10)


def test_refit_and_distillation_recover_a_channel_pruned_digits_teacher(teacher, digits):
    from edgefree.evaluate import accuracy

    dreams = synthesize(teacher, SynthesisConfig(images=256, batch_size=128, iterations=60, jitter=1), progress=False)
    student = prune(teacher, ChannelPruning(ratio=0.5), dreams)
    refit = reconstruct(teacher, student, dreams, ReconstructConfig(images=256), progress=False)
    assert refit.stats["layers"] == 5  # every conv and the classifier: their inputs changed
    top1 = {name: accuracy(m, digits, teacher.spec)
            for name, m in (("teacher", teacher.module), ("pruned", student.model), ("refit", refit.model))}
    assert top1["refit"] > top1["pruned"] + 20
    distilled = distill(teacher, refit, dreams, DistillConfig(epochs=4, batch_size=64, lr=0.01, feature_weight=5.0),
                        progress=False)
    assert accuracy(distilled.model, digits, teacher.spec) > top1["teacher"] - 5
    assert distilled.plan.channels == student.plan.channels


def test_cli_build_with_channel_pruning_reports_its_cost(tmp_path):
    from edgefree.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", "--out", str(out), "--pruning", "channel", "--formats", "onnx",
                                      "--precisions", "fp32", "--images", "64", "--iterations", "10", "--epochs", "2",
                                      "--bench-runs", "5", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["cost"]["macs_ratio"] < 0.5 and report["pruning"]["stages"][0]["kind"] == "channel"
    assert report["bench"]["cost"]["student"]["macs"] == report["cost"]["student"]["macs"]
    assert {"student-plan.json", "student.pt2"} <= {p.name for p in out.iterdir()}
    assert "## Pruning and cost" in (out / "report.md").read_text()
    rebuilt = CliRunner().invoke(cli, ["export", str(out), "--out", str(tmp_path / "again")], catch_exceptions=False)
    assert rebuilt.exit_code == 0, rebuilt.output
    bad = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "x"), "--pruning", "channels"])
    assert bad.exit_code == 2 and "--pruning" in bad.output


def test_channel_pruning_after_magnitude_pruning_is_refused():
    with pytest.raises(EdgefreeError, match="channel pruning comes first"):
        prune(load_teacher("digits-cnn"), [MagnitudePruning(0.5), ChannelPruning(ratio=0.5)])


def test_greedy_importance_removes_channels_whose_terms_cancel_together():
    from edgefree.recover.greedy_channels import _removal_order

    v, w = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.95])
    terms = torch.stack([v, -0.9 * v, w])  # channel 2 is smaller than 0 but does not cancel anything
    order = _removal_order((terms @ terms.T).double())
    assert order == [1, 0, 2]  # by norm alone: 1, 2, 0


def test_greedy_importance_changes_the_consumers_outputs_less_than_the_weights_norm(teacher):
    """On the digits teacher, one group at a time: the channels "greedy" removes change the layers that
    consume them less, on the dreams, than those "l2" removes (the same count)."""
    import torch_pruning as tp

    from edgefree.recover.channels import _example, _importance
    from edgefree.recover.greedy_channels import GreedyImportance, _gram

    dreams = synthesize(teacher, SynthesisConfig(images=128, batch_size=128, iterations=20), progress=False)
    model = teacher.module.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=_example(model, teacher.spec))
    greedy, l2 = GreedyImportance(model, graph, dreams.images), _importance("l2")
    compared = 0
    for group in graph.get_all_groups(root_module_types=[torch.nn.Conv2d]):
        item = next((i for i in group if graph.is_in_channel_pruning_fn(i.dep.handler)
                     and i.dep.target.module in greedy.inputs), None)
        if item is None:
            continue
        n = len(group[0].idxs)
        gram, _ = _gram(item.dep.target.module, greedy.inputs[item.dep.target.module], [int(i) for i in item.idxs],
                        torch.tensor([int(r) for r in item.root_idxs]), n)

        def change(scores):  # squared norm of the sum of the removed half's terms
            removed = torch.argsort(scores)[:n // 2]
            return float(gram[removed][:, removed].sum())

        assert change(greedy(group)) < change(l2(group))
        compared += 1
    assert compared >= 2
    with pytest.raises(EdgefreeError, match="'greedy' is measured on the synthetic images"):
        prune(teacher, ChannelPruning(ratio=0.5, importance="greedy"))
    student = prune(teacher, ChannelPruning(ratio=0.5, importance="greedy"), dreams)
    assert student.model(teacher.spec.example_inputs(2)[0]).shape == (2, 10)


@pytest.mark.parametrize("layer, shape", [
    (torch.nn.Conv1d(6, 5, 3, padding=2, dilation=2), (4, 6, 20)),
    (torch.nn.Conv2d(6, 5, 3, stride=2, padding=1), (4, 6, 9, 9)),
    (torch.nn.Conv2d(6, 5, 3, padding=1, padding_mode="reflect"), (4, 6, 8, 8)),
    (torch.nn.Linear(6, 5), (4, 3, 6)),
])
def test_the_per_channel_terms_add_up_to_the_layer_output(layer, shape):
    from edgefree.recover.greedy_channels import _gram

    x = torch.randn(shape)
    with torch.no_grad():
        out = layer(x) - (layer.bias.view(-1, *[1] * (len(shape) - 2)) if layer.weight.dim() > 2 else layer.bias)
    roots = torch.tensor([0, 0, 1, 1, 2, 2])  # two inputs per channel, as a flattened map gives
    gram, energy = _gram(layer, x, list(range(6)), roots, 3)
    assert energy == pytest.approx(float(out.square().sum()), rel=1e-4)
    assert float(gram.sum()) == pytest.approx(energy, rel=1e-4)  # the terms add up to the whole output
    assert gram.shape == (3, 3) and torch.allclose(gram, gram.T)


def test_greedy_importance_ranks_channels_flattened_into_a_classifier():
    """No global pooling: each channel reaches the classifier as 64 inputs, whose terms add up per channel."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 10)).eval()
    from edgefree.models import InputSpec, Teacher

    teacher = Teacher(model, InputSpec(shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3), "flattening-cnn")
    student = prune(teacher, ChannelPruning(ratio=0.5, importance="greedy"), _noise_set(teacher))
    assert [m.out_channels for m in student.model.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 8]


def test_a_macs_target_search_measures_the_greedy_scores_once(teacher, monkeypatch):
    from edgefree.recover import channels

    made = []
    original = channels.GreedyImportance.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(channels.GreedyImportance, "__init__", counted)
    student = prune(teacher, ChannelPruning(macs_target=0.6, importance="greedy"), _noise_set(teacher, 64))
    assert len(made) == 1 and abs(student.stats["macs_kept"] - 0.6) < 0.1
