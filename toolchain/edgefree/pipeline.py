"""``build()``: the stages in order, top to bottom, each one public function.

    teacher -> synthesize (+ held-out dreams) -> [budget search] -> prune -> reconstruct -> distill
            -> evaluate (+ data-free estimate) -> export -> bench -> report

Synthetic images are cached (``cache_dir("dreams")``), keyed by edgefree's version, the
teacher's weights, the synthesis config and the seed, so a rebuild with other distillation
settings, or after a failure, does not dream again, and a new version of edgefree does. The
outputs are written into a staging folder and replace those in the output folder only when
the whole build succeeded.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch

from edgefree import __version__, distributed
from edgefree.bench import bench, check_runs
from edgefree.bench.teacher import eval_identity, export_teacher
from edgefree.cache import cache_root, writable_folder
from edgefree.budget import knob as budget_knob
from edgefree.budget import search_budget, stages_at
from edgefree.config import DEFAULT_RECIPE, BuildConfig, ChannelPruning, MagnitudePruning, recipe
from edgefree.cost import cost
from edgefree.data import load_eval_data
from edgefree.demo import DEMO_EVAL, default_teacher
from edgefree.demo import WEIGHTS as DEMO_WEIGHTS
from edgefree.digests import tensor_bytes
from edgefree.errors import EdgefreeError, muted_warnings, warn
from edgefree.evaluate import accuracy
from edgefree.export import export_student, refuse_foreign_files
from edgefree.export.runtime import require_runtimes
from edgefree.export.unpack import sha256_file as sha256
from edgefree.logs import adopt_log
from edgefree.machine import machine_info, resolve_bf16
from edgefree.models import Teacher, load_teacher
from edgefree.models.spec import SIGNAL_RANGE_STDS
from edgefree.outfolder import check_inputs_outside, check_out_folder, locked, remove_leftovers, staged
from edgefree.recover import SyntheticSet, distill, prune, reconstruct, sparsity_report, synthesize
from edgefree.recover.channels import check_channel_pruning
from edgefree.recover.gradual import prune_gradually
from edgefree.recover.prune import narrowed_widths, with_magnitude
from edgefree.recover.estimate import LARGE_DROP, advice, estimate, load_fit, remedy
from edgefree.recover.saved import arch_sha256, save_student
from edgefree.recover.synthesize import save_contact_sheet
from edgefree.report import REPORT_SCHEMA, write_report
from edgefree.resources import check_memory, check_workers
from edgefree.targets import load_target
from edgefree.verify import record_files

# Everything a build writes into --out (bench and flash add bench.json, flash.json later).
OUTPUTS = ("report.json", "report.md", "student.pt", "student-plan.json", "student.pt2", "synthetic.pt",
           "synthetic.png", "artifacts", "bench.json", "bench.md", "bench.png", "flash.json", "build.log")


class _Stopwatch(dict):
    """Seconds per stage; under torch.distributed, a stage also hosts the test-only fault hook and
    turns a process-group timeout into a clear error (``edgefree.distributed.stage``)."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        with distributed.stage(stage, self.timeout_s):
            yield
        self[stage] = round(time.perf_counter() - started, 2)


# raised whenever a cached set must be dreamed again: the same settings dream other images, or the file must hold
# what the reader checks (2: the sha256 of its tensors)
DREAMS_REVISION = 2


def _fingerprint(teacher: Teacher, config: BuildConfig, device: str | None = None) -> str:
    """The dream cache's key: the code's version, the synthesis settings (bf16 "auto" as this machine resolves it,
    for a generator and for this teacher), the seed and the teacher's input and weights."""
    setting, device = config.synthesis.bf16, device or config.device
    bf16 = f"{resolve_bf16(setting, device)} {resolve_bf16(setting, device, teacher.module)}"
    h = hashlib.sha256(f"edgefree {__version__}|dreams {DREAMS_REVISION}|bf16 {bf16}|".encode()
                       + repr(sorted(config.synthesis.to_dict().items())).encode()
                       + str(config.seed).encode() + repr(sorted(teacher.spec.to_dict().items())).encode())
    for tensor in teacher.module.state_dict().values():
        h.update(tensor_bytes(tensor))
    return h.hexdigest()[:16]


