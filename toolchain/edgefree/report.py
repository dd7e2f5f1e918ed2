"""The build report: ``report.json`` for machines, ``report.md`` for people.

The Markdown is a list of sections; each renders from the JSON alone and skips
itself when its stage did not run, so later stages only add a section.
"""

from __future__ import annotations

import json
from pathlib import Path


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _summary(r: dict) -> str:
    acc = r["accuracy"]
    gap = acc["teacher"] - acc["recovered"] if acc["teacher"] is not None else None
    return "\n".join([
        f"# edgefree build: {r['model']['arch']} for {r['target']['name']}",
        "",
        f"Model: `{r['model']['source']}`. Evaluated on {r['eval_data']['name'] or 'nothing (no --eval-data)'} "
        f"({r['eval_data']['images']} images). Seed {r['seed']}.",
        "",
        "## Accuracy (top-1, %)",
        "",
        _table(["teacher", "pruned", "recovered", "gap to teacher"],
               [[_pct(acc["teacher"]), _pct(acc["pruned"]), _pct(acc["recovered"]),
                 _pct(gap)]]),
    ])


def _sparsity(r: dict) -> str:
    s = r["sparsity_detail"]
    rows = [[name, layer["params"], f"{100 * layer['sparsity']:.1f}%"] for name, layer in s["layers"].items()]
    return "\n".join([
        "## Sparsity",
        "",
        f"Target {100 * r['sparsity_target']:.1f}%, achieved {100 * r['sparsity']:.2f}% "
        f"({s['zeros']:,} of {s['params']:,} conv/linear weights are zero; global magnitude ranking).",
        "",
        _table(["layer", "weights", "zero"], rows),
    ])


def _synthesis(r: dict) -> str:
    s = r["synthesis"]
    return "\n".join([
        "## Synthetic data (DeepInversion, no real images)",
        "",
        f"Recipe `{s['recipe']}`: {s['images']} images x {s['iterations']} steps "
        f"(batch {s['batch_size']}). BatchNorm-statistics loss {s['bn_loss_first']:.3g} -> "
        f"{s['bn_loss_last']:.3g}; the teacher assigns {100 * s['teacher_agreement']:.1f}% of the "
        "images their target label.",
        "",
        "![synthetic images, one row per class](synthetic.png)",
    ])


def _timing(r: dict) -> str:
    rows = [[stage, f"{seconds:.1f}"] for stage, seconds in r["seconds"].items()]
    m = r["machine"]
    return "\n".join([
        "## Time (wall seconds)",
        "",
        _table(["stage", "seconds"], rows),
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['isa']}); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
    ])


SECTIONS = [_summary, _sparsity, _synthesis, _timing]


def render_markdown(report: dict) -> str:
    rendered = (section(report) for section in SECTIONS)
    return "\n\n".join(text for text in rendered if text) + "\n"


def write_report(report: dict, out: Path) -> None:
    """Write report.md, then report.json last: report.json present means the build finished."""
    (out / "report.md").write_text(render_markdown(report))
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out / "report.json")
