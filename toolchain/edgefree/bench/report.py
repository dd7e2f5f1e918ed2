"""bench.json -> Markdown tables, a plain-words reading of them, and a plot (bench.png).

Everything is rendered from the JSON alone, from measured numbers only. The reading says
what a dense runtime does with an unstructured-sparse student (the same work), and labels
emulated time as emulated and instruction counts as comparable only within one CPU model.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefree.bench.latency import SETTLED
from edgefree.markdown import cost_table, markdown_table

NOISE = 0.10  # repeated x86 runs agree within 10% at p50: smaller ratios are not differences
SOURCES = {"export": "export", "evaluate": "evaluate stage", "bench": "bench"}


def _kb(n) -> str:
    return f"{n / 1024:,.1f}" if n else "-"


def _key(row: dict) -> tuple[str, str]:
    return row["runtime"], row["precision"]


def _teacher_of(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {_key(r): r for r in rows if r["model"] == "teacher" and not r["error"]}


def latency_ratios(rows: list[dict]) -> dict[tuple[str, str], float]:
    """Student p50 / teacher p50 for each runtime and precision both ran on."""
    teacher = _teacher_of(rows)
    return {_key(r): r["latency_ms"]["p50"] / teacher[_key(r)]["latency_ms"]["p50"]
            for r in rows if r["model"] == "student" and not r["error"] and _key(r) in teacher}


def instruction_ratios(rows: list[dict]) -> dict[tuple[str, str], float]:
    teacher = {_key(r): r for r in rows if r["model"] == "teacher" and r.get("instructions")}
    return {_key(r): r["instructions"]["per_inference"] / teacher[_key(r)]["instructions"]["per_inference"]
            for r in rows if r["model"] == "student" and r.get("instructions") and _key(r) in teacher}


def _native_table(native: dict) -> str:
    ratios = latency_ratios(native["rows"])
    rows = []
    for r in native["rows"]:
        if r["error"]:
            rows.append([r["model"], r["runtime"], r["precision"], f"error: {r['error']}", "", "", "", "", "", ""])
            continue
        t = r["latency_ms"]
        ratio = ratios.get(_key(r)) if r["model"] == "student" else None
        ci = t.get("p50_ci95")
        rows.append([r["model"], r["runtime"], r["precision"], f"{t['p50']:.3f}", f"{t['p90']:.3f}",
                     f"{t['mean']:.3f} ± {t['std']:.3f}", f"{ratio:.2f}x" if ratio else "-",
                     "-" if r["accuracy"] is None else f"{r['accuracy']:.2f}", _kb(r["bytes"]), _kb(r["packed_bytes"]),
                     f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-", t["runs"],
                     SOURCES.get(r.get("accuracy_source"), "-") + (" (cached)" if r.get("cached") else "")])
    return markdown_table(["model", "runtime", "precision", "p50 ms", "p90 ms", "mean ± std ms", "student/teacher p50",
                   "top-1 %", "size KiB", "packed KiB", "p50 95% interval ms", "runs", "top-1 from"], rows)


def _reading(native: dict, cost: dict | None = None) -> list[str]:
    """Plain-words conclusions, each computed from the table above."""
    rows, lines = native["rows"], []
    ratios = latency_ratios(rows)
    macs = cost["student"]["macs"] / cost["teacher"]["macs"] if cost else 1.0
    if ratios and macs < 1 - NOISE:
        low, high = min(ratios.values()), max(ratios.values())
        faster = any(ratio < 1 - NOISE for ratio in ratios.values())
        lines.append(f"- Same runtime and precision, the student takes {low:.2f}x to {high:.2f}x the teacher's p50 "
                     f"time with {macs:.2f}x its multiply-adds" + (
                         ": where it is faster, that comes from fewer channels or blocks (per-layer overheads stay, "
                         "so time falls less than multiply-adds do)." if faster else "."))
        slower = sorted(f"{runtime} {precision}" for (runtime, precision), ratio in ratios.items() if ratio > 1 - NOISE)
        if slower:
            lines.append(f"- Not faster beyond the {100 * NOISE:.0f}% run-to-run band on {', '.join(slower)}: there "
                         "the per-call overhead outweighs the multiply-adds saved (a model this small, or a "
                         "runtime's fixed cost per layer), or the timing is too uncertain to tell (few runs: the "
                         "intervals in the table say how wide).")
    elif ratios:
        low, high = min(ratios.values()), max(ratios.values())
        lines.append(f"- Same runtime and precision, the student takes {low:.2f}x to {high:.2f}x the teacher's p50 "
                     "time. Its zeros are unstructured: a dense kernel multiplies them like any other weight, "
                     "so pruning alone is not expected to make it faster, and the table shows what it did. "
                     "Channel pruning (`--pruning channel`) is what makes a student faster.")
        for (runtime, precision), ratio in sorted(ratios.items()):
            if ratio < 1 - NOISE:
                lines.append(f"- {runtime} {precision}: the student measured {100 * (1 - ratio):.0f}% faster, more "
                             f"than the {100 * NOISE:.0f}% run-to-run band; the zeros do not reduce a dense kernel's "
                             "work (INT8 and fewer channels do), so re-run before relying on it.")
    capped = [f"{r['model']} {r['runtime']} {r['precision']}" for r in rows
              if not r["error"] and r["latency_ms"].get("stopped") not in (None, *SETTLED)]
    if capped:
        lines.append(f"- Timing reached its cap before the p50's interval settled on {', '.join(capped)}: those p50s "
                     "are less certain than the others (their intervals say how much): bench again on an idle "
                     "machine (`edgefree bench BUILD_DIR`).")
    teacher = _teacher_of(rows)
    for (runtime, precision), row in sorted(teacher.items()):
        fp32 = teacher.get((runtime, "fp32"))
        if precision != "int8" or not fp32:
            continue
        ratio = row["latency_ms"]["p50"] / fp32["latency_ms"]["p50"]
        why = ("integer kernels and a quarter of the weight bytes, not sparsity" if ratio < 1 - NOISE else
               "quantize/dequantize steps cost more than the integer kernels save at this size" if ratio > 1 + NOISE
               else "no difference beyond the run-to-run band")
        lines.append(f"- INT8 on {runtime}: the teacher takes {ratio:.2f}x its fp32 p50 time ({why}).")
    sizes = [(r, teacher.get(_key(r))) for r in rows if r["model"] == "student" and r["packed_bytes"]]
    for student, dense in sizes:
        if dense and dense["packed_bytes"]:
            lines.append(f"- {student['artifact']}: packed {_kb(student['packed_bytes'])} KiB vs the teacher's "
                         f"{_kb(dense['packed_bytes'])} KiB ({dense['packed_bytes'] / student['packed_bytes']:.1f}x "
                         "smaller)" + (": the student's gain is size, for storage and transfer." if macs >= 1 - NOISE
                                       else ", for storage and transfer."))
    return lines


def _emulated_section(emulated: dict, level: str) -> list[str]:
    if emulated.get("rows") is None:
        return [f"{level} arm64 (emulated)", "", f"Not run: {emulated['skipped']}."]
    ratios = instruction_ratios(emulated["rows"])
    rows = []
    for r in emulated["rows"]:
        if r["error"] or not r["instructions"]:
            rows.append([r["model"], r["runtime"], r["precision"], f"error: {r['error'] or 'no count'}", "", "", "", ""])
            continue
        ratio = ratios.get(_key(r)) if r["model"] == "student" else None
        parity = r["parity_vs_x86"] or {}
        rows.append([r["model"], r["runtime"], r["precision"], f"{r['instructions']['per_inference'] / 1e6:,.3f}",
                     f"{ratio:.3f}x" if ratio else "-",
                     f"{parity['max_abs_diff']:.2g}" if parity else "-",
                     f"{100 * parity['top1_agreement']:.0f}%" if parity else "-",
                     f"{r['emulated_latency_ms']['p50'] / 1000:.3f}"])
    cpu = emulated["cpu"]
    lines = [
        f"{level} arm64 under QEMU user-mode, CPU model `{cpu}` (emulated)",
        "",
        f"{emulated['qemu']}; {emulated['threads']} thread; {emulated['runs']} timed runs after {emulated['warmup']} "
        f"warm-up; logits of the first {emulated['parity_inputs']} evaluation input(s) compared with this "
        "machine's (x86-64) for the same artifact.",
        "",
        markdown_table(["model", "runtime", "precision", f"instructions / inference (M, {cpu})", "student/teacher",
                "max logit diff vs x86", "top-1 agreement vs x86", "p50 s (EMULATED)"], rows),
        "",
        f"Instruction counts are guest instructions of all threads during the timed runs, per inference, from "
        f"the icount QEMU plugin: they repeat run to run and compare only within the `{cpu}` model and this "
        "arm64 root. Emulated seconds are QEMU's, not a device's: they prove the artifact runs, nothing more.",
    ]
    return lines + [f"- skipped: {s}" for s in emulated.get("skipped", [])]


def _load(native: dict, machine: dict) -> str:
    load = native.get("load_average_1min")
    if not load:
        return ""
    turns = ("the teacher's rows come from the cache, so the ratio holds only as far as the load then and now "
             "agree" if (native.get("teacher_rows") or {}).get("cached") else
             "teacher and student take turns, so their ratio holds")
    return (f" Load average {load[0]:.1f} -> {load[1]:.1f} on {machine['cores']} cores: other processes move "
            f"absolute times ({turns}).")


def _budget(native: dict) -> str:
    if native.get("runs") or "min_runs" not in native:
        return f"{native['runs']} timed runs"
    return (f"timed runs until the p50's 95% interval was within ±{100 * native['p50_tolerance']:g}% of it "
            f"({native['min_runs']} to {native['max_runs']} runs, at most {native['max_seconds']:g} s each)")


def _cached(result: dict) -> str:
    export, rows = result.get("teacher_export"), (result["native"].get("teacher_rows") or {})
    if not export:
        return ""
    said = (f" The teacher's artifacts came from the cache (key {export['key']}): this bench spent "
            f"{export['seconds']:.1f} s on them." if export["cached"] else
            f" The teacher's artifacts were exported for this bench ({export['seconds']:.1f} s) and cached "
            f"(key {export['key']}).")
    if rows.get("cached"):
        said += (f" Its rows were measured on {rows['measured_at']} and taken from the cache: they were not "
                 "timed in turns with the student's.")
    return said


def _native_section(result: dict, level: str) -> list[str]:
    native, m, t = result["native"], result["machine"], result["target"]
    return [
        f"{level} Latency and accuracy per runtime: {result['model']['arch']} for {t['name']} (measured on x86-64)",
        "",
        f"Batch 1, {native['threads']} thread{'s' if native['threads'] != 1 else ''}, {_budget(native)} after {native['warmup']} warm-up, "
        + ("the student's rows timed now, the teacher's taken from the cache (below); "
           if (native.get("teacher_rows") or {}).get("cached") else "teacher and student taking turns; ")
        + (f"top-1 on {result['eval']['images']} images of {result['eval']['name']}, measured once per model and "
           "runtime: by the export (at the largest batch the runtime takes), by the build's evaluate stage for "
           "PyTorch, or by the bench (batch 1) where the table says so."
           if result["eval"]["images"] else "no evaluation data: latency only.")
        + _cached(result)
        + f" CPU: {m['cpu']} ({', '.join(m['cpu_flags'])}); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v != "not installed") + "."
        + _load(native, m),
        "",
        _native_table(native),
        "",
        *_reading(native, result.get("cost")),
    ]


def _cost_section(cost: dict, level: str) -> list[str]:
    """Multiply-adds and parameters: fewer of them is where a channel-pruned student's speed comes from."""
    return [f"{level} Cost (torch.utils.flop_counter)", "", cost_table(cost), ""]


