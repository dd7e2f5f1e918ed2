"""The build report: ``report.json`` for machines, ``report.md`` for people.

The Markdown is a list of sections; each renders from the JSON alone and skips
itself when its stage did not run, so later stages only add a section.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefree.markdown import cost_table, markdown_table, percent


def _inputs(r: dict) -> str:
    """What the model takes, in words: "signals" (C x L) or "images"."""
    return "signals" if len(r["model"]["input"]["shape"]) == 2 else "images"


def _summary(r: dict) -> str:
    acc = r["accuracy"]
    gap = acc["teacher"] - acc["recovered"] if acc["teacher"] is not None else None
    return "\n".join([
        f"# edgefree build: {r['model']['arch']} for {r['target']['name']}",
        "",
        f"Model: `{r['model']['source']}`. "
        + (f"Evaluated on {r['eval_data']['name']} ({r['eval_data']['images']} {_inputs(r)})."
           if r['eval_data']['name'] else "Not evaluated (no --eval-data): the estimate below is the only accuracy figure.")
        + f" Seed {r['seed']}.",
        "",
        "## Accuracy (top-1, %)",
        "",
        markdown_table(["teacher", "pruned", "reconstructed (layer-wise refit"
                        + (" + block-wise)" if r.get("reconstruct", {}).get("blocks") else ")"), "recovered", "gap to teacher"],
               [[percent(acc["teacher"]), percent(acc["pruned"]), percent(acc.get("reconstructed")), percent(acc["recovered"]),
                 percent(gap)]]),
        *(["", f"On {r['eval_data']['images']} {_inputs(r)}, one of them is {100 / r['eval_data']['images']:.2f} points."]
          if r["eval_data"].get("images") else []),
    ])


def _estimate(r: dict) -> str | None:
    e = r.get("estimate")
    if not e:
        return None
    f, held, acc = e["fit"], e["held_out"], r.get("accuracy") or {}
    measured = {name: None if acc.get("teacher") is None or acc.get(name) is None else acc["teacher"] - acc[name]
                for name in ("reconstructed", "recovered")}
    rows = [[name, f"~{e[name]['drop']:.1f}", percent(measured[name]),
             f"{e[name]['features']['disagree']:.1f}", f"{e[name]['features']['disagree_hard']:.1f}",
             f"{e[name]['features']['disagree_mix']:.1f}", f"{e[name]['features']['kl']:.3f}"]
            for name in ("reconstructed", "recovered") if name in e]
    lines = ["## Accuracy drop: estimated without data" + (", and measured" if measured["recovered"] is not None else ""),
             "",
             markdown_table(["student", "estimated drop (points)", "measured drop (points)", "disagrees with teacher %",
                             "on harder views %", "on mixed dreams %", "KL"], rows), "",
             f"Measured against the teacher on {held['images']} held-out dreams (seed {held['seed']}) that no stage "
             f"trained or refit on; the mapping ({', '.join(f['features'] or [])}) was fitted on {f['students']} "
             f"students{_of_architectures(f)} whose real drop was measured (`benchmarks/fidelity.py` in edgefree's "
             "repository, its results in `benchmarks/results/fidelity.md`). A rough guide: it has under-estimated "
             "large drops of fully distilled compact students, and over-estimated small ones (docs/budgets.md says how "
             "far it holds)."]
    if measured["recovered"] is not None:
        off = e["recovered"]["drop"] - measured["recovered"]
        lines.append(f"The measured drop, on the evaluation data, is the figure to trust: here the estimate read "
                     f"{abs(off):.1f} points {'high' if off > 0 else 'low'}.")
    lines += [f"- **{w}**" for w in e["warnings"]]
    return "\n".join(lines)


def _of_architectures(fit: dict) -> str:
    names = fit.get("architectures")
    return f" of {len(names)} architectures ({', '.join(names)})" if names else ""


def _budget_heading(limit: float) -> str:
    return f"## Budget: an estimated drop of at most {limit:g} point{'' if limit == 1 else 's'}"


def _measured_verdict(r: dict, limit: float) -> str:
    """What the evaluation data says of the budget, where there was any."""
    measured = (r.get("estimate") or {}).get("measured_drop")
    if measured is None:
        return ""
    return (f" On the evaluation data the recovered student lost {measured:.2f} points: the budget is "
            f"**{'met' if measured <= limit else 'missed'}** there.")


def _budget(r: dict) -> str | None:
    b, limit = r.get("budget"), r["config"].get("max_drop")
    if not b and limit is not None and r.get("estimate"):  # a latency target's widths, checked rather than searched
        drop = r["estimate"]["recovered"]["drop"]
        return "\n".join([_budget_heading(limit), "",
                          "Checked, not searched: the latency target chose every channel width (`--pruning "
                          "channel,magnitude` would search a sparsity on them). The recovered student is estimated at "
                          f"~{drop:.1f} points: the budget is **{'met' if drop <= limit else 'missed'}**."
                          + _measured_verdict(r, limit)])
    if not b:
        return None
    rows = [[f"{c['value']:g}", ("too mild: removes no channel" if c.get("too_mild") else "unreachable")
             if c["estimated_drop"] is None else f"~{c['estimated_drop']:.1f}",
             f"{c['seconds']:.1f}",
             "yes" if c["value"] == b["chosen"] else ""] for c in b["candidates"]]
    verdict = (f"chose {b['knob']} {b['chosen']:g}, the strongest candidate estimated within the budget" if b["met"] else
               f"NO candidate was estimated within the budget; built the closest, {b['knob']} {b['chosen']:g} "
               f"(~{b['estimated_drop']:.1f} points)")
    return "\n".join([_budget_heading(b["max_drop"]), "",
                      f"Searched the {b['knob']} with cheap candidates (prune, layer-wise refit on a few dreams, or one "
                      f"short distillation epoch where the recipe has no refit, then estimate) in {b['seconds']:.0f} s: "
                      f"{verdict}; the build then recovered it fully." + _measured_verdict(r, b["max_drop"]), "",
                      markdown_table([b["knob"], "estimated drop (cheap candidate)", "seconds", "chosen"], rows)])


def _pruning(r: dict) -> str:
    c, p = r["cost"], r["pruning"]
    plan, narrowed = p["plan"], p.get("widths")
    magnitude = any(stage["kind"] == "magnitude" for stage in p["stages"])
    lines = ["## Pruning and cost", "", cost_table(c, r["sparsity_detail"]["zeros"] if magnitude else 0), ""]
    for stage in p["stages"]:
        if stage["kind"] == "channel":
            widths = ("widths per layer group for a latency target" if p.get("ratio") is None
                      else f"{100 * p['ratio']:.1f}% of each prunable layer's channels removed")
            blocks = plan["removed_blocks"]
            lost = ("no conv/linear layer lost output channels" if narrowed == {} else
                    f"{len(narrowed)} conv/linear layers lost output channels (below; the layers after them lose the "
                    "matching inputs)" if narrowed is not None else  # a report written without the widths
                    f"{len({name for name, _op, _idxs in plan['channels']})} modules lost channels")
            lines.append(f"- Channel pruning ({stage['importance']} importance, {widths}, multiples of "
                         f"{stage['round_to']}): {lost} and {len(blocks)} residual block"
                         f"{' was' if len(blocks) == 1 else 's were'} removed"
                         + (f" ({', '.join(blocks)})" if blocks else "")
                         + ". The bench measures what the fewer multiply-adds buy on each runtime.")
            if narrowed:
                lines += ["", markdown_table(["layer", "teacher channels", "student channels"],
                                             [[name, f"{a:,}", f"{b:,}"] for name, (a, b) in narrowed.items()])]
        else:
            lines.append(f"- Magnitude pruning: target {100 * stage['sparsity']:.1f}% of the conv/linear weights, "
                         f"achieved {100 * r['sparsity']:.2f}%. The zeros shrink the packed artifacts; dense "
                         "runtimes still compute them.")
    latency = r.get("latency_target")
    if latency:
        measured = latency["measured_ratio"]
        verdict = (f"not measured ({latency.get('unmeasured') or 'no bench'})" if measured is None else
                   f"measured {measured:.2f}x: {'met' if latency['met'] else 'MISSED'}")
        lines.append(f"- Latency target {latency['target_ratio']:.2f}x the teacher's {latency.get('measured_as', 'p50')} on "
                     f"{latency['runtime']} "
                     f"{latency['precision']}: predicted {latency['predicted_ratio']:.2f}x from per-layer tables "
                     f"({latency['table']}"
                     + ("; every entry from the cache, measured earlier for this runtime, precision and CPU model"
                        if latency.get("table_entries_measured_now") == 0 else "") + ")"
                     + (f", {latency['chosen_ratio']:.2f}x measured whole when chosen "
                                                f"({latency['searches']} search{'es' if latency['searches'] != 1 else ''})" if latency.get("chosen_ratio") else "")
                     + f"; after recovery {verdict}.")
    return "\n".join(lines)


def _sparsity(r: dict) -> str | None:
    """Zeros per layer, after magnitude pruning (a channel-only build's few zeros are the weights' own)."""
    s = r["sparsity_detail"]
    if not s["zeros"] or not any(stage["kind"] == "magnitude" for stage in r["pruning"]["stages"]):
        return None
    rows = [[name, layer["params"], f"{100 * layer['sparsity']:.1f}%"] for name, layer in s["layers"].items()]
    return "\n".join([
        "## Sparsity",
        "",
        f"Target {100 * r['sparsity_target']:.1f}%, achieved {100 * r['sparsity']:.2f}% "
        f"({s['zeros']:,} of {s['params']:,} conv/linear weights are zero; "
        f"{_scope(r)} magnitude ranking)."
        + (" The masks remove exactly the target; the zeros beyond it are weights the layer-wise refit set "
           "to zero (those of an input that is zero on every dream, such as a channel no dream switches on)."
           if r["sparsity"] > r["sparsity_target"] + 1e-4 and (r["config"].get("reconstruct") or {}).get("images")
           else ""),
        "",
        markdown_table(["layer", "weights", "zero"], rows),
    ])


def _scope(r: dict) -> str:
    stage = next(s for s in r["pruning"]["stages"] if s["kind"] == "magnitude")
    return "per-layer" if stage.get("scope") == "layer" else "global"


def _bn_weight(s: dict) -> str:
    """The BatchNorm weight of synthesis, and the probes that chose it (``--bn-weight auto``), in one sentence."""
    if s.get("bn_weight") is None:
        return ""
    probes = s.get("bn_weight_probes")
    if not probes:
        return f"BatchNorm weight {s['bn_weight']:g}."
    trail = ", ".join(f"{p['bn_weight']:g}: {100 * p['teacher_agreement']:.0f}%" for p in probes)
    return (f"BatchNorm weight {s['bn_weight']:g}, chosen by probes (weight: share of a probe batch the teacher "
            f"labelled as its target): {trail}.")


def _synthesis(r: dict) -> str:
    s = r["synthesis"]
    if s.get("method") == "generator":
        title, made = ("a generator trained on the teacher", f"a generator trained {s['iterations']} steps of {s['batch_size']} "
                       f"{_inputs(r)}, drawing {s['images']} new {_inputs(r)} per distillation epoch")
    else:
        title, made = "DeepInversion", (f"{s['images']} {_inputs(r)} x {s['iterations']} steps "
                                        f"(batch {min(s['batch_size'], s['images'])})")
    if s.get("cached"):
        made += ", taken from the cache (the same teacher, settings and seed dreamed them before)"
    changed = "; ".join(f"{stage} " + ", ".join(f"{k} {v}" for k, v in diff.items())
                        for stage, diff in (r.get("recipe_overrides") or {}).items())
    weight = _bn_weight(s)
    return "\n".join([
        f"## Synthetic data ({title}, no real {_inputs(r)})",
        "",
        f"Recipe `{s['recipe']}`" + (f" (changed: {changed})" if changed else "") + f": {made}. BatchNorm-statistics loss {s['bn_loss_first']:.3g} -> "
        f"{s['bn_loss_last']:.3g}; the teacher assigns {100 * s['teacher_agreement']:.1f}% of the "
        f"{_inputs(r)} their target label." + (f" {weight}" if weight else ""),
        "",
        f"![synthetic {_inputs(r)}, one row per class](synthetic.png)",
    ])


def _recovery(r: dict) -> str:
    """What the refit and the distillation did, in the words of their settings."""
    refit, d = r["reconstruct"], r["distill"]
    losses = d.get("loss_per_epoch") or []
    lines = ["## Recovery (on the synthetic data only)", ""]
    if refit.get("images"):
        blocks = refit.get("blocks")
        lines.append(f"- Layer-wise refit: the kept weights of {refit['layers']} conv/linear layers solved by least "
                     f"squares to give the teacher's layer outputs on {refit['images']} {_inputs(r)} "
                     f"({refit['seconds']:.1f} s)" + (f"; then {blocks['count']} blocks trained {refit['block_steps']} "
                                                      "steps each to give the teacher's block outputs" if blocks else "")
                     + ".")
    else:
        lines.append("- No layer-wise refit (reconstruct images 0).")
    lines.append(f"- Distillation: {d['epochs']} epochs at learning rate {d['lr']:g} (batch {d['batch_size']}), the "
                 f"student trained to match the teacher's softened outputs (temperature {d['temperature']:g})"
                 + (f" and its BatchNorm outputs (weight {d['feature_weight']:g})" if d.get("feature_weight") else "")
                 + ", the student's BatchNorm statistics frozen at the teacher's"
                 + (f"; loss {losses[0]:.3g} in the first epoch, {losses[-1]:.3g} in the last" if losses else "")
                 + f" ({d['seconds']:.1f} s).")
    return "\n".join(lines)


def _terms(r: dict) -> str:
    return "\n".join(["## Terms", "",
                      "- *dreams*: synthetic inputs made from the teacher alone (its BatchNorm statistics); no "
                      "training or evaluation data is read to make them.",
                      "- *pruned*: the teacher with weights or channels removed, before any repair; *reconstructed*: "
                      "after the layer-wise refit; *recovered*: after distillation, the student written out.",
                      "- *gap* and *drop*: top-1 points the student loses against the teacher.",
                      "- *p50*: the median latency of one inference; *parity*: an exported file's outputs checked "
                      "against PyTorch's; *packed*: a file with its zeros stored as a bitmask (`.efpk`).",
                      "- *KL*: how far the student's output probabilities are from the teacher's (0: the same)."])


def _smaller(dense: int | None, packed: int) -> str:
    return f"{dense / packed:.1f}x" if dense else "-"


def _export(r: dict) -> str | None:
    m = r.get("export")
    if not m:
        return None
    dense_fp32 = {a["format"]: a["bytes"] for a in m["artifacts"] if a["precision"] == "fp32"}
    rows = [[a["name"], a["runtime"], f"{a['bytes']:,}", f"{a['packed_bytes']:,}",
             _smaller(a["bytes"], a["packed_bytes"]), _smaller(dense_fp32.get(a["format"]), a["packed_bytes"]),
             f"{a['parity']['max_abs_diff']:.2g}", f"{a['parity']['top1_agreement']:.4f}", a["parity"]["rule"],
             percent(a["accuracy"])] for a in m["artifacts"]]
    ref, shape = m["reference"], "x".join(str(d) for d in m["model"]["input"]["shape"])
    lines = [
        "## Artifacts (artifacts/manifest.json)",
        "",
        f"Each artifact takes a normalized float32 tensor of shape 1x{shape}. Parity: its logits against the "
        f"PyTorch student's on {m['artifacts'][0]['parity']['images'] if m['artifacts'] else 0} {ref['inputs']} "
        f"{_inputs(r)}; accuracy on {ref['images']} {ref['inputs']} {_inputs(r)} (PyTorch student: "
        f"{percent(ref['accuracy'])}).",
        "",
        markdown_table(["artifact", "runtime", "bytes", "packed bytes", "packed vs its own bytes: x smaller",
                        "packed vs the student's dense fp32 file of its format: x smaller",
                "max abs diff", "top-1 agreement", "gate", "accuracy %"], rows),
        "",
        f"INT8 artifacts were calibrated on {m['calibration']['images']} synthetic {_inputs(r)}, no real data, and "
        "are gated on top-1 agreement with the fp32 student.",
    ]
    for a in m["artifacts"]:
        default = a["parity"].get("default_precision")
        if default:
            lines.append(f"{a['name']} at OpenVINO's default precision on this CPU ({default['hint']}): max abs diff "
                         f"{default['max_abs_diff']:.2g}, top-1 agreement {default['top1_agreement']:.4f}.")
    lines += ["", "Packed files (`.efpk`) store the pruned zeros as a bitmask, the rest lzma-compressed; rebuild each "
              "file on the device with `python unpack.py FILE.efpk FILE` (edgefree's `edgefree/export/unpack.py`, a "
              "standalone script of the standard library and numpy that `edgefree flash` sends with the artifacts; it "
              "checks the sha256). The runtime "
              "loads the dense file and computes every zero: unstructured sparsity saves storage and transfer, "
              "not inference time; fewer channels (`--pruning channel`) save inference time."]
    if m["failed"]:
        lines += ["", "Not built:", ""] + [f"- {f['name']} ({f['stage']}): {f['error']}" for f in m["failed"]]
    return "\n".join(lines)


def _bench(r: dict) -> str | None:
    if not r.get("bench"):  # the bench stage's tables, reading and plot (bench.png beside report.md)
        return None
    from edgefree.bench.report import render

    return render(r["bench"], level="##", plot="bench.png", cost=False).rstrip()


def _artifact_steps(stage: str, manifest: dict) -> list[list]:
    rows = []
    for a in manifest["artifacts"]:
        spent = a.get("seconds")
        if isinstance(spent, dict):  # export, parity, top-1 and packing of one artifact
            rows.append([stage, a["name"], f"{spent['total']:.1f}", ", ".join(
                f"{step} {spent[step]:.1f}" for step in ("export", "parity", "accuracy", "pack") if step in spent)])
    return rows


def sub_steps(r: dict) -> list[list]:
    """``[stage, sub-step, seconds, detail]`` rows: export per artifact, the teacher's export, bench per runtime."""
    rows = _artifact_steps("export", r["export"]) if r.get("export") else []
    bench = r.get("bench") or {}
    teacher = bench.get("teacher_export")
    if teacher and teacher["cached"]:
        rows.append(["export-teacher", "all artifacts", f"{teacher['seconds']:.1f}", f"from the cache ({teacher['key']})"])
    elif teacher:
        rows += _artifact_steps("export-teacher", json.loads(Path(teacher["manifest"]).read_text()))
    native = bench.get("native") or {}
    for step, seconds in (native.get("seconds") or {}).items():
        detail = "opening every artifact" if step == "open" else (
            "latency and top-1" if _remeasured(native, step) else "latency")
        rows.append(["bench", step, f"{seconds:.1f}", detail])
    if native.get("teacher_rows", {}).get("cached"):
        rows.append(["bench", "teacher rows", "0.0", f"from the cache (measured {native['teacher_rows']['measured_at']})"])
    return rows


