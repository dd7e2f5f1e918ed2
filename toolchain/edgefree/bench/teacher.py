"""The dense teacher's artifacts, for a fair comparison: built by the same export as the student's.

They go to ``<build>/teacher-artifacts/`` (a manifest of the same schema; never deployed),
with the same formats, precisions and INT8 calibration images (the synthetic set) as the
student. A fingerprint of the teacher's weights, the export settings and the calibration
images lets a rebuild reuse them instead of exporting again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from edgefree.config import ExportConfig
from edgefree.data import LabeledImages
from edgefree.recover import SyntheticSet

FOLDER = "teacher-artifacts"
FINGERPRINT = "fingerprint.txt"


def _fingerprint(teacher: nn.Module, config: ExportConfig, calibration: SyntheticSet,
                 eval_data: LabeledImages | None) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for tensor in (*teacher.state_dict().values(), calibration.images):
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(eval_data.name if eval_data is not None else None).encode())
    return h.hexdigest()[:16]


def export_teacher(teacher: nn.Module, build_dir: Path, config: ExportConfig, calibration: SyntheticSet,
                   eval_data: LabeledImages | None = None) -> Path:
    """Export the dense teacher like the student (or reuse a matching export); returns its manifest path.

    Example:
        >>> manifest = export_teacher(teacher, Path("edgefree-out"), ExportConfig().for_target(target),
        ...                           SyntheticSet.load("edgefree-out/synthetic.pt"))  # doctest: +SKIP
    """
    from edgefree.export import export_student

    folder = Path(build_dir) / FOLDER
    stamp = _fingerprint(teacher, config, calibration, eval_data)
    manifest = folder / "manifest.json"
    if manifest.is_file() and (folder / FINGERPRINT).is_file() and (folder / FINGERPRINT).read_text() == stamp:
        return manifest
    (folder / FINGERPRINT).unlink(missing_ok=True)
    export_student(teacher, config, folder, calibration, eval_data)
    (folder / FINGERPRINT).write_text(stamp)
    return manifest