def synthesize_cached(teacher: Teacher, config: BuildConfig, out: Path | None, progress: bool,
                      device: str | None = None) -> SyntheticSet:
    """The synthesis stage, reusing ``<cache>/synthetic-<fingerprint>.pt`` (default cache:
    ``cache_dir("dreams")``, outside the output folder, so a build that fails later still leaves
    its finished dreams for the next one; each set is written whole or not at all).

    The set is also published as ``out/synthetic.pt``, a copy: an edit of either file leaves the other
    whole (each holds the sha256 of its tensors, checked as it is read). Under
    torch.distributed, rank 0 alone reads and writes the cache and sends a cached set to the others
    (``out`` None: a rank that publishes nothing).
    """
    cached = _dreams_folder(config)[0] / f"synthetic-{_fingerprint(teacher, config, device)}.pt"
    main = distributed.world().main
    stored = _read_cached(cached) if main else None
    if distributed.broadcast(stored is not None if main else None):
        dreams = distributed.broadcast(stored)
        dreams.stats["cached"] = True
    else:
        dreams = synthesize(teacher, config.synthesis, seed=config.seed, device=device or config.device,
                            progress=progress)
        if main:
            cached.parent.mkdir(parents=True, exist_ok=True)
            dreams.save(cached)
    dreams.stats["cache_file"] = str(cached)  # which entry of the cache, for the report
    if out is None:
        return dreams
    published = out / "synthetic.pt"
    out.mkdir(parents=True, exist_ok=True)
    published.unlink(missing_ok=True)
    shutil.copyfile(cached, published)
    return dreams


def _dreams_folder(config: BuildConfig) -> tuple[Path, str]:
    """Where dreams are cached (``config.cache``, else the cache's ``dreams``), and what set it (for an error line)."""
    if config.cache:
        return Path(config.cache), "cache"
    root, name = cache_root()
    return root / "dreams", name


def _read_cached(path: Path) -> SyntheticSet | None:
    """The synthetic set cached at ``path`` (read with ``weights_only``), or None when there is none or it
    cannot be read (damaged, or holding objects other than tensors): it is removed and dreamed again."""
    if not path.exists():
        return None
    try:
        return SyntheticSet.load(path, require_digest=True)
    except EdgefreeError:
        warn(f"cached dreams {path} cannot be read (damaged, or holding objects other than tensors): removed from "
             "the cache, dreaming again")
        path.unlink(missing_ok=True)
        return None


HELD_OUT_IMAGES = 256
HELD_OUT_SEED = 0x5EED  # the held-out dreams' seed: the build's seed plus this (mod 2**32)


def held_out_config(config: BuildConfig) -> BuildConfig:
    """The config whose dreams are held out for the data-free estimate: the build's DeepInversion
    settings (a generator recipe: the default recipe's), ``HELD_OUT_IMAGES`` images (fewer if the
    build dreams fewer) in one chain of batches of at most 64, and a seed of their own, so no stage
    trains or refits on them."""
    base = config.synthesis if config.synthesis.method == "deepinversion" else recipe(DEFAULT_RECIPE).synthesis
    synthesis = base.replace(images=min(HELD_OUT_IMAGES, config.synthesis.images), batch_size=min(base.batch_size, 64),
                             shards=1)
    return config.replace(synthesis=synthesis, seed=(config.seed + HELD_OUT_SEED) % 2**32,
                          distill=config.distill.replace(adversarial_steps=0))  # no generator to train


