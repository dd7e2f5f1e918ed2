"""The Python API as a notebook uses it: wrong arguments stop in one line that names them, configs refuse
values of the wrong type, and nothing the caller holds is changed or removed."""

import pytest
import torch
from torch import nn

from edgefree import load_teacher
from edgefree.budget import search_budget
from edgefree.config import (BuildConfig, ChannelPruning, DistillConfig, ExportConfig, MagnitudePruning,
                             ReconstructConfig, SynthesisConfig)
from edgefree.errors import EdgefreeError
from edgefree.recover import distill, prune, reconstruct, synthesize
from edgefree.recover.estimate import estimate
from edgefree.recover.inversion import SyntheticSet
from edgefree.recover.saved import save_student


@pytest.fixture(scope="module")
def dreams(teacher):
    return synthesize(teacher, SynthesisConfig(images=64, batch_size=32, iterations=5), progress=False)


@pytest.mark.parametrize("make, message", [
    (lambda: DistillConfig(grad_clip=-1), "grad_clip must be >= 0"),
    (lambda: DistillConfig(momentum=1.5), "momentum must be in"),
    (lambda: DistillConfig(weight_decay=-1e-4), "weight_decay must be >= 0"),
    (lambda: DistillConfig(epochs=2.5), "DistillConfig.epochs must be an integer, got 2.5"),
    (lambda: DistillConfig(augment="no"), "DistillConfig.augment must be true or false"),
    (lambda: SynthesisConfig(images="64"), "SynthesisConfig.images must be an integer"),
    (lambda: SynthesisConfig(jitter=-1), "jitter"),
    (lambda: ReconstructConfig(images=10.5), "ReconstructConfig.images must be an integer"),
    (lambda: MagnitudePruning(sparsity="0.5"), "MagnitudePruning.sparsity must be a number"),
    (lambda: MagnitudePruning(filter_fn=3), "filter_fn must be a function"),
    (lambda: ChannelPruning(steps=True), "ChannelPruning.steps must be an integer"),
    (lambda: ChannelPruning(round_to=2.5), "ChannelPruning.round_to must be an integer"),
    (lambda: ExportConfig(formats="onnx"), "ExportConfig.formats must be a list of strings"),
    (lambda: BuildConfig(distill=3), "distill must be a DistillConfig"),
    (lambda: BuildConfig(threads="2"), "BuildConfig.threads must be an integer or left out, got '2'"),
    (lambda: BuildConfig(target=3), "BuildConfig.target must be a string, got 3"),
    (lambda: BuildConfig(dist_timeout_s="5"), "BuildConfig.dist_timeout_s must be a number"),
    (lambda: BuildConfig(max_drop=True), "BuildConfig.max_drop must be a number or left out"),
])
def test_a_config_of_a_wrong_value_or_type_is_refused_in_one_line(make, message):
    with pytest.raises(EdgefreeError, match=message):
        make()


def test_a_build_config_takes_a_stage_as_a_dict_of_changes_to_the_recipes():
    from edgefree.config import recipe

    config = BuildConfig(synthesis={"images": 64}, export={"formats": ["onnx"]})
    assert config.synthesis == recipe("demo").synthesis.replace(images=64) and config.export.formats == ("onnx",)
    assert BuildConfig(synthesis={"images": 64}) == BuildConfig.from_dict({"synthesis": {"images": 64}})
    assert BuildConfig(prune={"kind": "channel", "ratio": 0.3}).prune == (ChannelPruning(ratio=0.3),)


def test_numbers_of_either_kind_and_none_where_allowed_are_accepted():
    assert MagnitudePruning(sparsity=1 - 1).sparsity == 0 and DistillConfig(lr=1).lr == 1
    assert SynthesisConfig(bn_weight="auto", flip=None).flip is None and DistillConfig(grad_clip=0).grad_clip == 0


def test_each_stage_names_a_wrong_argument(teacher, dreams):
    pruned = prune(teacher, MagnitudePruning(0.5))
    with pytest.raises(EdgefreeError, match="teacher must be a Teacher, got Sequential: .*load_teacher"):
        synthesize(teacher.module, SynthesisConfig(images=8))
    with pytest.raises(EdgefreeError, match="config must be a SynthesisConfig, got ReconstructConfig"):
        synthesize(teacher, ReconstructConfig())
    with pytest.raises(EdgefreeError, match="the pruned student must be a Student, got Sequential: prune"):
        reconstruct(teacher, pruned.model, dreams)
    with pytest.raises(EdgefreeError, match="dreams must be a SyntheticSet, got Tensor: synthesize"):
        distill(teacher, pruned, dreams.images)
    with pytest.raises(EdgefreeError, match="config must be a DistillConfig, got ReconstructConfig"):
        distill(teacher, pruned, dreams, ReconstructConfig())
    with pytest.raises(EdgefreeError, match="gives 1 output .*2 or more classes"):
        load_teacher(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                         torch.nn.Linear(4 * 6 * 6, 1)), input_spec={"shape": (1, 8, 8)})
    with pytest.raises(EdgefreeError, match="magnitude pruning comes once"):
        prune(teacher, [MagnitudePruning(0.5), MagnitudePruning(0.5)])
    for stage in (distill, reconstruct):  # magnitude pruning alone takes no dreams; these stages need them
        with pytest.raises(EdgefreeError, match="dreams must be a SyntheticSet, got NoneType: synthesize"):
            stage(teacher, pruned, None)
    elsewhere = SyntheticSet(torch.randn(8, 3, 16, 16), torch.zeros(8, dtype=torch.long))
    with pytest.raises(EdgefreeError, match="the dreams are 3x16x16 and the teacher takes 1x8x8"):
        reconstruct(teacher, pruned, elsewhere)


