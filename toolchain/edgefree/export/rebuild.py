"""Export again from a finished build folder (``edgefree export BUILD_DIR``), e.g. for other formats.

The build folder holds all it takes: ``student.pt`` and ``student-plan.json`` (weights and shapes;
``student.pt2`` for a teacher that was a program), ``report.json`` (the teacher's source, input
spec, target and evaluation set) and ``synthetic.pt`` (calibration).
"""

from __future__ import annotations

import time
from pathlib import Path

from edgefree.bench.build_dir import BENCH_OUTPUTS
from edgefree.config import ExportConfig
from edgefree.data import load_eval_data
from edgefree.demo import DEMO_EVAL
from edgefree.errors import EdgefreeError, warn
from edgefree.export import export_student, refuse_foreign_files
from edgefree.export.manifest import MANIFEST
from edgefree.models import InputSpec, output_count
from edgefree.recover import SyntheticSet
from edgefree.recover.saved import built_student
from edgefree.report import rerun_seconds, write_report
from edgefree.outfolder import absolute, check_out_folder, refuse_a_build, staged
from edgefree.targets import built_target
from edgefree.verify import read_build, record_files, relocate_teacher, teacher_checkpoint

def reexport(build_dir: Path, config: ExportConfig, out: Path | None = None, eval_data: str | None = None,
             model: Path | None = None, progress: bool = True) -> dict:
    """Export the student of ``build_dir`` into ``out`` (default ``build_dir/artifacts``); returns the manifest.

    Unset formats and precisions are those the build exported (its ``--formats`` and ``--precisions``,
    else its target's), the evaluation set the build's unless ``eval_data`` names another. ``student.pt`` and ``synthetic.pt`` are checked
    against the sha256 the build recorded first. The new artifacts replace the old ones only
    once all of them are built (``edgefree.outfolder``); exporting into the build's own
    ``artifacts/`` also updates its report, and records ``model`` (where the teacher checkpoint
    is now, checked by sha256) as the build's teacher.

    Usage, on a finished build::

        manifest = reexport(Path("edgefree-out"), ExportConfig(formats=("onnx",)))
    """
    started = time.perf_counter()
    build_dir = absolute(build_dir)
    if not (build_dir / "report.json").is_file() and build_dir.is_dir():
        raise EdgefreeError(f"{build_dir} is not a finished edgefree build (missing report.json): "
                            "run `edgefree build --out DIR` first and pass that DIR")
    report = read_build(build_dir, uses=("student.pt", "student-plan.json", "student.pt2", "synthetic.pt"))
    checkpoint = teacher_checkpoint(report, model) if model is not None else None
    spec = InputSpec.from_dict(report["model"]["input"])
    student = built_student(build_dir, report)
    built_eval = report["config"]["eval_data"] if report["config"]["model"] else DEMO_EVAL
    source = eval_data or built_eval
    folder = absolute(out) if out else build_dir / "artifacts"
    own = folder == build_dir / "artifacts"
    if not own:
        refuse_a_build(folder, "--out", "`edgefree export`", f"pass an empty folder, or leave --out out to export "
                       f"into {build_dir / 'artifacts'}")
    publish_to = build_dir if own else check_out_folder(folder, (MANIFEST,))
    if own:
        check_out_folder(build_dir, ("artifacts", "report.json", "report.md"))
        refuse_foreign_files(folder, "`edgefree export`")
    built = ExportConfig.from_dict(report["config"].get("export") or {})  # what the build asked for
    config = config.replace(formats=config.formats or built.formats, precisions=config.precisions or built.precisions)
    export_config = config.for_target(built_target(report))
    calibration = SyntheticSet.load(build_dir / "synthetic.pt")
    evaluation = load_eval_data(source, spec, output_count(student, spec)) if source else None
    stale = tuple(n for n in BENCH_OUTPUTS if (build_dir / n).exists()) if own else ()
    with staged(publish_to, replace=not own, retire=stale) as staging:
        manifest = export_student(student, spec, export_config, staging / "artifacts" if own else staging,
                                  calibration, evaluation, progress=progress, arch=report["model"]["arch"])
        if own:  # the bench measured the artifacts this export replaces: its results go with them
            timed = rerun_seconds(report, {"bench": None, "export-teacher": None,  # the retired bench's stages
                                           "export": time.perf_counter() - started})
            updated = relocate_teacher({**timed, "export": manifest, "bench": None}, checkpoint)
            write_report({**updated, "files": {**report["files"], **record_files(staging)}}, staging, build_dir)
    if own and (stale or report.get("bench")):
        warn(f"the bench results of {build_dir} measured the artifacts this export replaced, so they were removed: "
             f"run `edgefree bench {build_dir}` to measure the new ones")
    return manifest