def held_out_dreams(teacher: Teacher, config: BuildConfig, progress: bool, device: str | None = None) -> SyntheticSet:
    """The held-out dreams of ``held_out_config`` (cached like the others, never published)."""
    return synthesize_cached(teacher, held_out_config(config), None, progress, device)


def _throughput(config: BuildConfig, dreams: SyntheticSet, refit, distilled) -> dict:
    """This rank's images per second in each stage the ranks share (None: the stage did no work here)."""
    def rate(images: int, seconds: float) -> float | None:
        return round(images / seconds, 2) if images and seconds else None

    mine = dreams.stats.get("rank") if not dreams.stats.get("cached") else None
    refit_images = sum(map(len, distributed.rank_batches(dreams.images[:config.reconstruct.images],
                                                         config.reconstruct.batch_size)))
    distill_images = config.distill.epochs * distributed.EpochBatches(len(dreams), config.distill.batch_size, None).per_rank
    return {"rank": distributed.world().rank, "threads": torch.get_num_threads(),
            "synthesize_images_per_s": rate(mine["images"], mine["seconds"]) if mine else None,
            "reconstruct_images_per_s": rate(refit_images, refit.stats["seconds"]),
            "distill_images_per_s": rate(distill_images, distilled.stats["seconds"])}


def _milder(config: BuildConfig) -> str:
    """The options of ``config`` that would prune its student less, as the large-drop line names them."""
    if config.latency_target is not None:
        return "a larger --latency-target"
    options = []
    for stage in config.prune:
        if isinstance(stage, MagnitudePruning):
            options.append("a milder --sparsity")
        else:
            options.append("a larger --macs-target" if stage.macs_target is not None else "a smaller --channel-ratio")
            options += ["a smaller --depth"] if stage.depth else []
    return " or ".join(dict.fromkeys(options)) or "a milder --sparsity or a larger --macs-target"


def _distillation_loss(config: BuildConfig, found: dict, scores: dict) -> str | None:
    """One line where distillation left the student worse than the layer-wise refit before it, by more than
    ``LARGE_DROP`` points of top-1 measured on the evaluation data or, without it, of estimated drop."""
    if scores["teacher"] is not None:
        before, after = scores["reconstructed"], scores["recovered"]
        lost, basis = before - after, f"top-1 {before:.2f}% -> {after:.2f}% on the evaluation data"
    else:
        before, after = found["reconstructed"]["drop"], found["recovered"]["drop"]
        lost, basis = after - before, f"estimated drop ~{before:.1f} -> ~{after:.1f} points"
    if lost <= LARGE_DROP:
        return None
    d = config.distill
    return (f"distillation left the student worse than the refit before it ({basis}); the student written is the "
            f"distilled one: distil longer (--epochs {max(2 * d.epochs, 10)}) or at a lower rate (--distill-lr "
            f"{d.lr / 10:g})")


