import json
import os
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from edgefree.cli import cli
from edgefree.models import create_model

from conftest import NO_BATCHNORM

TINY = ["--images", "64", "--iterations", "15", "--epochs", "3", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_on_a_terminal(command: list[str]) -> subprocess.CompletedProcess:
    """``command`` in its own process with standard error on a pseudo-terminal (progress bars are drawn
    only there); its standard output is piped."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    terminal, end = pty.openpty()
    fcntl.ioctl(end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new one is 0 wide: bars empty
    chunks = []

    def read():
        while True:
            try:
                data = os.read(terminal, 1 << 16)
            except OSError:  # every writer has closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=end, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        os.close(end)
        reader.join(timeout=30)
        os.close(terminal)
    return subprocess.CompletedProcess(command, done.returncode, done.stdout,
                                       b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The real command in its own process, with progress bars on a terminal: (out, completed process)."""
    out = tmp_path_factory.mktemp("build")
    command = [sys.executable, "-c", "from edgefree.cli import main; main()", "build", "--target", "android-arm64",
               "--out", str(out), *TINY[:-1]]
    done = run_on_a_terminal(command)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done


# Every line `edgefree build` may print: its own summary lines, and tqdm's bars (stderr)
EDGEFREE_LINES = re.compile("|".join([
    r"accuracy: teacher [\d.]+%  pruned [\d.]+%  (refit [\d.]+%  )?recovered [\d.]+%  \(sparsity [\d.]+%, [\d.]+x the teacher's "
    r"multiply-adds\)",
    r"dreams: the teacher labels [\d.]+% of them as their target \(mean confidence [\d.]+; BatchNorm weight [\d.]+"
    r"(, chosen by \d+ probes?)?\)(; taken from the cache)?",
    r"(measured drop -?[\d.]+ points, )?estimated drop ~[\d.]+ points \(no data used; a rough guide that can miss "
    r"large drops: docs/budgets.md\)",
    r"Warning: the estimated drop \(~[\d.]+ points\) is large: .+",
    r"  (onnx|openvino|executorch)-(fp32|int8) +[\d,]+ bytes, packed +[\d,]+ \([\d.]+x\)  max abs diff \S+  "
    r"top-1 agreement [\d.]+",
    r"(teacher|student) +\w+ +(fp32|int8) +(p50 [\d.]+ ms  top-1 [\d.]+%(  \(cached\))?|[\d,.]+ M instructions.+)",  # no error rows
    r"arm64 emulation not run: .+",
    r"macs target [\d.]+: reached [\d.]+x the teacher's multiply-adds \(channel ratio [\d.]+\)",
    r"value range assumed: \S+ to \S+ \(pass --value-range LOW,HIGH to set it\)",
    r"wrote report.md, report.json, student.pt, student-plan.json, student.pt2, synthetic.pt, synthetic.png, artifacts/, "
    r"bench.md, bench.json, bench.png in .+; runtime logs in "
    r".+build.log",
    r"[a-z][\w .:/-]*: +\d+%\|.*",  # a progress bar (tqdm: "what it does: NN%|...")
]))


def test_the_build_prints_only_its_own_lines(built):
    out, done = built
    printed = [line for line in re.split(r"[\r\n]", done.stdout + done.stderr) if line.strip()]
    foreign = [line for line in printed if not EDGEFREE_LINES.fullmatch(line.rstrip())]
    assert not foreign, foreign
    measured = {tuple(line.split()[:3]) for line in printed if re.fullmatch(r"\w+ +\w+ +\w+ +p50 .+", line.rstrip())}
    report = json.loads((out / "report.json").read_text())
    assert measured == {(r["model"], r["runtime"], r["precision"]) for r in report["bench"]["native"]["rows"]}
    assert {m for m, _, _ in measured} == {"teacher", "student"}
    assert any(line.startswith("distill:") for line in printed)  # progress bars still reach the console
    assert sum(line.startswith("dreams: the teacher labels") for line in printed) == 1
    assert "[threadpool.cpp" in (out / "build.log").read_text()  # ExecuTorch's log lines were kept, out of sight


def test_build_on_the_default_writes_everything(built):
    out, result = built
    for name in ("student.pt", "synthetic.pt", "synthetic.png", "report.json", "report.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert set(report["accuracy"]) >= {"teacher", "pruned", "reconstructed", "recovered"}
    assert all(0 <= v <= 100 for v in report["accuracy"].values())
    assert report["sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert report["synthesis"]["images"] == 64 and report["synthesis"]["iterations"] == 15
    assert {"prune", "synthesize", "reconstruct", "distill"} <= set(report["seconds"])
    assert report["reconstruct"]["images"] == 64 and report["reconstruct"]["layers"] > 0  # the demo recipe refits
    assert report["target"]["name"] == "android-arm64"
    assert "recovered" in result.stdout
    md = (out / "report.md").read_text()
    assert "## Accuracy" in md and "| teacher | pruned | reconstructed (layer-wise refit) | recovered |" in md
    assert f"of the images their target label. BatchNorm weight {report['synthesis']['bn_weight']:g}.\n" in md
    # the published synthetic set is a copy of the cached file (outside --out): an edit of one leaves the other
    from edgefree.cache import cache_dir

    published = (out / "synthetic.pt").read_bytes()
    cached = [p for p in cache_dir("dreams").glob("synthetic-*.pt") if p.read_bytes() == published]
    assert len(cached) == 1 and not cached[0].samefile(out / "synthetic.pt")
    assert json.loads((out / ".edgefree-complete").read_text())["complete"] is True


def test_student_checkpoint_loads_with_the_zoo(built):
    out, _ = built
    from edgefree.models import load_teacher

    student = load_teacher("digits-cnn", out / "student.pt").module
    zeros = sum(int((m.weight == 0).sum()) for m in student.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert zeros > 0


def test_second_build_reuses_the_synthetic_set(built):
    out, _ = built
    # one artifact is enough here: the check is that synthesis came from the cache
    result = run("build", "--out", str(out), *TINY, "--formats", "onnx", "--precisions", "fp32", "--bench-runs", "2")
    assert result.exit_code == 0
    assert json.loads((out / "report.json").read_text())["synthesis"]["cached"] is True


def test_bn_weight_takes_a_number_or_auto(tmp_path):
    result = run("build", "--out", str(tmp_path / "o"), "--bn-weight", "loud")
    assert result.exit_code == 2 and "'loud' is neither a number nor 'auto'" in result.output
    assert not (tmp_path / "o").exists()


def test_unknown_target_lists_known_ones(tmp_path):
    result = run("build", "--target", "toaster", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown target 'toaster'" in result.output and "android-arm64" in result.output


def test_model_needs_arch(tmp_path):
    torch.save(create_model("digits-cnn").state_dict(), tmp_path / "m.pt")
    result = run("build", "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "--model needs --arch" in result.output


def test_corrupt_checkpoint_via_cli(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"\x00garbage")
    result = run("build", "--model", str(tmp_path / "m.pt"), "--arch", "digits-cnn", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "cannot be read" in result.output
    assert not (tmp_path / "o" / "report.json").exists()


def test_model_without_batchnorm_via_cli(tmp_path, no_batchnorm):
    torch.save(no_batchnorm.module.state_dict(), tmp_path / "m.pt")
    result = run("build", "--model", str(tmp_path / "m.pt"), "--arch", NO_BATCHNORM, "--input-shape", "3x16x16",
                 "--out", str(tmp_path / "o"), *TINY)
    assert result.exit_code == 2 and "no BatchNorm layers" in result.output
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_finished_command_ignores_signals_while_the_interpreter_shuts_down(monkeypatch):
    import signal

    import edgefree.cli as edgefree_cli

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(edgefree_cli, "cli", lambda **_: sys.exit(0))  # a command that published and printed its result
    try:
        with pytest.raises(SystemExit):
            edgefree_cli.main()
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in saved)  # a CI timeout now cannot turn it to 143
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_listing_commands():
    assert "resnet56-cifar" in run("models").output
    assert "android-arm64" in run("targets").output


def test_the_dreams_line_names_the_share_labelled_and_how_the_batchnorm_weight_was_chosen():
    from edgefree.cli.build import dreams_line

    base = {"teacher_agreement": 0.865, "teacher_confidence": 0.71, "bn_weight": 0.01}
    assert dreams_line(base).endswith("86.5% of them as their target (mean confidence 0.71; BatchNorm weight 0.01)")
    probed = dreams_line({**base, "bn_weight_probes": [{}, {}, {}]})
    assert probed.endswith("BatchNorm weight 0.01, chosen by 3 probes)")


def test_the_report_names_the_batchnorm_weight_and_each_probe_that_chose_it():
    from edgefree.report import _bn_weight

    assert _bn_weight({"bn_weight": 10.0, "bn_weight_probes": None}) == "BatchNorm weight 10."
    probes = [{"bn_weight": 10.0, "teacher_agreement": 0.34}, {"bn_weight": 3.0, "teacher_agreement": 0.93}]
    line = _bn_weight({"bn_weight": 3.0, "bn_weight_probes": probes})
    assert line.startswith("BatchNorm weight 3, chosen by probes") and line.endswith("10: 34%, 3: 93%.")
    assert _bn_weight({"bn_weight": None}) == ""  # dreams that recorded no weight: the sentence is left out


def test_progress_bars_are_drawn_only_on_a_terminal(monkeypatch):
    from edgefree.cli.output import progress_bars

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert progress_bars(quiet=False) and not progress_bars(quiet=True)
    monkeypatch.setattr(sys, "stderr", Stream(False))  # a log file or a pipe: no redraws in it
    assert not progress_bars(quiet=False)


def test_a_reader_that_went_away_ends_the_command_quietly():
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # `edgefree targets | head -1` once head has gone
    done = subprocess.run([sys.executable, "-c", "from edgefree.cli import main; main()", "targets"], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 141 and done.stderr == "", done.stderr  # 128 + SIGPIPE, nothing about paths


def test_the_cache_command_shows_each_folder_and_clears_only_what_edgefree_wrote(tmp_path, monkeypatch):
    cache, elsewhere = tmp_path / "cache", tmp_path / "disk"
    monkeypatch.setenv("EDGEFREE_CACHE", str(cache))
    monkeypatch.delenv("EDGEFREE_ARM64_HOME", raising=False)
    (cache / "dreams").mkdir(parents=True)
    (cache / "dreams" / "synthetic-0123456789abcdef.pt").write_bytes(b"x" * 2500)
    (cache / "dreams" / "notes.txt").write_text("the user's")  # a file of the user's in a cache folder
    (cache / "data").mkdir()
    (cache / "data" / "train.csv").write_text("the user's")
    (cache / "arm64" / "usr").mkdir(parents=True)
    (cache / "arm64" / "usr" / "python3").write_bytes(b"y" * 10)
    (cache / "arm64" / "usr").chmod(0o555)  # a root's read-only folder
    (elsewhere / "onnxruntime-1.0" / "fp32-1t").mkdir(parents=True)  # tables kept on another disk, linked
    (elsewhere / "onnxruntime-1.0" / "fp32-1t" / "a.json").write_text("{}")
    (cache / "latency").symlink_to(elsewhere, target_is_directory=True)

    shown = run("cache").output
    assert re.search(r"^dreams\s+1\s+2\.5 KB", shown, re.M) and re.search(r"^data\s+0\s+0 B", shown, re.M)
    assert re.search(r"^arm64\s+1\s+10 B", shown, re.M) and re.search(r"^latency\s+1\s+2 B", shown, re.M)
    cleared = run("cache", "clear")
    assert cleared.exit_code == 0 and "freed 2.5 KB" in cleared.output, cleared.output
    assert not (cache / "dreams" / "synthetic-0123456789abcdef.pt").exists()
    assert (cache / "dreams" / "notes.txt").is_file() and (cache / "data" / "train.csv").is_file()
    assert (cache / "latency").is_symlink() and list(elsewhere.iterdir()) == []  # emptied where it lives
    assert (cache / "arm64" / "usr" / "python3").is_file()

    monkeypatch.setenv("EDGEFREE_ARM64_HOME", str(cache / "arm64"))
    refused = run("cache", "clear", "arm64")
    assert refused.exit_code == 2 and "remove it yourself" in refused.output
    monkeypatch.delenv("EDGEFREE_ARM64_HOME")
    assert run("cache", "clear", "arm64").exit_code == 0 and list((cache / "arm64").iterdir()) == []
    unknown = run("cache", "clear", "models")
    assert unknown.exit_code == 2 and "'models' is not one of" in unknown.output
