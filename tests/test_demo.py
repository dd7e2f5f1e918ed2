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