def _estimates(teacher: Teacher, config: BuildConfig, students: list, held_out: SyntheticSet, scores: dict,
               budget: dict | None, fit: dict) -> dict:
    """The data-free estimate of each student's drop (``students``: (name, model)), the measured drop
    beside it where there is evaluation data, and the one-line warnings a build prints."""
    found = {name: estimate(teacher, model, held_out, config.seed, fit) for name, model in students}
    drop = found["recovered"]["drop"]
    measured = None if scores["teacher"] is None else round(scores["teacher"] - scores["recovered"], 2)
    warnings, fix = [], remedy(config.synthesis.method, teacher.spec.rank, config.distill.epochs)
    measured_met = None if measured is None or config.max_drop is None else measured <= config.max_drop
    if not measured_met and (line := _budget_warning(config, budget, drop, measured, fix)):
        warnings.append(line)  # evaluation data that met the budget: what the estimate says of it is no warning
    if "reconstructed" in found and (undone := _distillation_loss(config, found, scores)):
        warnings.append(undone)
    if measured is None and len(held_out) < HELD_OUT_IMAGES:  # nothing measured: how far the estimate can be trusted
        warnings.append(f"the estimate rests on {len(held_out)} held-out dreams ({HELD_OUT_IMAGES} where the build "
                        f"dreams at least that many), which measure a disagreement to about "
                        f"+-{50 / math.sqrt(len(held_out)):.0f} points: dream at least {HELD_OUT_IMAGES} images "
                        "(--images) for a firmer estimate")
    if measured_met is False and drop <= config.max_drop:
        warnings.append(f"--max-drop {config.max_drop:g} missed on the evaluation data: the recovered student lost "
                        f"{measured:.2f} points where the estimate read ~{drop:.1f}: "
                        + ("pass a smaller --max-drop (the search then prunes less)" if budget else
                           "allow a larger --latency-target (it set every width; --max-drop only checked them)"))
    checked = None if config.max_drop is None else {
        "max_drop": config.max_drop, "met": drop <= config.max_drop, "measured_met": measured_met}
    return {**found, "measured_drop": measured, "warnings": warnings, "max_drop": checked,
            "held_out": {"images": len(held_out), "seed": held_out.stats.get("seed"),
                         "cached": held_out.stats.get("cached", False), "seconds": held_out.stats.get("seconds"),
                         "cache_file": held_out.stats.get("cache_file")},
            "fit": {k: fit.get(k) for k in ("form", "features", "transform", "students", "architectures", "commit")}}


def _budget_warning(config: BuildConfig, budget: dict | None, drop: float, measured: float | None,
                    fix: str) -> str | None:
    """The line a build prints where the estimate of its recovered student (``drop``) misses its budget, or
    is large without one; None where there is nothing to say."""
    if budget and drop > config.max_drop:
        closest = ("no candidate was estimated within it, so this is the closest one" if not budget["met"] else
                   "its cheap candidate was estimated within it")
        return (f"--max-drop {config.max_drop:g} missed: the recovered student is estimated at ~{drop:.1f} "
                f"points ({budget['knob']} {budget['chosen']:g}; {closest}): allow a larger --max-drop"
                + (" or --latency-target" if config.latency_target is not None else "") + f", or {fix}")
    if budget and not budget["met"]:  # after full recovery within it
        return (f"--max-drop {config.max_drop:g}: no candidate in the search was estimated within it "
                f"(closest: {budget['knob']} {budget['chosen']:g} at ~{budget['estimated_drop']:.1f}); "
                f"after full recovery the student is estimated at ~{drop:.1f}")
    if config.max_drop is not None and not budget and drop > config.max_drop:  # a latency target's widths, checked
        return (f"--max-drop {config.max_drop:g} missed: the student of --latency-target "
                f"{config.latency_target.ratio:g} is estimated at ~{drop:.1f} points: allow a larger "
                f"--latency-target or --max-drop, or {fix}")
    if config.max_drop is None and (measured is None or measured > LARGE_DROP) and \
            (large := advice(drop, fix, _milder(config))):  # evaluation data that measured a small drop: no guess
        return large
    return None


