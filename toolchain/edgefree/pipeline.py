"""``build()``: the stages in order, top to bottom, each one public function.

    teacher -> prune -> synthesize -> reconstruct -> distill -> evaluate -> export -> bench -> report

Synthetic images are cached in the output folder, keyed by the teacher's weights,
the synthesis config and the seed, so a rebuild with other distillation settings
does not dream again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from edgefree.bench import bench
from edgefree.bench.teacher import export_teacher
from edgefree.config import BuildConfig
from edgefree.data import load_eval_data
from edgefree.demo import DEMO_EVAL, default_teacher
from edgefree.evaluate import accuracy
from edgefree.export import export_student
from edgefree.export.runtime import require_runtimes
from edgefree.machine import machine_info
from edgefree.models import load_model
from edgefree.recover import SyntheticSet, distill, prune, reconstruct, sparsity_report, synthesize
from edgefree.recover.synthesize import save_contact_sheet
from edgefree.report import write_report
from edgefree.targets import load_target

OUTPUTS = ("report.json", "report.md", "student.pt", "synthetic.pt", "synthetic.png", "flash.json", "bench.json", "bench.md",
           "bench.png")


class _Stopwatch(dict):
    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        yield
        self[stage] = round(time.perf_counter() - started, 2)


def _fingerprint(teacher, config: BuildConfig) -> str:
    h = hashlib.sha256(repr(sorted(config.synthesis.to_dict().items())).encode() + str(config.seed).encode())
    for tensor in teacher.state_dict().values():
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def synthesize_cached(teacher, config: BuildConfig, out: Path, progress: bool) -> SyntheticSet:
    """The synthesis stage, reusing ``<cache>/synthetic-<fingerprint>.pt`` (default cache: ``out/cache``).

    The set is also published as ``out/synthetic.pt``: a hard link to the cached file where the
    file system allows (no second copy of what can be 100 MB), a copy elsewhere.
    """
    cached = Path(config.cache or out / "cache") / f"synthetic-{_fingerprint(teacher, config)}.pt"
    if cached.exists():
        dreams = SyntheticSet.load(cached)
        dreams.stats["cached"] = True
    else:
        dreams = synthesize(teacher, config.synthesis, seed=config.seed, device=config.device, progress=progress)
        cached.parent.mkdir(parents=True, exist_ok=True)
        dreams.save(cached)
    published = out / "synthetic.pt"
    out.mkdir(parents=True, exist_ok=True)
    published.unlink(missing_ok=True)
    try:
        os.link(cached, published)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(cached, published)
    return dreams


def _prepare_out(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # a failed rebuild must not leave the previous success in place
        (out / name).unlink(missing_ok=True)
    return out


def build(config: BuildConfig, progress: bool = True) -> dict:
    """Prune, synthesize, reconstruct, distill and evaluate; write the student and reports to ``config.out``.

    Returns the report as a dict (also written to ``report.json``).

    Example:
        >>> from edgefree.config import BuildConfig, SynthesisConfig, DistillConfig
        >>> report = build(BuildConfig(out=Path("/tmp/ef"), synthesis=SynthesisConfig(images=64, iterations=10),
        ...                            distill=DistillConfig(epochs=2)), progress=False)  # doctest: +SKIP
    """
    target = load_target(config.target)
    export_config = config.export.for_target(target) if config.export else None
    if export_config:  # a missing runtime must stop the build before synthesis, not after
        require_runtimes(export_config.formats)
    out = _prepare_out(Path(config.out))
    torch.manual_seed(config.seed)
    clock = _Stopwatch()

    with clock("load"):
        if config.model is None:
            teacher, source, eval_source = default_teacher(config.seed), "built-in default (scikit-learn digits)", DEMO_EVAL
        else:
            teacher, source = load_model(config.arch, config.model, config.num_classes), str(config.model)
            eval_source = config.eval_data
        eval_data = load_eval_data(eval_source, teacher.input_spec) if eval_source else None
    with clock("prune"):
        pruned = prune(teacher, config.prune)
    with clock("synthesize"):
        dreams = synthesize_cached(teacher, config, out, progress)
        save_contact_sheet(dreams, teacher.input_spec, out / "synthetic.png")
    with clock("reconstruct"):
        refit = reconstruct(teacher, pruned, dreams, config.reconstruct, device=config.device, progress=progress)
    with clock("distill"):
        distilled = distill(teacher, refit, dreams, config.distill, seed=config.seed, device=config.device,
                            progress=progress)
        student = distilled.model.cpu()
        torch.save(student.state_dict(), out / "student.pt")
    with clock("evaluate"):
        stages = [("teacher", teacher.cpu()), ("pruned", pruned.model), ("recovered", student)]
        if config.reconstruct.images:
            stages.insert(2, ("reconstructed", refit.model.cpu()))
        scores = {name: accuracy(model, eval_data) if eval_data else None for name, model in stages}
    manifest = benched = None  # export=None skips export and bench; bench=None skips bench
    if export_config:
        with clock("export"):
            manifest = export_student(student, export_config, out / "artifacts", dreams, eval_data,
                                      scores["recovered"], progress)
    if export_config and config.bench:
        with clock("export-teacher"):  # the dense teacher, exported alike, for a fair comparison (cached)
            teacher_export = export_teacher(teacher, export_config, dreams, eval_data, scores["teacher"], progress)
        with clock("bench"):
            benched = bench({"teacher": teacher, "student": student},
                            {"teacher": teacher_export.manifest, "student": out / "artifacts" / "manifest.json"},
                            target, out, config.bench, eval_data,
                            {"teacher": scores["teacher"], "student": scores["recovered"]}, teacher_export, progress)

    detail = sparsity_report(student)
    report = {
        "target": target.to_dict(),
        "model": {"arch": teacher.arch, "source": source, "input": teacher.input_spec.to_dict()},
        "eval_data": {"name": eval_data.name if eval_data else None, "images": len(eval_data) if eval_data else 0},
        "accuracy": scores,
        "sparsity": detail["overall"],
        "sparsity_target": config.prune.sparsity,
        "sparsity_detail": detail,
        "synthesis": {"recipe": config.recipe, "method": config.synthesis.method, "images": len(dreams), "iterations": config.synthesis.iterations,
                      "batch_size": config.synthesis.batch_size, "cached": dreams.stats.get("cached", False),
                      **{k: dreams.stats.get(k) for k in ("bn_loss_first", "bn_loss_last", "teacher_agreement", "seconds", "bf16", "steps")}},
        "reconstruct": {**config.reconstruct.to_dict(), **refit.stats},
        "distill": {**config.distill.to_dict(), **distilled.stats},
        "export": manifest,
        "bench": benched,
        "seconds": dict(clock),
        "seed": config.seed,
        "config": config.to_dict(),
        "machine": machine_info(),
    }
    write_report(report, out)
    return report