def render(result: dict, level: str = "##", plot: str | None = "bench.png", cost: bool = True) -> str:
    """Markdown for one bench result; ``level`` is the heading depth of its sections; ``cost`` False
    leaves out the multiply-adds table (a build's report shows it under "Pruning and cost")."""
    lines = _cost_section(result["cost"], level) if cost and result.get("cost") else []
    lines += _native_section(result, level) if result.get("native") else []
    if result.get("emulated"):
        lines += ["", *_emulated_section(result["emulated"], level)]
    if plot:
        lines += ["", f"![latency, instructions and size per runtime]({plot})"]
    return "\n".join(lines).lstrip("\n") + "\n"


def _bars(ax, rows: list[dict], value, label: str) -> None:
    import numpy as np

    keys = sorted({_key(r) for r in rows}, key=lambda k: (k[1], k[0]))
    x = np.arange(len(keys))
    for offset, role in ((-0.2, "teacher"), (0.2, "student")):
        by_key = {_key(r): value(r) for r in rows if r["model"] == role}
        ax.bar(x + offset, [by_key.get(k) or 0 for k in keys], 0.4, label=role)
    crowded = len(keys) > 4  # a label per bar pair overlaps its neighbours: one tilted line each
    ax.set_xticks(x, [f"{runtime}{' ' if crowded else chr(10)}{precision}" for runtime, precision in keys],
                  fontsize=7, rotation=25 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(label)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.15)  # room for the legend above the tallest bar
    ax.legend(fontsize=7, ncol=2, loc="upper right")


