"""One honest config: recipes applied in Python, explicit settings win, configs replay from files."""

import dataclasses
import json
import tomllib

import pytest
from click.testing import CliRunner

from edgefree.cli import cli
from edgefree.config import (BuildConfig, ChannelPruning, MagnitudePruning, SynthesisConfig, load_config_file, recipe,
                             to_toml)
from edgefree.errors import EdgefreeError


def test_recipe_is_applied_by_the_config_itself():
    fast = BuildConfig(recipe="fast", model="m.pt", arch="resnet20-cifar")
    assert fast.synthesis == recipe("fast").synthesis and fast.distill == recipe("fast").distill
    assert BuildConfig(model="m.pt", arch="resnet20-cifar").recipe == "fast"  # the CLI's default for a model
    assert BuildConfig().recipe == "demo" and BuildConfig().synthesis == recipe("demo").synthesis
    with pytest.raises(EdgefreeError, match="unknown recipe 'turbo'"):
        BuildConfig(recipe="turbo")


def test_explicit_stage_config_wins_and_is_reported():
    mine = SynthesisConfig(images=64, iterations=3)
    config = BuildConfig(recipe="fast", synthesis=mine)
    assert config.synthesis == mine
    assert config.recipe_overrides()["synthesis"]["iterations"] == 3


def test_explicit_iterations_reach_the_first_batch_of_fast():
    synthesis = recipe("fast").synthesis.replace(iterations=2)
    assert synthesis.first_iterations == 2
    assert recipe("fast").synthesis.replace(iterations=2, first_iterations=7).first_iterations == 7


def test_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = BuildConfig(out="o", model="m.pt", arch="resnet20-cifar", eval_data="e.zip")
    assert config.out == tmp_path / "o" and config.model == tmp_path / "m.pt"
    assert config.eval_data == str(tmp_path / "e.zip") and BuildConfig(eval_data="digits").eval_data == "digits"