def test_prune_and_a_latency_target_refuse_the_steps_only_gradual_pruning_takes(teacher, dreams):
    from edgefree.config import LatencyTarget
    from edgefree.latency_target import latency_budget

    with pytest.raises(EdgefreeError, match=r"steps=3.*prune_gradually"):
        prune(teacher, ChannelPruning(macs_target=0.5, steps=3), dreams)
    with pytest.raises(EdgefreeError, match="in one step: leave ChannelPruning's macs_target, depth and steps unset"):
        latency_budget(teacher, dreams, LatencyTarget(), ChannelPruning(steps=3))


def test_estimate_takes_a_student_as_it_takes_its_model(teacher, dreams):
    pruned = prune(teacher, MagnitudePruning(0.5))
    assert estimate(teacher, pruned, dreams) == estimate(teacher, pruned.model, dreams)


def test_mixup_distils_alike_from_one_seed_and_leaves_the_global_generator(teacher, dreams):
    pruned, config = prune(teacher, MagnitudePruning(0.5)), DistillConfig(epochs=1, batch_size=32, mixup=0.5)
    torch.manual_seed(1)
    untouched = torch.rand(3)
    torch.manual_seed(1)
    first = distill(teacher, pruned, dreams, config, progress=False).model.state_dict()
    assert torch.equal(torch.rand(3), untouched)  # distillation drew nothing from the global generator
    torch.rand(7)  # and another state of it changes nothing
    second = distill(teacher, pruned, dreams, config, progress=False).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_export_keeps_the_files_of_the_callers_own_in_its_folder(teacher, dreams, tmp_path):
    from edgefree.export import export_student

    mine = [tmp_path / "student-notes.txt", tmp_path / "student-v1.pt"]
    for path in mine:
        path.write_text("mine")
    (tmp_path / "student-fp32.onnx").write_text("a previous export")
    manifest = export_student(prune(teacher, MagnitudePruning(0.5)), teacher.spec,
                              ExportConfig(formats=("onnx",), precisions=("fp32",)), tmp_path, dreams)
    assert [a["name"] for a in manifest["artifacts"]] == ["onnx-fp32"]
    assert all(path.read_text() == "mine" for path in mine)
    assert (tmp_path / "student-fp32.onnx").read_bytes() != b"a previous export"


def test_a_module_built_in_python_is_a_teacher_of_its_own_copy():
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(8, 4)).train()
    teacher = load_teacher(module, input_spec={"shape": "3x16x16", "mean": "0.5,0.5,0.5"})
    assert teacher.spec.shape == (3, 16, 16) and teacher.spec.mean == (0.5, 0.5, 0.5) and teacher.classes() == 4
    assert teacher.module is not module and module.training  # the caller's module stays as it was
    with pytest.raises(EdgefreeError, match="Sequential does not say what input it takes"):
        load_teacher(module)


def test_search_budget_without_a_budget_says_what_to_pass(teacher, dreams):
    with pytest.raises(EdgefreeError, match=r"BuildConfig\(max_drop=D\)"):
        search_budget(teacher, BuildConfig(), dreams, dreams)


def test_save_student_makes_its_folder_and_leaves_the_models_mode(teacher, tmp_path):
    pruned = prune(teacher, MagnitudePruning(0.5))
    pruned.model.train()
    paths = save_student(pruned, tmp_path / "new" / "folder")
    assert all(p.is_file() for p in paths) and pruned.model.training
    with pytest.raises(EdgefreeError, match="needs a Student"):
        save_student(pruned.model, tmp_path)


def test_a_build_records_the_command_line_that_ran_it(tmp_path, monkeypatch):
    from edgefree.pipeline import build

    monkeypatch.setattr("sys.argv", ["edgefree", "build", "--out", "a folder"])
    report = build(BuildConfig(out=tmp_path / "out", synthesis=SynthesisConfig(images=32, iterations=5),
                               reconstruct=ReconstructConfig(images=32), distill=DistillConfig(epochs=1), export=None),
                   progress=False)
    assert report["invocation"] == "edgefree build --out 'a folder'"  # quoted as a shell would take it back
