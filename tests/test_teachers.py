"""Teachers of every source, through synthesis, refit, distillation and export with parity, on tiny budgets.

Random weights, with BatchNorm statistics set by a few forward passes on noise: the stages only need
BatchNorm layers and the input's shape. One torchvision model runs in the default suite; the rest are
marked slow (the ONNX export of a torchvision graph alone takes tens of seconds here).
"""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgefree.cli import cli
from edgefree.config import DistillConfig, ExportConfig, MagnitudePruning, ReconstructConfig, SynthesisConfig
from edgefree.errors import NoBatchNormError
from edgefree.export import export_student
from edgefree.models import Teacher, load_teacher
from edgefree.recover import distill, prune, reconstruct, synthesize
from edgefree.recover.inversion import BatchNormMatcher

USER_MODEL = Path(__file__).resolve().parent / "user_model.py"
SMALL = {"shape": (3, 32, 32)}
TINY_CLI = ["--images", "8", "--synth-batch", "8", "--iterations", "2", "--epochs", "1", "--reconstruct-images", "8",
            "--bench-runs", "2", "--quiet"]


def with_batchnorm_statistics(teacher: Teacher, seed: int = 0) -> Teacher:
    """Running statistics from a few train-mode passes on noise (untrained models have mean 0, variance 1)."""
    torch.manual_seed(seed)
    module = teacher.module.train()
    with torch.no_grad():
        for _ in range(3):
            module(teacher.spec.example_inputs(8, seed=seed)[0] * 2 + 0.5)
    module.eval()
    return teacher


def recover_and_export(teacher: Teacher, tmp_path: Path, formats=("onnx",)) -> dict:
    """Each stage on 8 images; magnitude pruning of the narrow layers only, so the exact per-row refit stays cheap."""
    dreams = synthesize(teacher, SynthesisConfig(images=8, batch_size=8, iterations=2), progress=False)
    assert dreams.images.shape == (8, *teacher.spec.shape) and dreams.stats["bn_loss_first"] > 0
    narrow = MagnitudePruning(0.5, filter_fn=lambda m, name: m.weight[0].numel() <= 600)
    pruned = prune(teacher, narrow, dreams)
    assert pruned.masks and pruned.spec == teacher.spec
    refit = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=8, batch_size=8), progress=False)
    assert refit.stats["layers"] == len(pruned.masks)
    student = distill(teacher, refit, dreams, DistillConfig(epochs=1, batch_size=8, feature_weight=1.0), progress=False)
    params = dict(student.model.named_parameters())
    assert all((params[name][~mask] == 0).all() for name, mask in pruned.masks.items())
    manifest = export_student(student.model, teacher.spec, ExportConfig(formats=formats, precisions=("fp32",)),
                              tmp_path / "artifacts", dreams, arch=teacher.name)
    assert manifest["failed"] == [] and sorted(a["format"] for a in manifest["artifacts"]) == sorted(formats)
    assert all(a["parity"]["passed"] for a in manifest["artifacts"])
    assert manifest["model"] == {"arch": teacher.name, "input": teacher.spec.to_dict()}
    return manifest


@pytest.mark.parametrize("name", [
    "mobilenet_v3_small",
    pytest.param("mobilenet_v2", marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", marks=pytest.mark.slow),
    pytest.param("resnet18", marks=pytest.mark.slow),
    pytest.param("regnet_x_400mf", marks=pytest.mark.slow),
])
def test_a_torchvision_model_goes_through_every_stage(name, tmp_path):
    teacher = with_batchnorm_statistics(load_teacher(f"torchvision:{name}", num_classes=10, input_spec=SMALL))
    assert teacher.spec.mean == (0.485, 0.456, 0.406)  # ImageNet's, where nothing says otherwise
    recover_and_export(teacher, tmp_path)


def test_a_factory_of_the_users_goes_through_every_stage_on_every_runtime(tmp_path):
    teacher = with_batchnorm_statistics(load_teacher(f"{USER_MODEL}:build", num_classes=4,
                                                     input_spec={"shape": (3, 16, 16), "mean": (0.5,) * 3,
                                                                 "std": (0.25,) * 3}))
    assert teacher.name == f"{USER_MODEL}:build" and teacher.spec.std == (0.25,) * 3
    recover_and_export(teacher, tmp_path, formats=("onnx", "openvino", "executorch"))


def _program(tmp_path: Path, model: nn.Module, dynamic: bool = True) -> Path:
    x = torch.randn(2, 3, 16, 16)
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
    path = tmp_path / "teacher.pt2"
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=shapes), path)
    return path


