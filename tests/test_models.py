import pytest
import torch

from edgefree.errors import CheckpointError, EdgefreeError
from edgefree.models import create_model, list_models, load_checkpoint, load_model

CIFAR_RESNETS = ["resnet20-cifar", "resnet32-cifar", "resnet44-cifar", "resnet56-cifar"]


@pytest.mark.parametrize("name", CIFAR_RESNETS + ["resnet18-cifar", "digits-cnn"])
def test_every_model_runs_on_its_example_input(name):
    model = create_model(name).eval()
    assert model(*model.input_spec.example_inputs(batch=2)).shape == (2, 10)
    assert model.arch == name


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
        model = load_model(f"resnet{depth}-cifar", shared / "models" / f"resnet{depth}_cifar10jpeg.pt")
        assert not model.training
        assert model.input_spec.mean == (0.485, 0.456, 0.406)


@pytest.fixture
def weights(tmp_path):
    model = create_model("digits-cnn")
    return model, model.state_dict(), tmp_path


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": s, "epoch": 3},
                                  lambda s: {"module." + k: v for k, v in s.items()}])
def test_checkpoint_wrappers_and_prefixes(weights, wrap):
    model, state, tmp = weights
    torch.save(wrap(state), tmp / "w.pt")
    loaded = load_checkpoint(create_model("digits-cnn"), tmp / "w.pt")
    x = model.input_spec.example_inputs()[0]
    assert torch.equal(loaded(x), model.eval()(x))


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
        load_model("resnet20-cifar", tmp / "w.pt")
