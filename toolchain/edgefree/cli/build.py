"""``edgefree build``: the whole pipeline on your model, or on the built-in default."""

from pathlib import Path

import click

from edgefree.cli.export import FORMATS_HELP, PRECISIONS_HELP, comma_list, report_export
from edgefree.cli.output import failure_kept_log, progress_bars, quiet_option, verbose_option
from edgefree.cli.params import NON_EMPTY_TEXT, NonEmptyPath, variable_name
from edgefree.config import CHANNEL_IMPORTANCE, SYNTHESIS_FLAGS, ChannelPruning, MagnitudePruning


_MAGNITUDE, _CHANNEL = MagnitudePruning(), ChannelPruning()  # the defaults the options show are the config's


def _opt(*names, **kw):
    if "type" not in kw and not kw.get("is_flag") and "/" not in names[0] and kw.get("default") is None:
        kw["type"] = NON_EMPTY_TEXT  # a text option: an empty value is refused, not read as the default
    return click.option(*names, show_envvar=True, **kw)


@click.command()
@_opt("--target", default="x86-64", help="Target profile (see `edgefree targets`).")
@_opt("--model", type=NonEmptyPath(path_type=Path), help="Teacher checkpoint (state_dict), or a torch.export "
      "program (.pt2, without --arch). Omit for the built-in default.")
@_opt("--arch", help="Architecture of --model: a name from `edgefree models`, torchvision:<name>, or your own "
      "path/to/file.py:factory or package.module:factory (this imports and runs your code).")
@_opt("--num-classes", type=int, default=10, help="Classes of --model.")
@_opt("--input-shape", help="Input of --model without the batch: CxHxW (image, e.g. 3x224x224) or CxL (signal, "
      "e.g. 12x1000) [default: the architecture's; torchvision: 3x224x224].")
@_opt("--mean", help="Per-channel normalization mean, comma-separated [default: the architecture's; ImageNet's "
      "for an image of 3 channels; 0 otherwise].")
@_opt("--std", help="Per-channel normalization std, comma-separated [default: as --mean].")
@_opt("--value-range", help="LOW,HIGH: the raw values' range, in the sensor's units for a signal (e.g. -30,40); "
      "dreams stay inside it [default: the architecture's; an image's 0,1; a signal's per-channel mean +- 5 std "
      "of --mean/--std, printed].")
@_opt("--eval-data", help="Held-out evaluation set: zip, ImageFolder dir, cifar-10-batches-py dir, .npz (signals), "
      "or 'digits'.")
@_opt("--pruning", default=None, help="'magnitude' (zero weights: smaller files), 'channel' (remove channels and "
      "blocks: faster on every runtime) or 'channel,magnitude' (both) [default: the target's].")
@_opt("--sparsity", type=float, default=_MAGNITUDE.sparsity, help="Magnitude pruning: fraction of conv/linear weights zeroed (over all layers, or each: "
      "--magnitude-scope).")
@_opt("--channel-ratio", type=float, default=_CHANNEL.ratio, help="Channel pruning: fraction of each prunable layer's channels removed.")
@_opt("--macs-target", type=float, help="Channel pruning: keep about this fraction of the teacher's multiply-adds "
      "(the channel ratio is searched; overrides --channel-ratio).")
@_opt("--latency-target", type=float, help="Channel pruning: the student runs in at most this fraction of the "
      "teacher's p50 on the target's first runtime and precision; widths per layer group (and residual blocks) "
      "are chosen from per-layer latency tables and per-layer sensitivity on the dreams (overrides --channel-ratio).")
@_opt("--depth", type=float, default=_CHANNEL.depth, help="Channel pruning: fraction of identity-shortcut residual blocks removed.")
@_opt("--channel-importance", type=click.Choice(list(CHANNEL_IMPORTANCE)), default=_CHANNEL.importance,
      help="Channel pruning: how channels are ranked (taylor, greedy: measured on the synthetic images; greedy removes "
      "the channel that changes the next layers' outputs least, one at a time, as ThiNet).")
@_opt("--round-to", type=int, default=_CHANNEL.round_to, help="Channel pruning: channel counts are multiples of this.")
@_opt("--channel-steps", type=click.IntRange(1, 20), default=_CHANNEL.steps, help="Channel pruning: reach the target in this many "
      "steps, the kept weights refit after each (gradual pruning).")