def _remeasured(native: dict, step: str) -> bool:
    return any(f"{r['model']} {r['runtime']} {r['precision']}" == step and r.get("accuracy_source") == "bench"
               for r in native["rows"])


def rerun_seconds(report: dict, stages: dict[str, float | None]) -> dict:
    """``report`` with each stage's wall seconds in ``stages`` those of a later command (``edgefree export`` or
    ``bench`` on the build folder) that ran it again, in that order; None: the stage's outputs were removed."""
    timed = {k: v for k, v in report["seconds"].items() if k not in stages}
    timed.update({stage: round(seconds, 2) for stage, seconds in stages.items() if seconds is not None})
    later = [s for s in report.get("rerun", []) if s not in stages]
    return {**report, "seconds": timed, "rerun": later + [s for s, seconds in stages.items() if seconds is not None]}


def _timing(r: dict) -> str:
    later = set(r.get("rerun", ()))
    command = {"export-teacher": "bench"}  # the command that runs a stage again, where not its namesake
    rows = [[f"{stage} (`edgefree {command.get(stage, stage)}`, after the build)" if stage in later else stage,
             f"{seconds:.1f}"] for stage, seconds in r["seconds"].items()]
    total = sum(s for k, s in r["seconds"].items() if k not in later)
    rows.append(["**every stage of the build**" if not later else "**the build's stages not run again since**",
                 f"**{total:.1f}**"])
    steps = sub_steps(r)
    m = r["machine"]
    return "\n".join([
        "## Time (wall seconds)",
        "",
        markdown_table(["stage", "seconds"], rows),
        "",
        *([markdown_table(["stage", "sub-step", "seconds", "of which"], steps), ""] if steps else []),
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['isa']}); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
    ])