def _user_model(num_classes: int = 4) -> nn.Module:
    teacher = load_teacher(f"{USER_MODEL}:build", num_classes=num_classes, input_spec={"shape": (3, 16, 16)})
    return with_batchnorm_statistics(teacher).module


def test_a_program_teacher_has_real_batchnorm_layers_and_goes_through_every_stage(tmp_path):
    original = _user_model()
    teacher = load_teacher(None, _program(tmp_path, original))
    assert teacher.spec.shape == (3, 16, 16)  # from the program's example input
    x = teacher.spec.example_inputs(5)[0]
    assert torch.allclose(teacher.module(x), original(x), atol=1e-6)
    assert set(teacher.module.state_dict()) == set(original.state_dict())  # the exported layers' own names
    matcher = BatchNormMatcher(teacher.module)  # the hooks DeepInversion uses see every BatchNorm ...
    teacher.module(x)
    assert len(matcher.layers) == 2 and len(matcher.take(1.0).shape) == 0  # ... and their running statistics
    matcher.remove()
    recover_and_export(teacher, tmp_path)


def test_a_program_without_batchnorm_or_with_a_fixed_batch_is_refused(tmp_path):
    from edgefree.errors import CheckpointError

    with pytest.raises(NoBatchNormError, match="has no BatchNorm layers"):
        load_teacher(None, _program(tmp_path, nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))))
    with pytest.raises(CheckpointError, match="fixed batch of 2"):
        load_teacher(None, _program(tmp_path, _user_model(), dynamic=False))


def test_a_program_layer_whose_weight_is_computed_stays_a_graph_operation_and_is_named(tmp_path, capsys):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.bn(self.conv(x)).mean((2, 3))
            return nn.functional.linear(x, self.head.weight * 2, self.head.bias)  # a weight computed in the graph

    original = Scaled().eval()
    teacher = load_teacher(None, _program(tmp_path, original))
    assert isinstance(teacher.module.conv, nn.Conv2d) and not isinstance(getattr(teacher.module, "head", None), nn.Linear)
    err = capsys.readouterr().err
    assert err.count("Warning:") == 1 and "1 layer(s) stay graph operations (" in err and "linear" in err
    x = teacher.spec.example_inputs(3)[0]
    assert torch.allclose(teacher.module(x), original(x), atol=1e-6)


def _run(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_build_export_and_bench_of_a_users_factory_from_the_command_line(tmp_path):
    weights = tmp_path / "mine.pt"
    torch.save(_user_model(num_classes=4).state_dict(), weights)
    out = tmp_path / "out"
    _run("build", "--model", weights, "--arch", f"{USER_MODEL}:build",
         "--num-classes", "4", "--input-shape", "3x16x16", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
         "--formats", "onnx", "--precisions", "fp32", "--out", out, *TINY_CLI)
    report = json.loads((out / "report.json").read_text())
    spec = {"shape": [3, 16, 16], "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": [], "value_range": [0.0, 1.0]}
    assert report["model"]["input"] == spec and report["model"]["arch"] == f"{USER_MODEL}:build"
    assert report["config"]["input_shape"] == [3, 16, 16]
    assert json.loads((out / "artifacts" / "manifest.json").read_text())["model"]["input"] == spec
    # export and bench rebuild the student from the same source, and the replay gives the same settings
    _run("export", out, "--formats", "onnx")
    _run("bench", out, "--runs", "2")
    saved = tmp_path / "replay.toml"
    _run("build", "--config", out / "report.json", "--save-config", saved)
    assert 'input_shape = [3, 16, 16]' in saved.read_text() and "mean = [0.5, 0.5, 0.5]" in saved.read_text()


def test_build_and_export_of_a_program_from_the_command_line(tmp_path):
    program = _program(tmp_path, _user_model())
    out = tmp_path / "out"
    _run("build", "--model", program, "--num-classes", "4", "--formats", "onnx", "--precisions", "fp32",
         "--out", out, *TINY_CLI)
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["arch"] == str(program) and report["config"]["arch"] is None
    assert report["synthesis"]["bn_loss_first"] > 0
    _run("export", out, "--formats", "onnx")  # the student comes back from student.pt2: no code needed


def test_a_signal_teacher_dreams_signals_and_refits_its_conv1d_layers(tmp_path):
    """(C, L) inputs reach every stage up to the refit (1-D distillation and plots are another stage's work)."""
    factory = tmp_path / "ecg.py"
    factory.write_text("from torch import nn\n\ndef build(num_classes=10):\n    return nn.Sequential(\n"
                       "        nn.Conv1d(4, 8, 5, padding=2, bias=False), nn.BatchNorm1d(8), nn.ReLU(),\n"
                       "        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")
    teacher = with_batchnorm_statistics(load_teacher(f"{factory}:build", num_classes=3, input_spec={"shape": (4, 64)}))
    assert teacher.spec.rank == 1 and teacher.spec.mean == (0.0,) * 4
    dreams = synthesize(teacher, SynthesisConfig(images=6, batch_size=6, iterations=3, channels_last=True),
                        progress=False)
    low, high = teacher.spec.bounds()
    assert dreams.images.shape == (6, 4, 64) and (dreams.images >= low).all() and (dreams.images <= high).all()
    pruned = prune(teacher, MagnitudePruning(0.5), dreams)
    refit = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=6, batch_size=6), progress=False)
    assert refit.stats["layers"] == 2


