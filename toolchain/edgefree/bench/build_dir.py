"""``edgefree bench BUILD_DIR``: the bench stage again, on what a finished build left in its folder.

From ``report.json`` it takes the teacher (checkpoint, source and input spec, or the built-in
default), the evaluation data and the export settings; from the folder the
student (``student.pt``), its artifacts and the synthetic images that calibrate the
teacher's INT8 artifacts (on a cache miss), and the PyTorch accuracies of its evaluate stage,
each file checked against the sha256 the build recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgefree.bench import bench, check_runs, selected_artifacts
from edgefree.bench.teacher import export_teacher
from edgefree.config import BenchConfig, ExportConfig
from edgefree.errors import EdgefreeError
from edgefree.outfolder import absolute, check_out_folder, claim, refuse_a_build, staged
from edgefree.report import rerun_seconds, write_report
from edgefree.targets import Target, built_target, load_target
from edgefree.verify import read_build, read_manifest, relocate_teacher, teacher_checkpoint, verify_artifacts

BENCH_OUTPUTS = ("bench.json", "bench.md", "bench.png")  # what a bench writes into its folder


def _models(report: dict, build_dir: Path, model: Path | None):
    from edgefree.demo import DEMO_EVAL, default_teacher
    from edgefree.models import InputSpec, load_teacher
    from edgefree.recover.saved import built_student

    student = built_student(build_dir, report)  # first: it checks the factory file the teacher runs too
    config = report["config"]
    checkpoint = teacher_checkpoint(report, model)
    if checkpoint is None:
        teacher, eval_source = default_teacher(), DEMO_EVAL
    else:
        teacher = load_teacher(config.get("arch"), checkpoint, config["num_classes"],
                               InputSpec.from_dict(report["model"]["input"]))
        eval_source = config["eval_data"]
    return teacher, student, eval_source, checkpoint


def output_folder(build_dir: Path, report: dict, target: Target) -> Path:
    """The build folder for the build's own target; ``bench-<target>/`` in it for any other."""
    return build_dir if target.name == report["target"]["name"] else build_dir / f"bench-{target.name}"


def bench_build(build_dir: Path, target: str | None = None, config: BenchConfig = BenchConfig(),
                out: Path | None = None, model: Path | None = None, progress: bool = False) -> dict:
    """Bench teacher vs student of the build in ``build_dir`` for ``target`` (default: the build's).

    Every file it uses is first checked against the sha256 the build recorded. ``model`` is
    where the teacher checkpoint is now, if it moved (recorded in the build's report when the
    results go into the build's folder).

    Usage, on a finished build::

        result = bench_build(Path("edgefree-out"), "raspberry-pi-4")
    """
    from edgefree.data import load_eval_data
    from edgefree.recover import SyntheticSet

    build_dir = absolute(build_dir)
    report = read_build(build_dir)
    profile = built_target(report) if target in (None, report["target"]["name"]) else load_target(target)
    check_runs(profile, config)
    student_manifest = build_dir / "artifacts" / "manifest.json"
    if not student_manifest.is_file():
        raise EdgefreeError(f"{build_dir} has no artifacts/manifest.json: rebuild it with an edgefree that exports")
    manifest = read_manifest(student_manifest)
    built = selected_artifacts(manifest, profile)
    if not built:
        raise EdgefreeError(f"the build in {build_dir} has no artifact in target {profile.name}'s formats "
                            f"({', '.join(profile.formats)}) and precisions ({', '.join(profile.precisions)}): "
                            f"rebuild it with --target {profile.name}")
    verify_artifacts(manifest, student_manifest.parent, built)
    out = absolute(out or output_folder(build_dir, report, profile))
    own = out == build_dir  # the build's own bench: its report shows the new figures
    if own and profile.name != report["target"]["name"]:
        raise EdgefreeError(f"--out {out} is the build's own folder, whose bench is for its target "
                            f"{report['target']['name']}: leave --out out (the results for {profile.name} go into "
                            f"{output_folder(build_dir, report, profile)}), or pass an empty folder")
    if not own:
        refuse_a_build(out, "--out", f"the bench of {build_dir}", f"leave --out out (the results go into "
                       f"{output_folder(build_dir, report, profile)}), or pass an empty folder")
    check_out_folder(out, BENCH_OUTPUTS + (("report.json", "report.md") if own else ()))
    teacher, student, eval_source, checkpoint = _models(report, build_dir, model)
    eval_data = load_eval_data(eval_source, teacher.spec, teacher.classes()) if eval_source else None
    # the teacher is exported as the student was (its manifest's settings: a later `edgefree export` may have
    # changed them), so a teacher export of the same settings is reused
    exported, built_for = ExportConfig.from_dict(manifest.get("settings") or report["config"].get("export") or {}), \
        built_target(report)
    export_config = exported.replace(**{  # the formats and precisions of it that the build's target runs
        name: tuple(v for v in getattr(exported, name) or () if v in getattr(built_for, name)) or None
        for name in ("formats", "precisions")}).for_target(built_for)
    scores = report.get("accuracy") or {}
    latency = (report.get("pruning") or {}).get("latency") if profile.name == report["target"]["name"] else None
    teacher_export = export_teacher(teacher, export_config, SyntheticSet.load(build_dir / "synthetic.pt"), eval_data,
                                    scores.get("teacher"), progress)
    with staged(out, replace=False) as folder:
        started = time.perf_counter()  # the bench stage alone, as a build times it
        result = bench({"teacher": teacher.module, "student": student},
                       {"teacher": teacher_export.manifest, "student": student_manifest}, teacher.spec, profile, folder,
                       config,
                       eval_data, {"teacher": scores.get("teacher"), "student": scores.get("recovered")},
                       teacher_export, progress, published_as=out, reuse_teacher_rows=latency is None)
        if own:
            timed = rerun_seconds(report, {"export-teacher": teacher_export.seconds,
                                           "bench": time.perf_counter() - started})
            checked = {}
            if latency is not None:  # the target checked again on this bench's rows
                from edgefree.latency_target import verdict

                checked = {"latency_target": verdict(latency, result)}
            write_report({**relocate_teacher(timed, checkpoint), "bench": result, **checked}, folder, build_dir)
    if out == output_folder(build_dir, report, profile) != build_dir:  # bench-<target>/, this build's student
        claim(build_dir, out.name)
    return result
