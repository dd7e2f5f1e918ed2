import pytest
import torch

from edgefree.errors import CheckpointError, EdgefreeError
from edgefree.models import InputSpec, create_model, list_models, load_checkpoint, load_teacher

CIFAR_RESNETS = ["resnet20-cifar", "resnet32-cifar", "resnet44-cifar", "resnet56-cifar"]


@pytest.mark.parametrize("name", CIFAR_RESNETS + ["resnet18-cifar", "digits-cnn"])
def test_every_model_runs_on_its_example_input(name):
    teacher = load_teacher(name)
    assert teacher.module(*teacher.spec.example_inputs(batch=2)).shape == (2, 10)
    assert teacher.name == name and not teacher.module.training
    assert not hasattr(teacher.module, "input_spec")  # the spec travels in the Teacher, not on the module


def test_cifar_resnet_depths_and_parameter_counts():
    # He et al. 2016, Table 6: ResNet-20 0.27 M, ResNet-56 0.85 M parameters.
    params = {n: sum(p.numel() for p in create_model(n).parameters()) for n in ("resnet20-cifar", "resnet56-cifar")}
    assert round(params["resnet20-cifar"] / 1e6, 2) == 0.27
    assert round(params["resnet56-cifar"] / 1e6, 2) == 0.85


def test_torchvision_resnets_have_a_cifar_stem():
    model = create_model("resnet50-cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert "resnet34-cifar" in list_models()


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(EdgefreeError, match="resnet20-cifar"):
        create_model("resnet21")


def test_shared_teachers_load_strictly(shared):
    for depth in (20, 56):
        teacher = load_teacher(f"resnet{depth}-cifar", shared / "models" / f"resnet{depth}_cifar10jpeg.pt")
        assert not teacher.module.training
        assert teacher.spec.mean == (0.485, 0.456, 0.406)


@pytest.fixture
def weights(tmp_path):
    teacher = load_teacher("digits-cnn")
    return teacher, teacher.module.state_dict(), tmp_path


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": s, "epoch": 3},
                                  lambda s: {"module." + k: v for k, v in s.items()}])
def test_checkpoint_wrappers_and_prefixes(weights, wrap):
    teacher, state, tmp = weights
    torch.save(wrap(state), tmp / "w.pt")
    loaded = load_checkpoint(create_model("digits-cnn"), tmp / "w.pt")
    x = teacher.spec.example_inputs()[0]
    assert torch.equal(loaded(x), teacher.module(x))


def test_corrupt_checkpoint_is_named(weights):
    _, state, tmp = weights
    torch.save(state, tmp / "w.pt")
    (tmp / "bad.pt").write_bytes((tmp / "w.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(create_model("digits-cnn"), tmp / "bad.pt")


def test_pickled_code_is_refused(tmp_path):
    import argparse  # any class outside torch's weights-only allowlist stands in for pickled code

    torch.save({"weights": torch.zeros(1), "obj": argparse.Namespace(run="rm -rf /")}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(create_model("digits-cnn"), tmp_path / "evil.pt")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(create_model("digits-cnn"), tmp_path / "nope.pt")


def test_missing_unexpected_and_mismatched_keys_are_listed(weights):
    _, state, tmp = weights
    state = dict(state)
    state.pop("6.weight")
    state["extra.weight"] = torch.zeros(1)
    state["0.0.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(state, tmp / "w.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("digits-cnn"), tmp / "w.pt")
    message = str(err.value)
    assert "1 missing keys: 6.weight" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "0.0.weight (8, 1, 3, 3) vs (32, 1, 3, 3)" in message


def test_wrong_architecture_is_caught(weights):
    _, state, tmp = weights
    torch.save(state, tmp / "w.pt")
    with pytest.raises(CheckpointError, match="does not fit architecture 'resnet20-cifar'"):
        load_teacher("resnet20-cifar", tmp / "w.pt")


def test_a_checkpoint_of_another_class_count_names_the_num_classes_to_pass(tmp_path):
    torch.save(create_model("resnet20-cifar", num_classes=3).state_dict(), tmp_path / "three.pt")
    with pytest.raises(CheckpointError, match=r"scores 3 classes and 'resnet20-cifar' was built for 10 .*pass "
                                              r"--num-classes 3"):
        load_teacher("resnet20-cifar", tmp_path / "three.pt")
    assert load_teacher("resnet20-cifar", tmp_path / "three.pt", num_classes=3).classes() == 3


def test_input_spec_for_images_and_signals():
    image = InputSpec((3, 8, 8))
    assert image.mean == (0.485, 0.456, 0.406)  # 3 channels: ImageNet's, as torchvision's models expect
    low, high = image.bounds()
    assert low.shape == (1, 3, 1, 1) and torch.allclose(image.denormalize(high), torch.ones(1, 3, 1, 1))
    signal = InputSpec((12, 100), value_range=(-1.0, 1.0))
    assert signal.mean == (0.0,) * 12 and signal.std == (1.0,) * 12 and signal.rank == 1
    x = signal.example_inputs(batch=4)[0]
    assert x.shape == (4, 12, 100) and x.min() >= -1 and x.max() <= 1
    assert [b.shape for b in signal.bounds()] == [(1, 12, 1), (1, 12, 1)]
    three_axes = InputSpec((3, 100))  # a 3-axis sensor: raw values, not an image's ImageNet normalization
    assert three_axes.mean == (0.0,) * 3 and three_axes.std == (1.0,) * 3
    two = InputSpec((2, 50), mean=(0.5, 1.0), std=(2.0, 4.0))
    raw = torch.rand(3, 2, 50)
    assert torch.allclose(two.denormalize(two.normalize(raw)), raw, atol=1e-6)
    assert InputSpec.from_dict(two.to_dict()) == two


@pytest.mark.parametrize("changes, shape, mean", [({"shape": (3, 64, 64)}, (3, 64, 64), (0.485, 0.456, 0.406)),
                                                   ({"shape": (1, 16, 16)}, (1, 16, 16), (0.5,)),
                                                   ({"mean": (0.0, 0.0, 0.0)}, (3, 32, 32), (0.0, 0.0, 0.0))])
def test_load_teacher_changes_only_the_named_input_fields(changes, shape, mean):
    arch = "digits-cnn" if shape[0] == 1 else "resnet20-cifar"
    spec = load_teacher(arch, input_spec=changes).spec
    assert spec.shape == shape and spec.mean == mean


def test_torchvision_teacher_defaults_to_imagenet_inputs():
    teacher = load_teacher("torchvision:mobilenet_v3_small", num_classes=5)
    assert teacher.spec.shape == (3, 224, 224) and teacher.spec.std == (0.229, 0.224, 0.225)
    assert teacher.name == "torchvision:mobilenet_v3_small"