def test_a_checkpoint_keeps_the_module_versions_some_models_read_on_load(tmp_path):
    """torchvision's MNASNet refuses a state_dict without its version metadata; ``module.`` prefixes go from both."""
    spec = {"shape": (3, 32, 32)}
    module = load_teacher("torchvision:mnasnet0_5", input_spec=spec).module
    state = module.state_dict()
    wrapped = type(state)((f"module.{k}", v) for k, v in state.items())
    wrapped._metadata = type(state._metadata)([("", {"version": 1})] + [  # as DataParallel saves it
        (f"module.{k}" if k else "module", v) for k, v in state._metadata.items()])
    torch.save(wrapped, tmp_path / "mnasnet.pt")
    loaded = load_teacher("torchvision:mnasnet0_5", tmp_path / "mnasnet.pt", input_spec=spec).module
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.values()))


def test_googlenet_is_built_without_its_auxiliary_heads():
    """Its train-mode forward (distillation's) then returns the logits alone, as it does deployed."""
    teacher = load_teacher("torchvision:googlenet", input_spec={"shape": (3, 64, 64)})
    assert not any(name.startswith("aux") for name, _ in teacher.module.named_children())
    out = teacher.module.train()(teacher.spec.example_inputs(2)[0])
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_a_source_that_names_no_normalization_is_marked_and_the_build_says_so(tmp_path):
    user = f"{USER_MODEL}:build"
    assert load_teacher(user, input_spec={"shape": (3, 16, 16)}).normalization_assumed
    assert not load_teacher(user, input_spec={"shape": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.25,) * 3}) \
        .normalization_assumed
    assert not load_teacher("resnet20-cifar").normalization_assumed  # the zoo and torchvision name theirs
    signal = f"{USER_MODEL}:signal"  # a signal's default (0 and 1) is a guess too
    assert load_teacher(signal, num_classes=2, input_spec={"shape": (6, 64)}).normalization_assumed
    assert not load_teacher(signal, num_classes=2, input_spec={"shape": (6, 64), "mean": (0.0,) * 6,
                                                              "std": (2.0,) * 6}).normalization_assumed
    weights = tmp_path / "mine.pt"
    torch.save(_user_model(num_classes=10).state_dict(), weights)
    result = CliRunner().invoke(cli, ["build", "--model", str(weights), "--arch", user, "--input-shape", "3x16x16",
                                      "--formats", "onnx", "--precisions", "fp32", "--out", str(tmp_path / "out"),
                                      *TINY_CLI])
    assert result.exit_code == 0, result.output
    assert "does not say how its inputs were normalized: assumed mean 0.485" in (tmp_path / "out" / "build.log").read_text()


def test_bench_and_export_refuse_a_factory_file_changed_since_the_build(tmp_path):
    """The factory's file builds the student again: one edited since the build would give another model."""
    import shutil

    arch = tmp_path / "mine.py"
    shutil.copy(USER_MODEL, arch)
    weights = tmp_path / "mine.pt"
    torch.save(_user_model(num_classes=10).state_dict(), weights)
    out = tmp_path / "out"
    _run("build", "--model", weights, "--arch", f"{arch}:build", "--input-shape", "3x16x16", "--mean", "0.5,0.5,0.5",
         "--std", "0.25,0.25,0.25", "--formats", "onnx", "--precisions", "fp32", "--out", out, *TINY_CLI)
    assert json.loads((out / "report.json").read_text())["model"]["arch_sha256"]
    arch.write_text(arch.read_text().replace("nn.ReLU()", "nn.ReLU6()"))  # same shapes, another model
    for command in (["export", str(out)], ["bench", str(out), "--no-emulate"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2 and "mine.py changed since the build" in result.output, result.output
    arch.unlink()
    result = CliRunner().invoke(cli, ["export", str(out)])
    assert result.exit_code == 2 and "mine.py, the Python file that builds the models of" in result.output
