"""The built-in default teacher ships inside the package, exactly as its committed record describes."""

import hashlib
import json
from pathlib import Path

from edgefree.demo import WEIGHTS, default_teacher
from edgefree.evaluate import accuracy

RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "digits_teacher.json"


def test_shipped_weights_are_the_recorded_ones(digits):
    record = json.loads(RECORD.read_text())
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 1_000_000
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == record["sha256"]
    teacher = default_teacher()
    assert accuracy(teacher.module, digits, teacher.spec) == record["held_out_accuracy"]



def test_a_build_records_what_an_audit_needs_to_identify_it(default_build):
    import hashlib
    import json
    import shlex
    import sys
    from datetime import datetime

    from edgefree.demo import WEIGHTS

    report = json.loads((default_build / "report.json").read_text())
    assert report["schema"] == 1 and datetime.fromisoformat(report["built_at"]).tzinfo is not None
    assert report["model"]["sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()  # the shipped teacher too
    assert len(report["eval_data"]["sha256"]) == 64
    assert report["invocation"] == shlex.join(sys.argv)  # the process's command line (here pytest's: CliRunner)
    assert {"scikit-learn", "torch-pruning"} <= set(report["machine"]["versions"])
    md = (default_build / "report.md").read_text()
    assert "## Provenance" in md and report["model"]["sha256"] in md and report["eval_data"]["sha256"] in md
    assert "**every stage of the build**" in md


def test_a_replay_of_a_builds_report_gives_the_same_student(default_build, tmp_path):
    import hashlib
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from edgefree.cli import cli

    report = json.loads((default_build / "report.json").read_text())
    assert report["distributed"]["ranks"][0]["threads"] >= 1  # the threads that ran, which a replay needs alike
    assert Path(report["synthesis"]["cache_file"]).is_file() and Path(report["estimate"]["held_out"]["cache_file"]).is_file()
    result = CliRunner().invoke(cli, ["build", "--config", str(default_build / "report.json"), "--out",
                                      str(tmp_path / "again"), "--quiet", "--formats", "onnx", "--precisions", "fp32",
                                      "--bench-runs", "2"])
    assert result.exit_code == 0, result.output
    digest = lambda folder: hashlib.sha256((folder / "student.pt").read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "again") == digest(default_build)
