"""The dense teacher's artifacts, for a fair comparison: built by the same export as the student's.

Same formats, precisions, settings and INT8 calibration images (the synthetic set) as the
student; a manifest of the same schema; never deployed. They are cached under
``cache_dir("teacher-artifacts", <fingerprint>)``, the fingerprint being the teacher's
weights, the export settings, the calibration images and the evaluation set's name, so
every build of the same teacher on this machine reuses one export.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from torch import nn

from edgefree.cache import cache_dir
from edgefree.config import ExportConfig
from edgefree.data import LabeledImages
from edgefree.recover import SyntheticSet


def _fingerprint(teacher: nn.Module, config: ExportConfig, calibration: SyntheticSet,
                 eval_data: LabeledImages | None) -> str:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for tensor in (*teacher.state_dict().values(), calibration.images):
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(str(eval_data.name if eval_data is not None else None).encode())
    return h.hexdigest()[:16]


def export_teacher(teacher: nn.Module, config: ExportConfig, calibration: SyntheticSet,
                   eval_data: LabeledImages | None = None) -> Path:
    """Export the dense teacher like the student (or reuse a matching export); returns its manifest path.

    Usage, on a finished build::

        manifest = export_teacher(teacher, ExportConfig().for_target(target),
                                  SyntheticSet.load("edgefree-out/synthetic.pt"))
    """
    from edgefree.export import export_student

    stamp = _fingerprint(teacher, config, calibration, eval_data)
    folder = cache_dir("teacher-artifacts") / stamp
    if not (folder / "manifest.json").is_file():
        partial = folder.with_name(stamp + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        export_student(teacher, config, partial, calibration, eval_data)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)  # complete or absent: never a half export under the final name
    return folder / "manifest.json"