@_opt("--keep-first-last-dense", is_flag=True, help="Magnitude pruning: do not prune the first and last layer.")
@_opt("--magnitude-scope", type=click.Choice(["global", "layer"]), default=_MAGNITUDE.scope,
      help="Magnitude pruning: rank weights over all layers together, or zero --sparsity of each layer "
      "(for layers of very different scale, as in MobileNets).")
@_opt("--max-drop", type=click.FloatRange(min=0), help="Budget: the strongest pruning (magnitude: the sparsity; "
      "channel: the MACs target; beside --latency-target, the sparsity of a magnitude stage on its widths, or with "
      "channels only a check of the student) whose estimated top-1 drop is at most this many points, searched "
      "without data (in place of the --sparsity, or with a channel stage the --macs-target and --channel-ratio, it "
      "searches; docs/budgets.md).")
@_opt("--recipe", default=None, help="Recipe: 'fast' (default for --model), 'thorough' (twice the distillation, on the generator's dreams for an image and fast's for a signal), 'paper' (the published 200 fp32 steps per batch), 'generator' (a generator trained on the teacher, new images every epoch: more recovery than fast on image teachers), 'demo' (built-in default).")
@_opt("--images", type=int, help="Synthetic images (overrides the recipe).")
@_opt("--iterations", type=int, help="Synthesis steps per batch; with a generator recipe, its training steps (thorough: the generator's on an image, steps per batch on a signal) (overrides the recipe).")
@_opt("--synth-batch", type=int, help="Synthesis batch size (overrides the recipe).")
@_opt("--bn-weight", callback=lambda _ctx, _param, value: _bn_weight(value), help="Weight of the BatchNorm-statistics "
      "term of synthesis against the class term: a number, or 'auto' (the strongest at which the teacher still "
      "labels 90% of a probe batch as its target) (overrides the recipe).")
@_opt("--bf16/--fp32", "bf16", default=None, help="Synthesize and distil in bfloat16 autocast, or in fp32 "
      "[default: the recipe's; 'fast', 'generator' and 'thorough' use bf16 where the hardware has it natively, "
      "except fp32 for a model with depthwise convolutions on a CPU; 'paper' and 'demo' fp32].")
@_opt("--reconstruct-images", type=int, help="Dreams used to refit each pruned layer to the teacher's outputs "
      "before distillation; 0 skips it (overrides the recipe).")
@_opt("--block-steps", type=int, help="After the layer-wise refit, train each block (a residual "
      "block, an inverted residual) this many steps to give the teacher's block output; 0: layer-wise only "
      "(overrides the recipe).")
@_opt("--adversarial-steps", type=click.IntRange(min=0), help="With --recipe generator: before each distillation "
      "epoch's new dreams, train the generator this many steps towards images the student gets wrong; 0: off "
      "(overrides the recipe).")
@_opt("--epochs", type=int, help="Distillation epochs.")
@_opt("--distill-lr", type=float, help="Distillation learning rate.")
@_opt("--formats", callback=comma_list, help=FORMATS_HELP)
@_opt("--precisions", callback=comma_list, help=PRECISIONS_HELP)
@_opt("--bench-runs", type=int, help="A fixed count of timed runs per runtime in the bench stage (after 10 "
      "warm-up) [default: runs until the p50 is stable within 2%, 20 to 2000 runs].")
@_opt("--emulate/--no-emulate", default=True, help="Bench an aarch64 target's artifacts under qemu-aarch64 too "
      "(when `edgefree emulator setup` ran).")
@_opt("--out", type=NonEmptyPath(path_type=Path), default=Path("edgefree-out"), help="Output folder.")
@_opt("--seed", type=int, default=0, help="Seed for every random choice.")
@_opt("--config", "config_file", envvar="EDGEFREE_BUILD_CONFIG", type=NonEmptyPath(path_type=Path), help="Build settings from a TOML file or a "
      "build's report.json (replays that build); options given here win over the file's.")
@_opt("--save-config", type=NonEmptyPath(path_type=Path, dir_okay=False), help="Write the settings this command "
      "resolves to as TOML to this new file (for --config) and stop, without building.")
@_opt("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Where to compute (under torchrun, "
      "cuda means cuda:LOCAL_RANK).")
@_opt("--workers", type=click.IntRange(min=1), default=1, help="Processes on this machine that share synthesis, "
      "refit and distillation (torchrun's launcher; for several machines run `torchrun ... -m edgefree build`).")
@_opt("--threads", type=click.IntRange(min=1), help="Threads per process [default: the cores shared out among "
      "this machine's processes].")
@_opt("--shards", type=click.IntRange(min=1), help="Synthesis shards: chains of batches dreamed apart, one per "
      "process at a time; the dreams depend on it, not on --workers (overrides the recipe).")