def _load_inputs(config: BuildConfig, main: bool, notes: bool = True, processes: int | None = None):
    """The build's config for its teacher's input (``BuildConfig.for_input``), the teacher, where it came
    from, the sha256 of its files (``{"sha256": checkpoint, "arch_sha256": a factory's Python file, hashed
    before it runs}``) and the evaluation data (rank 0 only): every input read before any work, and the memory
    synthesis will need checked against what this machine has free for its ``processes`` (None: this
    machine's processes of the launch, torchrun's ``LOCAL_WORLD_SIZE``). ``notes``: rank 0 warns of what it
    assumed (a signal's range, an image's normalization)."""
    processes = processes or int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if config.model is None:
        teacher = default_teacher()
        _check_memory(config, teacher, processes)
        eval_data = load_eval_data(DEMO_EVAL, teacher.spec) if main else None
        return (config.for_input(teacher.spec.rank), teacher, "built-in default (scikit-learn digits)",
                {"sha256": sha256(DEMO_WEIGHTS), "arch_sha256": None}, eval_data)
    arch = arch_sha256(config.arch)  # the code that runs next, as it is now
    with nullcontext() if main and notes else muted_warnings():  # rank 0 warns of what loading found
        teacher = load_teacher(config.arch, config.model, config.num_classes, config.input_changes())
    config = config.for_input(teacher.spec.rank)
    _check_memory(config, teacher, processes)
    if teacher.range_assumed and main and notes:
        low, high = teacher.spec.value_range
        warn(f"{teacher.name} takes signals and nobody gave their raw range: assumed {low:.4g} to {high:.4g} (each "
             f"channel's mean +- {SIGNAL_RANGE_STDS:g} std of its normalization); dreams stay inside it. Pass "
             "--value-range LOW,HIGH with your sensor's range")
    if teacher.normalization_assumed and main and notes:
        mean, std = (", ".join(f"{v:.4g}" for v in values) for values in (teacher.spec.mean, teacher.spec.std))
        warn(f"{teacher.name} does not say how its inputs were normalized: assumed mean {mean} and std {std} "
             f"(the default for {teacher.spec.shape[0]} channel{'s' if teacher.spec.shape[0] > 1 else ''}); "
             "dreams are made in that space. Pass --mean and --std with the values it was trained with")
    channel = config.pruning(ChannelPruning)
    if channel is not None:
        check_channel_pruning(teacher.module, teacher.spec, channel)
    eval_data = load_eval_data(config.eval_data, teacher.spec, teacher.classes()) if config.eval_data and main else None
    return config, teacher, str(config.model), {"sha256": sha256(Path(config.model)), "arch_sha256": arch}, eval_data


def _check_memory(config: BuildConfig, teacher: Teacher, processes: int) -> None:
    """Refuse a synthesis this machine's memory cannot hold (a GPU holds its own: not checked)."""
    if not config.device.startswith("cuda"):
        check_memory(teacher.module, teacher.spec, config.synthesis.batch_size, config.synthesis.images, processes)


def _one_process_adversary(config: BuildConfig, processes: int) -> None:
    """Refuse --adversarial-steps on several processes: its generator keeps training between epochs
    against the student, one step after the other."""
    if config.distill.adversarial_steps and processes > 1:
        raise EdgefreeError(f"distill adversarial_steps trains the dream generator between epochs, one step after "
                            f"the other, and does not split over processes ({processes} asked for): drop --workers / "
                            "torchrun, or --adversarial-steps")


def build_on_workers(config: BuildConfig, workers: int, progress: bool = True) -> dict:
    """``build`` in ``workers`` processes on this machine (torchrun's launcher; 1: in this process).

    Returns rank 0's report. Raises ``EdgefreeError`` naming the first rank that failed and its error.
    """
    _one_process_adversary(config, workers)
    check_workers(workers)
    if workers == 1:
        return build(config, progress)
    _check_before_launch(config, workers)
    try:
        return distributed.launch(build, config, progress, workers=workers, threads=config.threads)
    except BaseException:  # a rank stopped before its cleanup (killed, or blocked in a collective): clean up after it
        remove_leftovers(config.out)
        raise


def _check_before_launch(config: BuildConfig, workers: int) -> None:
    """What one process checks before any work (target, runtimes, --out, every input), here, before the
    processes start: a bad input is one line, not a rank's failure."""
    distributed.check_device(config.device, workers)
    _target_and_export(config)
    _checked_out(config)
    with muted_warnings():  # rank 0 loads them again and warns (its warnings reach the console from the log)
        _load_inputs(config, True, notes=False, processes=workers)


def _target_and_export(config: BuildConfig):
    """The build's target profile and export settings; a runtime the export needs and lacks stops the build here."""
    target = load_target(config.target)
    export_config = config.export.for_target(target) if config.export else None
    if export_config:  # a missing runtime must stop the build before synthesis, not after
        require_runtimes(export_config.formats)
    if export_config and config.bench:
        check_runs(target, config.bench)
    return target, export_config


