"""Check that every results file names commands its script's current command line accepts.

Reads each ``*.json`` under ``benchmarks/results/`` (``latency/*/*/bench.json`` included), takes
every string that starts with ``python benchmarks/`` (the commands a run recorded: ``command``,
``benchmark_command``, ``commands``, ``runs``), and parses its arguments with that script's
``parser()``. Nothing runs: the check only says which recorded commands the scripts would
reject, and which results files name no command at all.

    python benchmarks/reproduce.py --check      # exit 1 and one line per problem if any
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PREFIX = "python benchmarks/"


def recorded_commands(value) -> list[str]:
    """Every string in a results file that starts with ``python benchmarks/``, in order, once each."""
    found: list[str] = []
    if isinstance(value, str):
        found = [value] if value.startswith(PREFIX) else []
    elif isinstance(value, dict):
        found = [c for v in value.values() for c in recorded_commands(v)]
    elif isinstance(value, list):
        found = [c for v in value for c in recorded_commands(v)]
    return list(dict.fromkeys(found))


def _script(name: str):
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))  # the scripts import their siblings, as when run from benchmarks/
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def problem(command: str, modules: dict) -> str | None:
    """Why ``command`` would not be accepted, or None when its script's parser takes it."""
    try:
        words = shlex.split(command)
    except ValueError as e:
        return f"not a shell command line ({e})"
    if len(words) < 2 or words[0] != "python" or not words[1].startswith("benchmarks/"):
        return "does not start with `python benchmarks/<script>.py`"
    script = HERE / Path(words[1]).name
    if Path(words[1]).parent != Path("benchmarks") or script.suffix != ".py" or not script.is_file():
        return f"no script {words[1]}"
    if script.stem not in modules:
        modules[script.stem] = _script(script.stem)
    make_parser = getattr(modules[script.stem], "parser", None)
    if make_parser is None:
        return f"{words[1]} has no parser() to check it with"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            make_parser().parse_args(words[2:])
    except SystemExit:
        return errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip() else "rejected"
    return None


def check(results: Path = RESULTS) -> list[str]:
    """One line per problem: a results file naming no command, or a command its script rejects."""
    problems, modules = [], {}
    for path in sorted(results.rglob("*.json")):
        shown = path.relative_to(results)
        commands = recorded_commands(json.loads(path.read_text()))
        if not commands:
            problems.append(f"{shown}: names no `{PREFIX}...` command")
        for command in commands:
            why = problem(command, modules)
            if why:
                problems.append(f"{shown}: `{command}`: {why}")
    return problems


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", required=True,
                   help="parse every recorded command with its script's parser (runs nothing)")
    p.add_argument("--results", type=Path, default=RESULTS)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    problems = check(args.results)
    for line in problems:
        print(line)
    count = len(list(args.results.rglob("*.json")))
    print(f"{count} results files, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
