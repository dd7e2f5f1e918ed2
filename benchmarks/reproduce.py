"""Check that every results file names commands its script's current command line accepts.

Reads each ``*.json`` under ``benchmarks/results/`` (``latency/*/*/bench.json`` included), takes
every string that starts with ``python benchmarks/`` (the commands a run recorded: ``command``,
``benchmark_command``, ``commands``, ``runs``), and parses its arguments with that script's
``parser()``. Nothing runs: the check only says which recorded commands the scripts would
reject, which results files name no command at all, and, for scripts whose ``written(args)``
lists the files a command writes, which results files none of their commands could have written.

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


def parse(command: str, modules: dict):
    """``(module, parsed arguments)`` of ``command``, or ``(None, why not)`` when its script rejects it."""
    try:
        words = shlex.split(command)
    except ValueError as e:
        return None, f"not a shell command line ({e})"
    if len(words) < 2 or words[0] != "python" or not words[1].startswith("benchmarks/"):
        return None, "does not start with `python benchmarks/<script>.py`"
    script = HERE / Path(words[1]).name
    if Path(words[1]).parent != Path("benchmarks") or script.suffix != ".py" or not script.is_file():
        return None, f"no script {words[1]}"
    if script.stem not in modules:
        modules[script.stem] = _script(script.stem)
    make_parser = getattr(modules[script.stem], "parser", None)
    if make_parser is None:
        return None, f"{words[1]} has no parser() to check it with"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            args = make_parser().parse_args(words[2:])
    except SystemExit:
        return None, errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip() else "rejected"
    return modules[script.stem], args


def check(results: Path = RESULTS) -> list[str]:
    """One line per problem: a results file naming no command, a command its script rejects, or a file
    that none of its commands writes."""
    problems, modules = [], {}
    for path in sorted(results.rglob("*.json")):
        shown = path.relative_to(results)
        commands = recorded_commands(json.loads(path.read_text()))
        if not commands:
            problems.append(f"{shown}: names no `{PREFIX}...` command")
        writes = set()
        for command in commands:
            module, args = parse(command, modules)
            if module is None:
                problems.append(f"{shown}: `{command}`: {args}")
                writes = None
            elif writes is not None and hasattr(module, "written"):
                writes |= set(module.written(args))
            else:
                writes = None  # a script that does not say what it writes: nothing to compare
        if commands and writes is not None and str(shown) not in writes:
            problems.append(f"{shown}: none of its commands writes it")
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
