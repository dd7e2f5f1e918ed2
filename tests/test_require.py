"""REQUIRE_MARKERS (tests/conftest.py): a skip of a required marker's test is a failure."""

from pathlib import Path

pytest_plugins = ["pytester"]

MODULE = """
import pytest

@pytest.mark.qemu
def test_emulated():
    pytest.skip("qemu-aarch64 is not installed")

@pytest.fixture
def server():
    pytest.skip("no sshd")

@pytest.mark.ssh
def test_flash(server):
    pass

def test_unmarked():
    pytest.skip("optional")
"""


def _project(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    qemu: emulator\n    ssh: sshd\n    slow: slow\n")
    pytester.makepyfile(test_module=MODULE)


def test_without_it_missing_prerequisites_skip(pytester, monkeypatch):
    monkeypatch.delenv("REQUIRE_MARKERS", raising=False)
    _project(pytester)
    pytester.runpytest().assert_outcomes(skipped=3)


def test_required_markers_fail_where_they_would_skip(pytester, monkeypatch):
    monkeypatch.setenv("REQUIRE_MARKERS", "qemu,ssh")
    _project(pytester)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, errors=1, skipped=1)  # the ssh fixture skips in setup: an error
    result.stdout.fnmatch_lines(["*marked ssh and could not run: Skipped: no sshd*",
                                 "*marked qemu and could not run: Skipped: qemu-aarch64 is not installed*"])


def test_an_unknown_marker_is_refused(pytester, monkeypatch):
    monkeypatch.setenv("REQUIRE_MARKERS", "qemu,podman")
    _project(pytester)
    result = pytester.runpytest()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*REQUIRE_MARKERS names markers that do not exist: podman*"])