@_opt("--dist-timeout", type=click.FloatRange(min=0, min_open=True), default=1800.0,
      help="Seconds a process waits for the others before the job fails (several processes only).")
@quiet_option
@verbose_option
def build(target, model, arch, num_classes, input_shape, mean, std, value_range, eval_data, pruning, sparsity, channel_ratio, macs_target, latency_target, depth,
          channel_importance, round_to, channel_steps, keep_first_last_dense, magnitude_scope, max_drop, recipe, images,
          iterations, synth_batch, bn_weight, bf16, reconstruct_images, block_steps, adversarial_steps, epochs, distill_lr, formats, precisions, bench_runs, emulate, out, seed, device,
          config_file, save_config, workers, threads, shards, dist_timeout, quiet, verbose):
    """Synthesize, prune, reconstruct, distill (and evaluate) a teacher; write the student and a report to --out.

    The build writes beside --out and replaces its outputs there only when every stage succeeded:
    a failed or interrupted build leaves --out as it was (docs/output-folder.md). Runtime log lines
    and library warnings go to --out's build.log (--verbose shows them here).
    """
    from dataclasses import replace

    from edgefree.cli.bench import report_bench
    from edgefree.config import BuildConfig, load_config_file, to_toml
    from edgefree.errors import EdgefreeError
    from edgefree.models import parse_shape, parse_values
    from edgefree.models.spec import parse_range

    given = _given(click.get_current_context())
    values = load_config_file(config_file) if config_file else {}
    _layer(values, given, dict(target=target, out=out, model=model, arch=arch, num_classes=num_classes,
                               eval_data=eval_data, seed=seed, device=device, recipe=recipe, threads=threads,
                               dist_timeout_s=dist_timeout, max_drop=max_drop,
                               input_shape=list(parse_shape(input_shape)) if input_shape else None,
                               mean=list(parse_values(mean, "--mean")) if mean else None,
                               std=list(parse_values(std, "--std")) if std else None,
                               value_range=list(parse_range(value_range)) if value_range else None),
           flags={"dist_timeout_s": "dist_timeout"})
    if "recipe" in given:  # the recipe named here replaces the file's stage settings (and what it named in them)
        for stage in ("synthesis", "reconstruct", "distill", "synthesis_given"):
            values.pop(stage, None)
    stage_options = dict(sparsity=sparsity, keep_first_last_dense=keep_first_last_dense, magnitude_scope=magnitude_scope,
                         channel_ratio=channel_ratio, macs_target=macs_target, depth=depth,
                         channel_importance=channel_importance, round_to=round_to, channel_steps=channel_steps)
    theirs = values["prune"] if _stage_list(values.get("prune")) else []  # a config file's pruning stages
    if theirs and "pruning" not in given and given & PRUNING_OPTIONS:  # the file's stages, these options set in them
        values["prune"] = [_changed_stage(stage, given, stage_options) for stage in theirs]
    elif given & PRUNING_OPTIONS or "prune" not in values:
        stages = _pruning(pruning, values.get("target", target), sparsity, keep_first_last_dense, channel_ratio,
                          macs_target, depth, channel_importance, round_to, channel_steps, magnitude_scope)
        kept = {stage.get("kind", "magnitude"): stage for stage in theirs}  # --pruning names the kinds; a kind the
        values["prune"] = [_changed_stage(kept[s["kind"]], given, stage_options) if s["kind"] in kept else s
                           for s in stages]  # file has keeps the file's stage, the options given here set in it
    if "latency_target" in given:  # its other settings (runtime, widths, blocks) come from the file, if any
        section = values.get("latency_target")
        values["latency_target"] = {**(section if isinstance(section, dict) else {}), "ratio": latency_target}
    _refuse_unused(given, values["prune"])
    _layer(values, given, {"formats": formats, "precisions": precisions}, "export")
    _layer(values, given, {"runs": bench_runs, "emulate": emulate}, "bench", flags={"runs": "bench_runs"})
    config = BuildConfig.from_dict(values)
    config = replace(  # explicit options win over every part of the recipe (and of the file)
        config, synthesis=config.synthesis.replace(images=images, iterations=iterations, batch_size=synth_batch, bf16=bf16,
                                                       bn_weight=bn_weight,
                                                       shards=shards),
        synthesis_given=tuple(dict.fromkeys((*config.synthesis_given, *(
            field for flag, field in SYNTHESIS_FLAGS.items() if flag in given)))),
        reconstruct=config.reconstruct.replace(images=reconstruct_images, block_steps=block_steps),
        distill=config.distill.replace(epochs=epochs, lr=distill_lr, bf16=bf16, adversarial_steps=adversarial_steps))
    _refuse_searched(config, given, click.get_current_context(), config_file)
    if save_config:
        if save_config.suffix.lower() == ".json":
            raise EdgefreeError(f"--save-config {save_config}: it writes TOML, and --config reads a .json file as a "
                                "build's report: name the file .toml")
        if config.model is not None and not Path(config.model).exists():
            raise EdgefreeError(f"--model {config.model} does not exist, so a build of this config would stop there: "
                                "fix the path before saving it")
        if config.export:  # formats or precisions the target does not run stop a build on any machine
            from edgefree.targets import load_target

            config.export.for_target(load_target(config.target))
        _write_text(save_config, to_toml(config))
        click.echo(f"wrote {save_config} (build it with `edgefree build --config {save_config}`)")
        return
    from edgefree.logs import publish_log
    from edgefree.pipeline import build_on_workers

    out = config.out
    log = out.parent / f".{out.name}.build.log"  # beside --out while it runs; the build publishes it with its outputs
    with failure_kept_log(verbose, log):
        report = build_on_workers(config, workers, progress=progress_bars(quiet))
        # --workers: rank 0 published the build in a process of its own, which wrote its warnings to the log
        rank_warnings = publish_log(Path(out)) if workers > 1 and report is not None else []
    for line in rank_warnings:
        click.echo(line, err=True)
    if report is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    acc = report["accuracy"]
    if acc["teacher"] is not None:
        refit = f"refit {acc['reconstructed']:.2f}%  " if acc.get("reconstructed") is not None else ""
        click.echo(f"accuracy: teacher {acc['teacher']:.2f}%  pruned {acc['pruned']:.2f}%  {refit}"
                   f"recovered {acc['recovered']:.2f}%  (sparsity {100 * report['sparsity']:.1f}%, "
                   f"{report['cost']['macs_ratio']:.2f}x the teacher's multiply-adds)")
    click.echo(dreams_line(report["synthesis"]))
    latency = report.get("latency_target")
    if latency:
        measured = latency["measured_ratio"]
        click.echo(f"latency target {latency['target_ratio']:.2f}x ({latency['runtime']} {latency['precision']}): "
                   f"predicted {latency['predicted_ratio']:.2f}x, "
                   + (f"{latency['chosen_ratio']:.2f}x measured when chosen, " if latency.get("chosen_ratio") else "")
                   + (f"not measured ({latency.get('unmeasured') or 'no bench'})" if measured is None else
                      f"bench {measured:.2f}x ({latency.get('measured_as', 'p50')}): "
                      + ("met" if latency["met"] else "MISSED")))
    _report_estimate(report)
    target_macs = next((s["macs_target"] for s in report["pruning"]["stages"] if s.get("macs_target")), None)
    if target_macs is not None:
        click.echo(f"macs target {target_macs:g}: reached {report['cost']['macs_ratio']:.2f}x the teacher's "
                   f"multiply-adds (channel ratio {report['pruning']['ratio']:.2f})")
    if report["export"]:
        report_export(report["export"])
    if report["bench"]:
        report_bench(report["bench"], wrote=False)
    if report["model"].get("value_range_assumed"):
        low, high = report["model"]["input"]["value_range"]
        click.echo(f"value range assumed: {low:.4g} to {high:.4g} (pass --value-range LOW,HIGH to set it)")
    from edgefree.outfolder import written_entries

    order = ("report.md", "report.json", "student.pt", "student-plan.json", "student.pt2", "synthetic.pt",
             "synthetic.png", "artifacts", "bench.md", "bench.json", "bench.png")  # what to read first, first
    entries = sorted((n for n in written_entries(Path(out)) if n != "build.log"),
                     key=lambda n: (order.index(n) if n in order else len(order), n))
    written = [name + ("/" if (Path(out) / name).is_dir() else "") for name in entries]
    click.echo(f"wrote {', '.join(written)} in {out}" + ("" if verbose else f"; runtime logs in {out / 'build.log'}"))


