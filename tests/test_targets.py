"""Target profiles: every shipped profile loads and is one QEMU can emulate; bad profiles are refused."""

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefree.cli import cli
from edgefree.errors import TargetError
from edgefree.targets import QEMU_CPUS, list_targets, load_target

PROFILES = sorted((Path(__file__).resolve().parents[1] / "targets").glob("*.toml"))
REQUIRED = {"x86-64", "android-arm64", "raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "medical-sensor-a53"}


def test_every_profile_loads_with_a_runnable_description():
    targets = list_targets()
    assert REQUIRED <= set(targets)
    assert len(PROFILES) == len({p.stem for p in PROFILES}) >= len(REQUIRED)
    for name in (p.stem for p in PROFILES):
        t = load_target(name)
        assert t.name == name, f"{name}.toml names itself {t.name!r}"
        assert t.runtimes and t.precisions and t.threads >= 1 and t.deploy_hint
        if t.emulated:
            assert t.emulation_cpu in QEMU_CPUS


def test_the_arm_profiles_name_the_right_cores():
    assert load_target("raspberry-pi-4").emulation_cpu == "cortex-a72"
    assert load_target("raspberry-pi-5").emulation_cpu == "cortex-a76"
    assert load_target("medical-sensor-a53").emulation_cpu == "cortex-a53"
    jetson = load_target("jetson-orin-nano")
    assert jetson.cpu == "cortex-a78ae" and "TensorRT" in jetson.accelerator and "NOT" in jetson.accelerator


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-aarch64 not installed (apt-get install qemu-user)")
def test_the_installed_qemu_accepts_every_emulation_cpu():
    listed = set(subprocess.run(["qemu-aarch64", "-cpu", "help"], capture_output=True, text=True).stdout.split())
    for t in list_targets().values():
        if t.emulated:
            assert t.emulation_cpu in listed, f"{t.name}: qemu-aarch64 has no CPU model {t.emulation_cpu}"


@pytest.mark.parametrize("line, problem", [
    ('emulation_cpu = "cortex-a78ae"', "not a QEMU 7.2 CPU model"),
    ('threads = 0', "threads must be >= 1"),
    ('threads = 99999999999999999999', "threads must be >= 1 and <= 1024"),
    ('colour = "red"', "unknown keys"),
    ('threads = 2.5', "threads must be an integer, got 2.5"),
    ('pruning = "channel"', "pruning must be a list of strings"),
    ('isa = 64', "isa must be a string"),
    ('cpu', "missing keys \\['cpu'\\]"),
    ('deploy = "carrier-pigeon"', "deploy must be one of"),
    ('name = "p/../../escaped"', "name must be letters, digits"),
])
def test_a_broken_profile_is_refused_with_the_reason(tmp_path, monkeypatch, line, problem):
    base = {"name": '"broken"', "description": '"x"', "isa": '"aarch64"', "cpu": '"cortex-a72"',
            "emulation_cpu": '"cortex-a72"', "formats": '["onnx"]', "precisions": '["fp32"]'}
    key = line.split(" = ")[0]
    body = "\n".join(f"{k} = {v}" for k, v in base.items() if k != key) + "\n" + (line + "\n" if " = " in line else "")
    (tmp_path / "broken.toml").write_text(body)
    monkeypatch.setenv("EDGEFREE_TARGETS", str(tmp_path))
    with pytest.raises(TargetError, match=problem):
        list_targets()


def test_targets_command_lists_and_details():
    runner = CliRunner()
    listed = runner.invoke(cli, ["targets"], catch_exceptions=False)
    assert listed.exit_code == 0
    assert "cortex-a78ae (cortex-a76)" in listed.output and "medical-sensor-a53" in listed.output
    detail = runner.invoke(cli, ["targets", "raspberry-pi-4"], catch_exceptions=False)
    assert detail.exit_code == 0 and "emulation_cpu  cortex-a72" in detail.output
    unknown = runner.invoke(cli, ["targets", "pi-zero"], catch_exceptions=False)
    assert unknown.exit_code == 2 and "known targets" in unknown.output


def test_a_profile_that_is_not_utf8_or_a_targets_folder_that_is_not_there_is_named(tmp_path, monkeypatch):
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe")
    monkeypatch.setenv("EDGEFREE_TARGETS", str(tmp_path))
    with pytest.raises(TargetError, match="binary.toml is not valid UTF-8 TOML"):
        list_targets()
    monkeypatch.setenv("EDGEFREE_TARGETS", str(tmp_path / "nowhere"))
    with pytest.raises(TargetError, match="EDGEFREE_TARGETS names .*nowhere, which is not a folder"):
        list_targets()
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == 2 and result.output.startswith("Error: EDGEFREE_TARGETS"), result.output


def test_two_profiles_of_one_name_in_a_folder_are_refused_and_a_build_keeps_its_own(tmp_path, monkeypatch):
    from edgefree.targets import built_target, load_target

    body = ('name = "{}"\ndescription = "x"\nisa = "x86_64"\ncpu = "x"\nemulation_cpu = ""\nformats = ["onnx"]\n'
            'precisions = ["fp32"]\nthreads = {}\n')
    (tmp_path / "a.toml").write_text(body.format("box", 2))
    monkeypatch.setenv("EDGEFREE_TARGETS", str(tmp_path))
    recorded = {"target": load_target("box").to_dict()}  # as a build's report.json holds it
    (tmp_path / "b.toml").write_text(body.format("box", 3))
    with pytest.raises(TargetError, match="a.toml and .*b.toml are both named 'box'"):
        list_targets()
    (tmp_path / "b.toml").unlink()
    (tmp_path / "a.toml").write_text(body.format("box", 8))  # the profile edited after the build
    assert built_target(recorded).threads == 2
    monkeypatch.delenv("EDGEFREE_TARGETS")  # a new shell: the build still knows its target
    assert built_target(recorded).name == "box"
    assert built_target({"target": {"name": "x86-64"}}) == load_target("x86-64")  # a report of the name alone