def _checked_out(config: BuildConfig) -> Path:
    """``--out``, checked: it can take the build's outputs, and no input lies among those they replace."""
    out = check_out_folder(config.out, OUTPUTS)
    check_inputs_outside(out, {"--model": config.model, "--eval-data": config.eval_data}, OUTPUTS)
    writable_folder(*_dreams_folder(config))  # the cache folders the stages write to: a bad one stops the build here
    if config.export and config.bench:
        root, name = cache_root()
        writable_folder(root / "teacher-artifacts", name)
    refuse_foreign_files(out / "artifacts", "the build")
    return out


def build(config: BuildConfig, progress: bool = True) -> dict | None:
    """Synthesize, prune, reconstruct, distill and evaluate; write the student and reports to ``config.out``.

    Every input is read and checked first; the stages then write into a staging folder beside
    ``config.out`` (``edgefree.outfolder``), whose outputs replace the previous build's only
    when every stage succeeded. Returns the report as a dict (also written to ``report.json``).
    Launched by torchrun, every rank shares synthesis, refit and distillation
    (``edgefree.distributed``); rank 0 alone writes the outputs, exports, benches and returns the
    report; the other ranks return None.

    Example:
        >>> import tempfile
        >>> from edgefree.config import BuildConfig, DistillConfig, ReconstructConfig, SynthesisConfig
        >>> report = build(BuildConfig(out=Path(tempfile.mkdtemp()), synthesis=SynthesisConfig(images=32, iterations=5),
        ...                            reconstruct=ReconstructConfig(images=32), distill=DistillConfig(epochs=1),
        ...                            export=None), progress=False)
        >>> sorted(report["accuracy"])
        ['pruned', 'reconstructed', 'recovered', 'teacher']
    """
    with distributed.session(config.device, config.threads, config.dist_timeout_s) as (world, device):
        _one_process_adversary(config, world.size)
        return _build(config, world, device, progress and world.main)


def _build(config: BuildConfig, world, device: str, progress: bool) -> dict | None:
    target, export_config = _target_and_export(config)
    if not world.main:  # shares the work; rank 0 checks --out and writes
        clock = _Stopwatch(config.dist_timeout_s)
        torch.manual_seed(config.seed)
        with clock("load"):
            config, teacher, *_ = _load_inputs(config, world.main)
        return _stages(config, target, export_config, teacher, None, None, Path(config.out), clock, progress, world,
                       device)
    out = _checked_out(config)
    with locked(out, "build"):  # a second build into the same --out stops here
        return _published(config, target, export_config, out, world, device, progress)


def _published(config: BuildConfig, target, export_config, out: Path, world, device: str, progress: bool) -> dict:
    """Rank 0's build: load, run the stages into a staging folder, publish it into ``out``."""
    torch.manual_seed(config.seed)
    clock = _Stopwatch(config.dist_timeout_s)
    with clock("load"):
        config, teacher, source, hashes, eval_data = _load_inputs(config, world.main)
    with staged(out, replace=True) as folder:
        report = _stages(config, target, export_config, teacher, eval_data, folder, out, clock, progress, world,
                         device)
        report["model"].update(source=source, **hashes)
        write_report(report, folder)
        adopt_log(folder)  # the runtime log (edgefree.logs), published with the outputs
    return report


def _latency_widths(config: BuildConfig, teacher: Teacher, dreams: SyntheticSet, progress: bool, world):
    """The channel student of ``config``'s latency target: rank 0 measures and chooses the widths, every
    rank applies them (``stats["latency"]["layout"]`` on every rank; the rest of the search's record on rank 0)."""
    from edgefree.latency_target import latency_budget

    channel = (config.pruning(ChannelPruning),)
    chosen = latency_budget(teacher, dreams, config.latency_target, channel, config.target,
                            progress) if world.main else None
    layout = distributed.broadcast(chosen.stats["latency"]["layout"] if world.main else None)
    if world.main:
        return chosen
    student = prune(teacher, channel, dreams, progress, layout=layout)
    student.stats["latency"] = {"layout": layout}
    return student


