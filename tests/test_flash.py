"""`edgefree flash` against a real OpenSSH server on 127.0.0.1 (this machine plays the device)."""

import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefree.cli import cli

pytestmark = pytest.mark.ssh

SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd -D on a free port, a throwaway host key, and a client key it accepts."""
    if not SSHD.exists() or not shutil.which("ssh-keygen"):
        pytest.skip("needs OpenSSH's sshd and ssh-keygen: apt-get install -y openssh-server")
    pytest.importorskip("paramiko", reason="flashing needs paramiko (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("sshd")
    host_key, client_key = _keygen(tmp / "host_key"), _keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    port = _free_port()
    (tmp / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "StrictModes no", "UsePAM no",
        "Subsystem sftp internal-sftp", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.skip(f"sshd did not start: {server.stdout.read().decode()[-500:]}")
            time.sleep(0.1)
    host_line = f"[127.0.0.1]:{port} " + " ".join((tmp / "host_key.pub").read_text().split()[:2])
    yield {"port": port, "key": client_key, "host": f"{getpass.getuser()}@127.0.0.1", "host_line": host_line,
           "tmp": tmp}
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def built(default_build, tmp_path):
    """A copy of the default build that a test may flash (flash writes flash.json and report.md)."""
    copy = tmp_path / "build"
    shutil.copytree(default_build, copy)
    return copy


def _flash(sshd, build, remote, *extra, known_hosts=None, artifacts="onnx-fp32"):
    """`edgefree flash` to the local sshd (by default of one artifact: runtimes load slowly)."""
    known_hosts = known_hosts or sshd["tmp"] / "known_hosts"
    if not known_hosts.exists():
        known_hosts.write_text(sshd["host_line"] + "\n")
    args = ["flash", "--host", sshd["host"], "--port", str(sshd["port"]), "--key", str(sshd["key"]),
            "--known-hosts", str(known_hosts), "--remote-dir", str(remote), "--remote-python", sys.executable,
            "--runs", "20", "--warmup", "2", *(["--artifacts", artifacts] if artifacts else []), *extra, str(build)]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _current_runs(remote: Path) -> dict:
    """runner.py run straight from <remote>/current (the device is this machine)."""
    out = remote / "check.json"
    subprocess.run([sys.executable, "runner.py", "--manifest", "manifest.json", "--inputs", "inputs.npy",
                    "--runs", "1", "--warmup", "0", "--out", str(out)], cwd=remote / "current", check=True)
    return json.loads(out.read_text())["artifacts"]


def test_round_trip_copies_verifies_switches_and_runs(sshd, built, tmp_path):
    remote = tmp_path / "device"
    result = _flash(sshd, built, remote, artifacts=None)  # every artifact, with every runtime
    assert result.exit_code == 0, result.output
    record = json.loads((built / "flash.json").read_text())
    release = remote / "releases" / record["release"]
    assert os.readlink(remote / "current") == f"releases/{record['release']}"
    manifest = json.loads((release / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        for f in artifact["files"]:
            assert (release / f["path"]).stat().st_size == f["bytes"]
            assert not (release / f["packed_path"]).exists(), "packed files are removed once unpacked"
    packed = sum(f["packed_bytes"] for a in manifest["artifacts"] for f in a["files"])
    assert 0 < record["sent"]["bytes"] < record["sent"]["bundle_bytes_unpacked"]
    assert record["sent"]["bytes"] >= packed
    assert set(record["artifacts"]) == {a["name"] for a in manifest["artifacts"]}
    for name, result in record["artifacts"].items():
        assert result["max_abs_diff_vs_build_machine"] < 1e-4, name
        assert result["latency_ms"]["p50"] > 0 and result["latency_ms"]["runs"] == 20
    assert "## Flashed to" in (built / "report.md").read_text()
    assert all(not r["error"] for r in _current_runs(remote).values())
    again = tmp_path / "again"  # a later export of the build renders report.md anew: the device's section stays
    shutil.copytree(built, again)
    exported = CliRunner().invoke(cli, ["export", str(again), "--quiet"])
    assert exported.exit_code == 0, exported.output
    assert "## Flashed to" in (again / "report.md").read_text()


def _rewrite_manifest(build: Path, manifest: dict) -> None:
    """Another build's manifest, recorded in its report by sha256 as a build records it."""
    (build / "artifacts" / "manifest.json").write_text(json.dumps(manifest))
    report = json.loads((build / "report.json").read_text())
    report["files"]["artifacts/manifest.json"] = hashlib.sha256(
        (build / "artifacts" / "manifest.json").read_bytes()).hexdigest()
    (build / "report.json").write_text(json.dumps(report))