def _bn_weight(value: str | None):
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor 'auto'") from None


def dreams_line(synthesis: dict) -> str:
    """How well the dreams carry their labels, in one console line."""
    probes = synthesis.get("bn_weight_probes")
    chosen = f", chosen by {len(probes)} probe{'s' if len(probes) > 1 else ''}" if probes else ""
    return (f"dreams: the teacher labels {100 * synthesis['teacher_agreement']:.1f}% of them as their target "
            f"(mean confidence {synthesis['teacher_confidence']:.2f}; BatchNorm weight {synthesis['bn_weight']:g}"
            f"{chosen})" + ("; taken from the cache" if synthesis.get("cached") else ""))


def _report_estimate(report: dict) -> None:
    """The data-free estimate beside the measured drop, the budget search, and any warning: one line each."""
    e, b = report["estimate"], report.get("budget")
    if b:
        tried = len(b["candidates"])
        click.echo(f"budget: --max-drop {b['max_drop']:g} chose {b['knob']} {b['chosen']:g} after "
                   f"{tried} candidate{'s' if tried != 1 else ''} ({b['seconds']:.0f} s)"
                   + ("" if b["met"] else ": none was estimated within it, this one came closest"))
    elif report["config"].get("max_drop") is not None:
        click.echo(f"budget: --max-drop {report['config']['max_drop']:g} checked on the student whose channel widths "
                   f"the latency target chose: estimated ~{e['recovered']['drop']:.1f} points, "
                   f"{'met' if e['recovered']['drop'] <= report['config']['max_drop'] else 'missed'} "
                   "(--pruning channel,magnitude would search a sparsity on them)")
    measured = "" if e["measured_drop"] is None else f"measured drop {e['measured_drop']:.2f} points, "
    click.echo(f"{measured}estimated drop ~{e['recovered']['drop']:.1f} points (no data used; a rough guide that "
               "can miss large drops: docs/budgets.md)")
    for line in e["warnings"]:
        click.echo(f"Warning: {line}", err=True)


