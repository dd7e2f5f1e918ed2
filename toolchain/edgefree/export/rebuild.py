"""Export again from a finished build folder (``edgefree export BUILD_DIR``), e.g. for other formats.

The build folder holds all it takes: ``student.pt`` (weights), ``report.json`` (the
architecture, input spec, target and evaluation set) and ``synthetic.pt`` (calibration).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefree.config import ExportConfig
from edgefree.data import load_eval_data
from edgefree.demo import DEMO_EVAL
from edgefree.errors import EdgefreeError
from edgefree.export import export_student
from edgefree.models import InputSpec
from edgefree.recover import SyntheticSet
from edgefree.recover.saved import load_student
from edgefree.report import write_report
from edgefree.targets import load_target

NEEDED = ("report.json", "student.pt", "synthetic.pt")


def reexport(build_dir: Path, config: ExportConfig, out: Path | None = None, eval_data: str | None = None) -> dict:
    """Export the student of ``build_dir`` into ``out`` (default ``build_dir/artifacts``); returns the manifest.

    Unset formats and precisions come from the build's target, the evaluation set from the
    build's unless ``eval_data`` names another. Exporting into the build's own ``artifacts/``
    also updates its report.

    Usage, on a finished build::

        manifest = reexport(Path("edgefree-out"), ExportConfig(formats=("onnx",)))
    """
    build_dir = Path(build_dir)
    missing = [name for name in NEEDED if not (build_dir / name).is_file()]
    if missing:
        raise EdgefreeError(f"{build_dir} is not a finished edgefree build (missing {', '.join(missing)}): "
                            "run `edgefree build --out DIR` first and pass that DIR")
    report = json.loads((build_dir / "report.json").read_text())
    spec = InputSpec(**{key: tuple(value) for key, value in report["model"]["input"].items()})
    student = load_student(build_dir, report["model"]["arch"], report["config"]["num_classes"], spec)
    built_eval = report["config"]["eval_data"] if report["config"]["model"] else DEMO_EVAL
    source = eval_data or built_eval
    folder = Path(out) if out else build_dir / "artifacts"
    manifest = export_student(student, config.for_target(load_target(report["target"]["name"])), folder,
                              SyntheticSet.load(build_dir / "synthetic.pt"),
                              load_eval_data(source, spec) if source else None)
    if folder.resolve() == (build_dir / "artifacts").resolve():
        report["export"] = manifest
        write_report(report, build_dir)
    return manifest