def _flashed(build_dir: Path | None) -> dict:
    """``{"flash": ...}`` from ``build_dir``'s flash.json (written by ``edgefree flash``), or nothing."""
    path = Path(build_dir) / "flash.json" if build_dir is not None else None
    try:
        return {"flash": json.loads(path.read_text())} if path is not None and path.is_file() else {}
    except (OSError, ValueError):  # a damaged record: the section is left out, the file left to the user
        return {}


def _flash(r: dict) -> str | None:
    f = r.get("flash")  # added by `edgefree flash` (from flash.json); absent until a device ran the build
    if not f:
        return None
    rows = [[name, f"{a['latency_ms']['p50']:.3f}", f"{a['latency_ms']['p90']:.3f}", a["top1"],
             "-" if a["max_abs_diff_vs_build_machine"] is None else f"{a['max_abs_diff_vs_build_machine']:.2g}"]
            for name, a in f["artifacts"].items()]
    sent, dev, run = f["sent"], f["device"], f["run"]
    modules = ", ".join(f"{k} {v}" for k, v in dev["modules"].items())
    return "\n".join([
        f"## Flashed to {f['host']} ({f['flashed_at']})",
        "",
        f"Release `{f['release']}` is `{f['current']}` on a {dev['machine']} device (Python {dev['python']}, "
        f"{modules}). Sent {sent['files']} file(s), {sent['bytes']:,} bytes (the bundle unpacked: "
        f"{sent['bundle_bytes_unpacked']:,} bytes; {sent['files_already_there']} file(s) were already there); "
        f"every file sha256-checked on the device; {f['seconds']['total']:.1f} s in all.",
        "",
        f"Measured on the device: batch 1, {run['threads']} thread{'s' if run['threads'] != 1 else ''}, {run['runs']} runs after {run['warmup']} "
        "warm-up; the logits of one input compared with the build machine's.",
        "",
        markdown_table(["artifact", "p50 ms", "p90 ms", "top-1", "max logit diff vs build machine"], rows),
    ])


