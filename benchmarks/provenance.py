"""What every benchmark result records about the run that made it.

``run_record(__file__, argv, files)`` gives ``{"command", "argv", "commit", "dirty", "files"}``:
the command line as the script received it (``sys.argv[1:]`` unless a caller passed ``argv``),
the git commit of this checkout when the run started (and whether tracked files differed from it
then: code committed while a long run goes on is not what it ran), and the sha256 of
every teacher or data file the run read. ``benchmarks/reproduce.py --check`` parses the recorded
commands again with each script's ``parser()``.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> tuple[str, bool]:
    """(HEAD's commit, whether tracked files differ from it) of the checkout holding benchmarks/."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, capture_output=True, check=True)
    diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT)
    return head.stdout.strip(), diff.returncode != 0


_AT_START: tuple[str, bool] | None = None


def commit_at_start() -> tuple[str, bool]:
    """``git_commit()`` as it was when this process first asked (benchmarks ask as they start)."""
    global _AT_START
    if _AT_START is None:
        _AT_START = git_commit()
    return _AT_START


def command_line(script: str, argv=None) -> list[str]:
    """``["benchmarks/<script>.py", *arguments]``: the arguments from ``sys.argv`` unless given."""
    arguments = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return [f"benchmarks/{Path(script).name}", *arguments]


def run_record(script: str, argv=None, files=()) -> dict:
    """The command, argv, commit and sha256 of each file in ``files`` (teachers, data) of this run."""
    args = command_line(script, argv)
    commit, dirty = commit_at_start()
    return {"command": "python " + shlex.join(args), "argv": args, "commit": commit, "dirty": dirty,
            "files": {str(p): sha256(Path(p)) for p in files if p is not None}}


def digits_files() -> list[Path]:
    """What a build of the built-in default reads: its teacher's weights and scikit-learn's digits."""
    import sklearn.datasets

    from edgefree.demo import WEIGHTS

    return [WEIGHTS, Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"]


def describe(record: dict) -> str:
    """One markdown sentence: the commit and the files' sha256 (first 16 hex digits)."""
    text = f"Commit `{record['commit'][:12]}`" + (" with uncommitted changes" if record.get("dirty") else "")
    files = record.get("files") or {}
    if files:
        text += "; read " + ", ".join(f"`{Path(p).name}` (sha256 `{h[:16]}`)" for p, h in files.items())
    return text + "."


try:  # a benchmark imports this module as it starts: the commit of the code it runs
    commit_at_start()
except (OSError, subprocess.CalledProcessError):  # not a git checkout: run_record says so when asked
    pass