def test_interrupted_copy_never_becomes_current(sshd, built, tmp_path, monkeypatch):
    from edgefree.ssh import Device

    remote = tmp_path / "device"
    assert _flash(sshd, built, remote).exit_code == 0
    first = os.readlink(remote / "current")
    second_build = tmp_path / "second-build"  # another build: same files, another manifest
    shutil.copytree(built, second_build)
    manifest = json.loads((second_build / "artifacts" / "manifest.json").read_text())
    _rewrite_manifest(second_build, {**manifest, "note": "second"})

    real_upload, uploads = Device.upload, []

    def upload_then_die(self, local, remote_path):
        if uploads:
            raise ConnectionResetError("copy killed midway")
        uploads.append(remote_path)
        return real_upload(self, local, remote_path)

    monkeypatch.setattr(Device, "upload", upload_then_die)
    killed = _flash(sshd, second_build, remote)
    assert killed.exit_code == 2
    assert "stopped midway (ConnectionResetError: copy killed midway)" in killed.output
    assert len(uploads) == 1
    assert os.readlink(remote / "current") == first
    assert all(not r["error"] for r in _current_runs(remote).values())

    monkeypatch.setattr(Device, "upload", real_upload)
    resumed = _flash(sshd, second_build, remote)
    assert resumed.exit_code == 0, resumed.output
    record = json.loads((second_build / "flash.json").read_text())
    assert os.readlink(remote / "current") == f"releases/{record['release']}" != first
    assert record["sent"]["files_already_there"] >= 1
    second = record["release"]
    assert record["releases_removed"] == [] and len(list((remote / "releases").iterdir())) == 2

    # a third release; then the first again, keeping 2: the oldest *flashed* other one (second) goes
    third_build = tmp_path / "third-build"
    shutil.copytree(second_build, third_build)
    _rewrite_manifest(third_build, {**manifest, "note": "third"})
    assert _flash(sshd, third_build, remote).exit_code == 0
    third = json.loads((third_build / "flash.json").read_text())["release"]
    again = _flash(sshd, built, remote, "--keep-releases", "2")
    assert again.exit_code == 0, again.output
    record = json.loads((built / "flash.json").read_text())
    assert os.readlink(remote / "current") == first and record["sent"]["files"] == 0
    assert record["releases_removed"] == [second] and record["releases_prune_error"] is None
    assert sorted(p.name for p in (remote / "releases").iterdir()) == sorted([first.split("/")[1], third])


def test_unknown_host_key_needs_the_accept_flag(sshd, built, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    refused = _flash(sshd, built, tmp_path / "device", known_hosts=known_hosts)
    assert refused.exit_code == 2
    assert "--accept-new-host-key" in refused.output
    assert not (tmp_path / "device").exists()

    accepted = _flash(sshd, built, tmp_path / "device", "--accept-new-host-key", known_hosts=known_hosts)
    assert accepted.exit_code == 0, accepted.output
    assert known_hosts.read_text().split() == sshd["host_line"].split()

    again = _flash(sshd, built, tmp_path / "device", known_hosts=known_hosts)  # the recorded key is trusted
    assert again.exit_code == 0, again.output
    record = json.loads((built / "flash.json").read_text())
    assert record["sent"]["bytes"] == 0, "the same release again: nothing to send, still verified and run"
    onnx = next(a for a in json.loads((built / "artifacts" / "manifest.json").read_text())["artifacts"]
                if a["name"] == "onnx-fp32")
    assert record["sent"]["files_already_there"] == 4 + len(onnx["files"])  # + manifest, inputs, runner, unpack


def test_changed_host_key_is_refused_even_with_the_accept_flag(sshd, built, tmp_path):
    other = _keygen(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd['port']} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]))
    result = _flash(sshd, built, tmp_path / "device", "--accept-new-host-key", known_hosts=known_hosts)
    assert result.exit_code == 2
    assert "CHANGED" in result.output


def test_wrong_key_is_refused(sshd, built, tmp_path):
    stranger = _keygen(tmp_path / "stranger")
    result = _flash(sshd, built, tmp_path / "device", "--key", str(stranger))
    assert result.exit_code == 2
    assert "refused authentication" in result.output


def test_a_device_without_sftp_is_one_line(sshd, built, tmp_path, monkeypatch, capfd):
    import paramiko

    def no_sftp(client):
        raise paramiko.SSHException("Channel closed.")  # what a server without an sftp subsystem answers

    monkeypatch.setattr(paramiko.SSHClient, "open_sftp", no_sftp)
    result = _flash(sshd, built, tmp_path / "device")
    assert result.exit_code == 2 and "offers no SFTP" in result.output and "Subsystem sftp" in result.output
    assert "Traceback" not in capfd.readouterr().err


