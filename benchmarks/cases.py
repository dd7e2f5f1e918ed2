"""Benchmarks made of named cases: each case run in turn, its entry merged into one results file as soon as it exists.

``run_cases(args, known, results, run, render, summary)`` checks ``args.cases`` (comma-separated)
against ``known`` and ``args.shared`` for the teachers, then for each case writes
``results`` (JSON, ``{"results": {case: entry}}``) and its ``.md`` (``render``), and prints
``summary(entry)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from provenance import describe


def case_parser(doc: str, known: list[str]) -> argparse.ArgumentParser:
    """``--shared`` (the teachers' folder), ``--cases`` (of ``known``) and ``--quiet``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--shared", type=Path, required=True, help="folder holding models/")
    p.add_argument("--cases", default=",".join(known), help=f"comma-separated, of {', '.join(known)}")
    p.add_argument("--quiet", action="store_true")
    return p


def records(entries: dict) -> list[str]:
    """The Markdown "Records" section: each case's command and provenance."""
    return ["", "## Records", ""] + [f"- {name}: `{e['record']['command']}`. {describe(e['record'])}"
                                     for name, e in entries.items()]


def run_cases(args, known: list[str], results: Path, run: Callable, render: Callable, summary: Callable) -> None:
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in known]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {', '.join(known)}")
    if not (args.shared / "models").is_dir():
        raise SystemExit(f"{args.shared / 'models'} not found: pass --shared with the shared teachers")
    entries = json.loads(results.read_text())["results"] if results.is_file() else {}
    for name in cases:
        entries[name] = run(name, args)
        results.write_text(json.dumps({"results": entries}, indent=2))
        results.with_suffix(".md").write_text(render(entries))
        print(f"{name}: {summary(entries[name])}; wrote {results.with_suffix('.md')}")