def _provenance(r: dict) -> str:
    model, data = r["model"], r["eval_data"]
    rows = [["built", r.get("built_at") or "not recorded"],
            ["command", f"`{r['invocation']}`" if r.get("invocation") else "not recorded"],
            ["teacher weights (sha256)", model.get("sha256") or "not recorded"],
            *([["teacher code (sha256)", model["arch_sha256"]]] if model.get("arch_sha256") else []),
            ["evaluation data (sha256 of its values and labels)", data.get("sha256") or "none"],
            ["seed", str(r["seed"])],
            ["threads of each process", ", ".join(str(rank["threads"]) for rank in r["distributed"]["ranks"])
             if r.get("distributed") else "not recorded"]]
    return "\n".join(["## Provenance", "", markdown_table(["what", "record"], rows), "",
                      "`report.json` holds every setting (`config`) and library version (`machine.versions`); "
                      "`edgefree build --config report.json --out DIR` builds it again (the same student bit for bit "
                      "on the same CPU and library versions with as many processes and threads: `--workers`, "
                      "`--threads`)."])


SECTIONS = [_summary, _estimate, _budget, _pruning, _sparsity, _synthesis, _recovery, _export, _bench, _timing,
            _provenance, _flash, _terms]


REPORT_SCHEMA = 1  # report.json's layout; raised when a key changes meaning


def render_markdown(report: dict) -> str:
    rendered = (section(report) for section in SECTIONS)
    return "\n\n".join(text for text in rendered if text) + "\n"


def write_report(report: dict, out: Path, build_dir: Path | None = None) -> None:
    """Write report.md, then report.json last: report.json present means the build finished.

    ``build_dir``: the finished build whose report this renders again (``out`` is its staging folder);
    its device record, ``flash.json``, keeps its section in report.md, and its ``out`` is where it is now
    (a build folder may have moved since; ``config.out`` keeps where the build was asked to write).
    """
    if build_dir is not None:
        report = {**report, "out": str(build_dir)}
    (out / "report.md").write_text(render_markdown({**report, **_flashed(build_dir)}))
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out / "report.json")