def _pruning(kinds: str | None, target: str, sparsity, keep_first_last_dense, channel_ratio, macs_target, depth,
             importance, round_to, steps, magnitude_scope) -> list[dict]:
    """The pruning stages the options ask for (``kinds`` None: the target profile's default), as dicts."""
    from edgefree.targets import load_target

    names = [k.strip() for k in (kinds or ",".join(load_target(target).pruning)).split(",") if k.strip()]
    stages = {"magnitude": lambda: MagnitudePruning(sparsity=sparsity, keep_first_last_dense=keep_first_last_dense,
                                                        scope=magnitude_scope),
              "channel": lambda: ChannelPruning(ratio=channel_ratio, macs_target=macs_target, depth=depth,
                                                importance=importance, round_to=round_to, steps=steps)}
    if not names or any(k not in stages for k in names):
        raise click.BadParameter(f"{kinds!r}: use magnitude, channel or channel,magnitude", param_hint="--pruning")
    return [stages[k]().to_dict() for k in names]


# option -> the field of its pruning stage
STAGE_FIELDS = {"magnitude": {"sparsity": "sparsity", "keep_first_last_dense": "keep_first_last_dense",
                              "magnitude_scope": "scope"},
                "channel": {"channel_ratio": "ratio", "macs_target": "macs_target", "depth": "depth",
                            "channel_importance": "importance", "round_to": "round_to", "channel_steps": "steps"}}


def _stage_list(stages) -> bool:
    """Whether ``stages`` (a config file's ``prune``) is a list of stage tables, as from_dict reads it."""
    return isinstance(stages, list) and bool(stages) and all(isinstance(s, dict) for s in stages)


def _changed_stage(stage: dict, given: set[str], options: dict) -> dict:
    """A config file's pruning stage with the pruning options given here that belong to its kind set in it (an
    option of a kind the file does not run is refused later, by ``_refuse_unused``). A ratio given here replaces
    the file's MACs target, which would otherwise search the ratio."""
    fields = STAGE_FIELDS.get(stage.get("kind", "magnitude"), {})
    mine = {field: options[name] for name, field in fields.items() if name in given}
    if "ratio" in mine and "macs_target" not in mine:
        mine["macs_target"] = None
    return {**stage, **mine}


MAGNITUDE_OPTIONS, CHANNEL_OPTIONS = ({name: "--" + name.replace("_", "-") for name in STAGE_FIELDS[kind]}
                                     for kind in ("magnitude", "channel"))
PRUNING_OPTIONS = {"pruning", *MAGNITUDE_OPTIONS, *CHANNEL_OPTIONS}