def test_no_key_and_no_agent_says_so(sshd, built, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ssh/id_* keys
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd["host_line"] + "\n")
    args = ["flash", "--host", sshd["host"], "--port", str(sshd["port"]), "--known-hosts", str(known_hosts),
            "--remote-dir", str(tmp_path / "device"), str(built)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2 and "no SSH key to log in" in result.output and "--key" in result.output


def test_unreachable_port(sshd, built, tmp_path):
    args = ["flash", "--host", sshd["host"], "--port", str(_free_port()), "--key", str(sshd["key"]),
            "--remote-dir", str(tmp_path / "device"), str(built)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2
    assert "cannot connect" in result.output and "[Errno None]" not in result.output


def test_a_port_that_is_no_ssh_server_is_one_line_without_a_traceback(built, tmp_path, capfd):
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def answer_in_http():
        connection, _ = server.accept()
        with connection:
            connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_in_http, daemon=True).start()
    args = ["flash", "--host", "me@127.0.0.1", "--port", str(server.getsockname()[1]), "--accept-new-host-key",
            "--remote-dir", str(tmp_path / "device"), str(built)]
    with server:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2 and "Is an SSH server listening there" in result.output
    assert "Traceback" not in capfd.readouterr().err


def test_missing_runtime_on_the_device(sshd, built, tmp_path):
    hidden = tmp_path / "hide" / "onnxruntime"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('onnxruntime is not installed on this device')\n")
    remote = tmp_path / "device"
    result = _flash(sshd, built, remote, "--remote-python", f"env PYTHONPATH={hidden.parent} {sys.executable}")
    assert result.exit_code == 2
    assert "cannot import onnxruntime" in result.output
    assert "-m pip install onnxruntime==" in result.output  # the version the build exported with
    assert not (remote / "current").exists()


def test_by_default_flash_sends_what_the_device_can_run_and_names_the_rest(sshd, built, tmp_path):
    hidden = tmp_path / "hide"
    for module, how in (("executorch", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"),  # a newer CPU's wheel
                        ("openvino", "raise ImportError('openvino is not installed on this device')")):
        (hidden / module).mkdir(parents=True)
        (hidden / module / "__init__.py").write_text(how + "\n")
    remote = tmp_path / "device"
    result = _flash(sshd, built, remote, "--remote-python", f"env PYTHONPATH={hidden} {sys.executable}", artifacts=None)
    assert result.exit_code == 0, result.output
    assert "cannot import executorch, openvino" in result.output or "cannot import openvino, executorch" in result.output
    assert "-m pip install" in result.output and "--artifacts" in result.output
    record = json.loads((built / "flash.json").read_text())
    assert sorted(record["artifacts"]) == ["onnx-fp32", "onnx-int8"]
    assert sorted(a["name"] for a in json.loads((remote / "current" / "manifest.json").read_text())["artifacts"]) == [
        "onnx-fp32", "onnx-int8"]


def test_build_for_another_target_is_refused(built, tmp_path):
    result = CliRunner().invoke(cli, ["flash", "--target", "android-arm64", "--host", "pi@127.0.0.1",
                                      str(built)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "was built for target 'x86-64'" in result.output


def test_a_host_names_its_user_or_none():
    import getpass

    from edgefree.errors import DeployError
    from edgefree.ssh import split_host

    assert split_host("pi@raspberrypi.local") == ("pi", "raspberrypi.local")
    assert split_host("raspberrypi.local") == (getpass.getuser(), "raspberrypi.local")
    with pytest.raises(DeployError, match="names no user before '@'"):
        split_host("@raspberrypi.local")
    with pytest.raises(DeployError, match="holds a port: pass it with --port"):
        split_host("pi@raspberrypi.local:2222")


def test_remote_python_words_are_quoted_and_tilde_means_the_device_home():
    from edgefree.ssh import Device

    device = Device.__new__(Device)  # no connection: quote() needs only the home folder
    device.home = "/home/pi"
    assert device.quote("env A='x y' ~/venv/bin/python") == "env 'A=x y' /home/pi/venv/bin/python"


def test_device_of_another_isa_is_refused_before_copying(sshd, built, tmp_path):
    report = json.loads((built / "report.json").read_text())
    from edgefree.targets import load_target

    report["target"] = load_target("raspberry-pi-4").to_dict()  # as if built for the Pi; this "device" is x86-64
    (built / "report.json").write_text(json.dumps(report))
    result = _flash(sshd, built, tmp_path / "device")
    assert result.exit_code == 2
    assert "reports machine x86_64, but target 'raspberry-pi-4' is aarch64" in result.output
    assert not (tmp_path / "device").exists()
