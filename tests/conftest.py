"""Shared fixtures: tiny models, a tiny recovery run, and the ../shared folder when present.

``REQUIRE_MARKERS=qemu,ssh`` (markers, comma-separated) turns a skip of a test carrying one of
those markers into a failure: CI sets it for the checks it prepares, so a broken preparation
fails the run. Without it (a user's plain ``pytest``) such tests skip where their tools are missing.
"""

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

# Tests use tiny models: one intra-op thread is as fast and avoids OpenMP spin-waits
# fighting each other when several processes share the 2 cores.
torch.set_num_threads(1)


def _required() -> set[str]:
    return {m.strip() for m in os.environ.get("REQUIRE_MARKERS", "").split(",") if m.strip()}


def pytest_configure(config):
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    unknown = sorted(_required() - known)
    if unknown:
        raise pytest.UsageError(f"REQUIRE_MARKERS names markers that do not exist: {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(known))})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under REQUIRE_MARKERS, a required test that skips fails instead, with the skip's reason."""
    report = (yield).get_result()
    needed = sorted(_required() & {m.name for m in item.iter_markers()})
    if report.skipped and needed and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"REQUIRE_MARKERS={os.environ['REQUIRE_MARKERS']}: this test is marked "
                           f"{', '.join(needed)} and could not run: {reason}")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the data and exported-teacher caches of a test run apart from the user's."""
    cache = tmp_path_factory.mktemp("edgefree-cache")
    old = os.environ.get("EDGEFREE_CACHE")
    os.environ["EDGEFREE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("EDGEFREE_CACHE", None)
    else:
        os.environ["EDGEFREE_CACHE"] = old


@pytest.fixture(scope="session")
def shared():
    if not (SHARED / "models").is_dir():
        pytest.skip(f"needs the shared teachers and data in {SHARED} (absent here)")
    return SHARED


NO_BATCHNORM = f"{Path(__file__).resolve().parent / 'user_model.py'}:without_batchnorm"  # a --arch of 3x16x16


@pytest.fixture(scope="session")
def no_batchnorm():
    """A teacher without BatchNorm, which synthesis and distillation refuse."""
    from edgefree.models import load_teacher

    return load_teacher(NO_BATCHNORM, input_spec={"shape": (3, 16, 16)})


@pytest.fixture(scope="session")
def teacher():
    """The built-in default teacher (its weights ship inside the package)."""
    from edgefree.demo import default_teacher

    return default_teacher()


@pytest.fixture(scope="session")
def digits(teacher):
    from edgefree.data import load_eval_data

    return load_eval_data("digits", teacher.spec)


@pytest.fixture(scope="session")
def recovered(teacher):
    """A small but real recovery of the default teacher: (pruned, dreams, student)."""
    from edgefree.config import DistillConfig, MagnitudePruning, SynthesisConfig
    from edgefree.recover import distill, prune, synthesize

    torch.manual_seed(0)
    pruned = prune(teacher, MagnitudePruning(sparsity=0.75))
    dreams = synthesize(teacher, SynthesisConfig(images=256, batch_size=128, iterations=60, jitter=1), progress=False)
    student = distill(teacher, pruned, dreams, DistillConfig(epochs=15, batch_size=64, lr=0.01), progress=False).model
    return pruned, dreams, student


@pytest.fixture(scope="session")
def default_build(teacher, tmp_path_factory):
    """`edgefree build` of the default model with tiny budgets: a build folder with artifacts/.

    Read-only for tests: copy it before changing anything in it.
    """
    from click.testing import CliRunner

    from edgefree.cli import cli

    out = tmp_path_factory.mktemp("default-build") / "out"
    result = CliRunner().invoke(cli, ["build", "--out", str(out), "--images", "32", "--synth-batch", "32",
                                      "--iterations", "5", "--epochs", "1", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "artifacts" / "manifest.json").is_file()
    return out