def test_a_stage_table_in_a_config_file_changes_only_what_it_names(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('model = "m.pt"\narch = "resnet20-cifar"\nrecipe = "fast"\n[distill]\nchannels_last = false\n'
                    '[synthesis]\niterations = 30\n[reconstruct]\nblock_steps = 5\n')
    config = BuildConfig.from_dict(load_config_file(path))
    assert config.distill == recipe("fast").distill.replace(channels_last=False)  # lr, features, bf16: fast's
    assert config.synthesis == dataclasses.replace(recipe("fast").synthesis, iterations=30, first_iterations=None)
    assert config.synthesis.first_iterations is None and config.reconstruct.images == 1024  # None: 30 steps too
    assert config.recipe_overrides() == {"synthesis": {"iterations": 30, "first_iterations": None},
                                         "reconstruct": {"block_steps": 5}, "distill": {"channels_last": False}}
    path.write_text('model = "m.pt"\narch = "resnet20-cifar"\n[distill]\nema = 0.99\n')  # the default recipe
    assert BuildConfig.from_dict(load_config_file(path)).distill == recipe("fast").distill.replace(ema=0.99)
    path.write_text('model = "m.pt"\narch = "resnet20-cifar"\nrecipe = "fast"\n[synthesis]\nmethod = "generator"\n')
    assert BuildConfig.from_dict(load_config_file(path)).synthesis == recipe("generator").synthesis  # its recipe's
    path.write_text('[synthesis]\nmethod = "generator"\nimages = 64\n')  # the built-in default's demo dreams otherwise
    assert BuildConfig.from_dict(load_config_file(path)).synthesis == recipe("generator").synthesis.replace(images=64)
    result = CliRunner().invoke(cli, ["build", "--config", str(path), "--recipe", "generator", "--save-config",
                                      str(tmp_path / "saved.toml")])  # a recipe named here replaces the tables
    assert result.exit_code == 0, result.output
    assert BuildConfig.from_dict(load_config_file(tmp_path / "saved.toml")).synthesis == recipe("generator").synthesis


def test_a_config_round_trips_through_toml_with_its_unset_settings_unset(tmp_path):
    for config in (BuildConfig(model="m.pt", arch="resnet20-cifar", synthesis=SynthesisConfig(iterations=20)),
                   BuildConfig(model="m.pt", arch="resnet20-cifar", recipe="generator",
                               synthesis=recipe("paper").synthesis)):
        assert config.synthesis.first_iterations is None
        assert BuildConfig.from_dict(tomllib.loads(to_toml(config))) == config


@pytest.mark.parametrize("values, problem", [({"recipe": ["fast"]}, "recipe must be a string"),
                                             ({"synthesis": {"method": ["generator"]}}, "method must be"),
                                             ({"export": {"formats": [1]}}, "formats must be a list of strings"),
                                             ({"mean": [0.5, "x", 0.5]}, "mean must be a list of numbers")])
def test_a_value_of_the_wrong_type_is_named(values, problem):
    with pytest.raises(EdgefreeError, match=problem):
        BuildConfig.from_dict(values)


def test_from_dict_rebuilds_nested_configs_from_json_and_toml(tmp_path):
    config = BuildConfig(recipe="fast", model=tmp_path / "m.pt", arch="resnet20-cifar", seed=3, bench=None)
    as_json = json.loads(json.dumps(config.to_dict(), default=str))
    assert BuildConfig.from_dict(as_json) == config
    (tmp_path / "b.toml").write_text(to_toml(config))
    assert BuildConfig.from_dict(load_config_file(tmp_path / "b.toml")) == config
    (tmp_path / "report.json").write_text(json.dumps({"config": as_json}, default=str))
    assert BuildConfig.from_dict(load_config_file(tmp_path / "report.json")) == config


def test_relative_paths_in_a_config_file_are_the_files_folders(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "c.toml").write_text('model = "w.pt"\narch = "nets/net.py:build"\nout = "o"\neval_data = "digits"\n'
                                   'cache = "/abs/cache"\n')
    monkeypatch.chdir(tmp_path)  # elsewhere
    values = load_config_file(folder / "c.toml")
    assert values["model"] == str(folder / "w.pt") and values["out"] == str(folder / "o")
    assert values["arch"] == f"{folder / 'nets' / 'net.py'}:build"
    assert values["eval_data"] == "digits" and values["cache"] == "/abs/cache"
    (folder / "z.toml").write_text('arch = "torchvision:resnet18"\n')
    assert load_config_file(folder / "z.toml")["arch"] == "torchvision:resnet18"


def test_cli_save_config_then_replay_with_an_explicit_option_winning(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")  # --save-config checks that the model is there, not what it holds
    first = tmp_path / "a.toml"
    result = CliRunner().invoke(cli, ["build", "--model", str(tmp_path / "m.pt"), "--arch", "resnet20-cifar",
                                      "--iterations", "2", "--seed", "5", "--save-config", str(first)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = BuildConfig.from_dict(load_config_file(first))
    assert saved.recipe == "fast" and saved.synthesis.iterations == saved.synthesis.first_iterations == 2
    second = tmp_path / "b.toml"
    result = CliRunner().invoke(cli, ["build", "--config", str(first), "--epochs", "3", "--block-steps", "50",
                                      "--save-config", str(second)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    replayed = BuildConfig.from_dict(load_config_file(second))
    assert replayed.seed == 5 and replayed.synthesis == saved.synthesis and replayed.distill.epochs == 3
    assert saved.reconstruct.block_steps == 0 and replayed.reconstruct.block_steps == 50
    assert replayed.reconstruct.images == saved.reconstruct.images
    assert replayed.model == tmp_path / "m.pt"
    third = tmp_path / "c.toml"
    result = CliRunner().invoke(cli, ["build", "--config", str(first), "--recipe", "generator", "--adversarial-steps",
                                      "10", "--save-config", str(third)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    adversarial = BuildConfig.from_dict(load_config_file(third)).distill
    assert adversarial.adversarial_steps == 10 and adversarial.adversarial_weight == 1.0


def test_cli_synthesis_options_hold_on_a_signal_under_thorough_though_equal_to_the_image_settings(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")
    saved = tmp_path / "t.toml"
    result = CliRunner().invoke(cli, ["build", "--model", str(tmp_path / "m.pt"), "--arch", "signal-cnn1d",
                                      "--recipe", "thorough", "--synth-batch", "128", "--images", "64",
                                      "--save-config", str(saved)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "# an image teacher's dreams: a 1-D signal teacher dreams" in saved.read_text()
    config = BuildConfig.from_dict(load_config_file(saved))
    assert config.synthesis_given == ("images", "batch_size")
    signal = config.for_input(1).synthesis
    assert signal == recipe("fast").synthesis.replace(batch_size=128, images=64)  # 128 is generator's too
    again = tmp_path / "again.toml"  # a recipe named on the command line replaces the file's synthesis, and its names
    result = CliRunner().invoke(cli, ["build", "--config", str(saved), "--recipe", "thorough", "--save-config",
                                      str(again)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert BuildConfig.from_dict(load_config_file(again)).for_input(1).synthesis == recipe("fast").synthesis


def test_a_users_factory_file_and_input_are_recorded_for_replay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = BuildConfig(model="m.pt", arch="models/net.py:build", input_shape=[3, 96, 96], mean=[0.5] * 3,
                         value_range=[-1, 2])
    assert config.arch == f"{tmp_path / 'models' / 'net.py'}:build"  # replays from any folder
    assert config.input_shape == (3, 96, 96) and config.input_changes() == {"shape": (3, 96, 96), "mean": (0.5,) * 3,
                                                                              "std": None, "value_range": (-1, 2)}
    assert BuildConfig.from_dict(config.to_dict()) == config
    assert BuildConfig(model="p.pt2").arch is None  # a program is its own architecture
    assert BuildConfig(model="m.pt", arch="resnet20-cifar", input_shape="3x96x96").input_shape == (3, 96, 96)
    with pytest.raises(EdgefreeError, match="input shape '3x96x' does not parse"):
        BuildConfig(model="m.pt", arch="resnet20-cifar", input_shape="3x96x")
    as_text = BuildConfig(model="m.pt", arch="x.py:build", input_shape="2x256", mean="500,100", std="144.6,36.8",
                          value_range="0,900")  # each as its option takes it, in Python and in a TOML file
    assert (as_text.input_shape, as_text.mean, as_text.std, as_text.value_range) == (
        (2, 256), (500.0, 100.0), (144.6, 36.8), (0.0, 900.0))
    assert BuildConfig.from_dict(tomllib.loads('model = "m.pt"\narch = "x.py:build"\ninput_shape = "2x256"\n'
                                               'mean = "500,100"\nstd = "144.6,36.8"\nvalue_range = "0,900"')) == as_text
    with pytest.raises(EdgefreeError, match="--mean '5,,1' does not parse"):
        BuildConfig(model="m.pt", arch="resnet20-cifar", mean="5,,1")


def test_thorough_dreams_an_image_with_the_generator_and_a_signal_as_fast():
    thorough = BuildConfig(model="m.pt", arch="resnet20-cifar", recipe="thorough")
    assert thorough.synthesis == recipe("generator").synthesis and thorough.distill.epochs == 80
    assert thorough.for_input(2) is thorough
    signal = thorough.for_input(1)
    assert signal.synthesis == recipe("fast").synthesis and signal.distill == thorough.distill
    assert signal.recipe_overrides(1) == {} and "synthesis" in signal.recipe_overrides()


def test_a_signal_build_keeps_the_synthesis_settings_given_besides_the_recipe():
    given = recipe("thorough").synthesis.replace(images=64, iterations=3)
    signal = BuildConfig(model="m.pt", arch="signal-cnn1d", recipe="thorough", synthesis=given).for_input(1)
    assert signal.synthesis == recipe("fast").synthesis.replace(images=64, iterations=3)
    assert signal.recipe_overrides(1)["synthesis"] == {"images": 64, "iterations": 3, "first_iterations": 3}
    named = BuildConfig(model="m.pt", arch="signal-cnn1d", recipe="thorough",
                        synthesis=recipe("thorough").synthesis.replace(batch_size=128), synthesis_given=["batch_size"])
    assert recipe("thorough").synthesis.batch_size == 128 != recipe("fast").synthesis.batch_size
    assert named.for_input(1).synthesis == recipe("fast").synthesis.replace(batch_size=128)  # named: kept though equal
    assert BuildConfig.from_dict(named.to_dict()) == named
    for bad in (("batch",), ("method",)):
        with pytest.raises(EdgefreeError, match="synthesis_given names synthesis settings of images, iterations"):
            BuildConfig(model="m.pt", arch="signal-cnn1d", synthesis_given=bad)
    for bad in ((1,), (["images"],)):
        with pytest.raises(EdgefreeError, match="BuildConfig.synthesis_given must be a list of strings"):
            BuildConfig(model="m.pt", arch="signal-cnn1d", synthesis_given=bad)
    own = BuildConfig(model="m.pt", arch="signal-cnn1d", recipe="thorough",
                      synthesis=recipe("generator").synthesis.replace(method="deepinversion", iterations=5))
    assert own.for_input(1) is own  # another method named: the build's own settings
    fast = BuildConfig(model="m.pt", arch="signal-cnn1d", recipe="fast")
    assert fast.for_input(1) is fast  # a recipe without signal settings
    adversarial = BuildConfig(model="m.pt", arch="signal-cnn1d", recipe="thorough",
                              distill=recipe("thorough").distill.replace(adversarial_steps=10))
    assert adversarial.for_input(2) is adversarial
    with pytest.raises(EdgefreeError, match="dreams a signal with deepinversion: use --recipe generator"):
        adversarial.for_input(1)


def test_pruning_options_next_to_a_config_change_the_files_stages(tmp_path):
    """--round-to next to a file that prunes channels sets its round_to: the file's kind and MACs target stay."""
    (tmp_path / "ch.toml").write_text('[[prune]]\nkind = "channel"\nmacs_target = 0.5\n')

    def saved(*options):
        result = CliRunner().invoke(cli, ["build", "--config", str(tmp_path / "ch.toml"), *options,
                                          "--save-config", str(tmp_path / "out.toml")])
        config = BuildConfig.from_dict(tomllib.loads((tmp_path / "out.toml").read_text())) if result.exit_code == 0 \
            else result.output
        (tmp_path / "out.toml").unlink(missing_ok=True)
        return config

    assert saved("--round-to", "4").prune == (ChannelPruning(macs_target=0.5, round_to=4),)
    assert saved("--channel-ratio", "0.3").prune == (ChannelPruning(ratio=0.3),)  # a ratio replaces the target
    assert saved("--pruning", "magnitude").prune == (MagnitudePruning(),)  # --pruning names the stages anew
    assert saved("--pruning", "channel,magnitude", "--sparsity", "0.5").prune == (  # the file's channel stage kept
        ChannelPruning(macs_target=0.5), MagnitudePruning(0.5))
    assert "--sparsity is an option of magnitude pruning, and this build runs channel pruning only" in saved(
        "--sparsity", "0.5")