def plot(result: dict, path: Path) -> None:
    """Bars per runtime/precision, teacher vs student: p50 latency, emulated instructions, packed size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    native = [r for r in (result.get("native") or {}).get("rows", []) if not r["error"]]
    emulated = [r for r in (result.get("emulated") or {}).get("rows") or [] if r.get("instructions")]
    panels = (["latency"] if native else []) + (["instructions"] if emulated else []) + ["size"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "latency":
            _bars(ax, native, lambda r: r["latency_ms"]["p50"], "p50 latency, ms (x86-64, measured)")
        elif panel == "instructions":
            _bars(ax, emulated, lambda r: r["instructions"]["per_inference"] / 1e6,
                  f"instructions / inference, M ({result['emulated']['cpu']}, emulated)")
        else:
            _bars(ax, native or emulated, lambda r: (r["packed_bytes"] or r["bytes"] or 0) / 1024,
                  "size, KiB (packed where packed)")
        ax.set_title({"latency": "latency on this machine (lower is faster)", "instructions": "work per inference "
                      "under emulation", "size": "size of what ships"}[panel], fontsize=9)
        ax.set_xlabel("runtime and precision", fontsize=8)
    fig.suptitle(f"{result['model']['arch']} for {result['target']['name']}: teacher vs student", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_bench(result: dict, out: Path) -> None:
    """bench.md and bench.png, then bench.json last (present means the bench finished)."""
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "bench.png")
    (out / "bench.md").write_text(render(result, level="##"))
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out / "bench.json")