def _prune(config: BuildConfig, teacher: Teacher, dreams: SyntheticSet, progress: bool, world, device: str,
           widths=None):
    """The prune stage (gradual where the channel pruning has steps); with a latency target, the channel
    widths it chose (``widths``: already chosen, ``_latency_widths``), then any magnitude stage on them."""
    if config.latency_target is None:
        return prune_gradually(teacher, config.prune, dreams, config.reconstruct, device, progress)
    widths = widths or _latency_widths(config, teacher, dreams, progress, world)
    magnitude = config.pruning(MagnitudePruning)
    return widths if magnitude is None else with_magnitude(widths, magnitude)


def _stages(config: BuildConfig, target, export_config, teacher, eval_data, out: Path | None, published: Path,
            clock: _Stopwatch, progress: bool, world, device: str) -> dict | None:
    """The stages after loading, writing into ``out`` (the staging folder of ``published``; None on
    a rank other than 0, which shares synthesis, refit and distillation and returns None)."""
    with clock("synthesize"):
        dreams = synthesize_cached(teacher, config, out, progress, device)
        if out is not None:
            save_contact_sheet(dreams, teacher.spec, out / "synthetic.png")
        shards = dreams.stats.get("shards")
        if world.main and shards and shards < world.size and not dreams.stats.get("cached"):
            fix = (f"--shards {world.size} gives each process one" if config.synthesis.shards < world.size else
                   f"a shard is a chain of whole batches (--images {config.synthesis.images} at --synth-batch "
                   f"{config.synthesis.batch_size}): more images or a smaller --synth-batch give each process one")
            warn(f"synthesis made {shards} shard{'s' if shards > 1 else ''} for {world.size} processes, so "
                 f"{world.size - shards} of them waited: {fix}")
    with clock("held-out"):
        held_out = held_out_dreams(teacher, config, progress, device)
    fit, budget, widths = load_fit(), None, None  # the estimate's mapping: one for the search and the final estimates
    if config.max_drop is not None and budget_knob(config) is not None:
        if config.latency_target is not None:  # the latency target's widths first: every candidate keeps them
            with clock("latency-widths"):
                widths = _latency_widths(config, teacher, dreams, progress, world)
        with clock("budget"):  # every rank searches alike (refit and distillation are shared); rank 0's choice wins
            budget = distributed.broadcast(search_budget(teacher, config, dreams, held_out, device, fit, widths))
            config = config.replace(prune=stages_at(config, budget["chosen"]))  # the caller's stages (a filter_fn too)
    with clock("prune"):  # after synthesis: some criteria are measured on the dreams
        pruned = _prune(config, teacher, dreams, progress, world, device, widths)
    with clock("reconstruct"):
        refit = reconstruct(teacher, pruned, dreams, config.reconstruct, device=device, progress=progress)
    with clock("distill"):
        distilled = distill(teacher, refit, dreams, config.distill, seed=config.seed, device=device,
                            progress=progress)
        student = distilled.model.cpu()
        distributed.require_same_model(student)
        ranks = distributed.all_gather(_throughput(config, dreams, refit, distilled))
    if out is None:
        return None
    save_student(distilled, out)
    with clock("evaluate"):
        stages = [("teacher", teacher.module.cpu()), ("pruned", pruned.model), ("recovered", student)]
        if config.reconstruct.images:
            stages.insert(2, ("reconstructed", refit.model.cpu()))
        scores = {name: accuracy(model, eval_data, teacher.spec) if eval_data else None for name, model in stages}
    with clock("estimate"):
        estimated = _estimates(teacher, config, stages[2:], held_out, scores, budget, fit)
    manifest = benched = None  # export=None skips export and bench; bench=None skips bench
    if export_config:
        with clock("export"):
            manifest = export_student(student, teacher.spec, export_config, out / "artifacts", dreams, eval_data,
                                      scores["recovered"], progress, arch=teacher.name)
    if export_config and config.bench:
        with clock("export-teacher"):  # the dense teacher, exported alike, for a fair comparison (cached)
            teacher_export = export_teacher(teacher, export_config, dreams, eval_data, scores["teacher"], progress)
        with clock("bench"):
            benched = bench({"teacher": teacher.module, "student": student},
                            {"teacher": teacher_export.manifest, "student": out / "artifacts" / "manifest.json"},
                            teacher.spec, target, out, config.bench, eval_data,
                            {"teacher": scores["teacher"], "student": scores["recovered"]}, teacher_export, progress,
                            published_as=published, reuse_teacher_rows="latency" not in pruned.stats)

    latency = None
    if "latency" in pruned.stats:
        from edgefree.latency_target import verdict

        latency = verdict(pruned.stats["latency"], benched)
    detail = sparsity_report(student)
    example = teacher.spec.example_inputs()[0]
    costs = {"teacher": cost(teacher.module, example), "student": cost(student, example)}
    magnitude = config.pruning(MagnitudePruning)
    synthesis = config.synthesis
    return {
        "schema": REPORT_SCHEMA,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "invocation": shlex.join(sys.argv),  # the command (or script) that ran the build
        "target": target.to_dict(),
        "model": {"arch": teacher.name, "input": teacher.spec.to_dict(), "value_range_assumed": teacher.range_assumed,
                  "normalization_assumed": teacher.normalization_assumed},
        "eval_data": {"name": eval_data.name if eval_data else None, "images": len(eval_data) if eval_data else 0,
                      "sha256": (eval_identity(eval_data) or {}).get("sha256")},  # of its pixels (or values) and labels
        "accuracy": scores,
        "estimate": estimated,
        "budget": budget,
        "sparsity": detail["overall"],
        "sparsity_target": magnitude.sparsity if magnitude else 0.0,
        "pruning": {"stages": [p.to_dict() for p in config.prune], "plan": pruned.plan.to_json(),
                    "widths": narrowed_widths(teacher.module, student),
                    **{k: v for k, v in pruned.stats.items() if k != "block_scores"}},
        "latency_target": latency,
        "cost": {**costs, "macs_ratio": costs["student"]["macs"] / costs["teacher"]["macs"],
                 "params_ratio": costs["student"]["params"] / costs["teacher"]["params"]},
        "sparsity_detail": detail,
        "recipe_overrides": config.recipe_overrides(teacher.spec.rank),  # what ran besides the recipe's settings
        "synthesis": {"recipe": config.recipe, "method": synthesis.method, "images": len(dreams),
                      "iterations": synthesis.iterations, "first_iterations": synthesis.first_iterations or
                      synthesis.iterations, "batch_size": synthesis.batch_size,
                      "cached": dreams.stats.get("cached", False),
                      **{k: dreams.stats.get(k) for k in ("bn_loss_first", "bn_loss_last", "teacher_agreement",
                                                          "teacher_confidence", "bn_weight", "bn_weight_probes",
                                                          "seconds", "bf16", "steps", "cache_file")}},
        "reconstruct": {**config.reconstruct.to_dict(), **refit.stats},
        "distill": {**config.distill.to_dict(), **distilled.stats},
        "export": manifest,
        "bench": benched,
        "seconds": dict(clock),
        "distributed": {"world_size": world.size, "backend": world.backend, "shards": dreams.stats.get("shards"),
                        "ranks": ranks},
        "seed": config.seed,
        "out": str(published),
        "files": record_files(out),
        "config": config.to_dict(),
        "machine": machine_info(),
    }