def _refuse_unused(given: set[str], stages) -> None:
    """An option of a pruning kind that this build does not run is refused, not ignored."""
    from edgefree.errors import EdgefreeError

    kinds = {s.get("kind", "magnitude") for s in stages if isinstance(s, dict)} if isinstance(stages, list) else set()
    for kind, options, other in (("magnitude", MAGNITUDE_OPTIONS, "channel"), ("channel", CHANNEL_OPTIONS, "magnitude")):
        unused = [flag for name, flag in options.items() if name in given]
        if unused and kind not in kinds:
            runs = " then ".join(s.get("kind", "magnitude") for s in stages) if kinds else "no"
            raise EdgefreeError(f"{', '.join(unused)} {'are options' if len(unused) > 1 else 'is an option'} of "
                                f"{kind} pruning, and this build runs {runs} pruning only: leave "
                                f"{'them' if len(unused) > 1 else 'it'} out, or pass --pruning "
                                f"{'channel,magnitude' if kinds == {other} else kind}")


SEARCHED_BY = {"sparsity": ("sparsity",), "macs_target": ("macs_target", "channel_ratio")}  # knob -> its options


def _refuse_searched(config, given: set[str], ctx: click.Context, config_file: Path | None) -> None:
    """Under a budget (``max_drop``: an option, its variable or the config file's) an option setting the value it
    searches is refused, not overridden (``edgefree.budget.knob``: the sparsity, or a channel stage's MACs target)."""
    from edgefree.budget import knob
    from edgefree.errors import EdgefreeError

    searched = knob(config) if config.max_drop is not None else None
    clash = [_source(ctx, name) for name in SEARCHED_BY.get(searched, ()) if name in given]
    if clash:
        source = _source(ctx, "max_drop") if "max_drop" in given else None
        budget = (f"max_drop = {config.max_drop:g} in {config_file}" if source is None else
                  f"{source}{'=' if source.startswith('$') else ' '}{config.max_drop:g}")
        raise EdgefreeError(f"{budget} chooses the {searched.replace('_', ' ')} itself "
                            f"({'the channel stage' if searched == 'macs_target' else 'the magnitude stage'}'s), "
                            f"so {' and '.join(clash)} would be overridden: leave {'it' if len(clash) == 1 else 'them'}"
                            " out, or the budget")


def _source(ctx: click.Context, name: str) -> str:
    """How option ``name`` was given: ``--flag``, or ``$VARIABLE`` where its environment variable set it."""
    from click.core import ParameterSource

    param = next(p for p in ctx.command.params if p.name == name)
    return "$" + variable_name(ctx, param) if ctx.get_parameter_source(name) == ParameterSource.ENVIRONMENT \
        else param.opts[0]


def _given(ctx: click.Context) -> set[str]:
    """The options set on the command line or by their environment variable (not left at their default)."""
    from click.core import ParameterSource

    return {p.name for p in ctx.command.params
            if ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}


def _layer(values: dict, given: set[str], options: dict, section: str | None = None,
           flags: dict | None = None) -> None:
    """Put ``options`` (config field -> value; ``flags``: field -> CLI name where they differ) into
    ``values[section]``: those given explicitly always, the others only where the file sets nothing."""
    if section is not None:
        if section in values and values[section] in (False, None):  # turned off (a report writes null): no options
            named = ["--" + (flags or {}).get(name, name).replace("_", "-") for name in options
                     if (flags or {}).get(name, name) in given]
            if named:
                from edgefree.errors import EdgefreeError

                off = "false" if values[section] is False else "null"
                raise EdgefreeError(f"{', '.join(named)} set{'s' if len(named) == 1 else ''} the {section}, which "
                                    f"the config file turns off ({section} = {off}): leave "
                                    f"{'it' if len(named) == 1 else 'them'} out, or remove that line from the file")
            return
        if not isinstance(values.setdefault(section, {}), dict):
            return  # a malformed stage that from_dict names
        values = values[section]
    for name, option in options.items():
        if (flags or {}).get(name, name) in given or name not in values:
            values[name] = option


def _write_text(path: Path, text: str) -> None:
    from edgefree.errors import EdgefreeError

    if path.is_dir() or not path.parent.is_dir():
        raise EdgefreeError(f"--save-config {path}: {'is a folder' if path.is_dir() else 'its folder does not exist'}; "
                            "pass a file path in an existing folder")
    try:
        with open(path, "x") as f:  # exclusive: a file that appeared meanwhile is never replaced
            try:
                f.write(text)
            except BaseException:
                path.unlink()
                raise
    except FileExistsError:
        raise EdgefreeError(f"--save-config {path} already exists, and edgefree does not overwrite it: pass another "
                            "file name, or remove it first") from None
