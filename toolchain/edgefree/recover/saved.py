"""A student on disk: ``student.pt`` (state_dict), ``student-plan.json`` (what pruning removed) and
``student.pt2`` (a ``torch.export`` program that loads without edgefree or the teacher's code:
``torch.export.load("edgefree-out/student.pt2").module()``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from edgefree.demo import DEMO_ARCH
from edgefree.errors import CheckpointError, EdgefreeError, IntegrityError
from edgefree.export.unpack import sha256_file
from edgefree.models import load_checkpoint
from edgefree.models.program import load_program
from edgefree.models.sources import build_architecture, is_program, parse_source
from edgefree.recover.student import PrunePlan, Student

WEIGHTS, PLAN, PROGRAM = "student.pt", "student-plan.json", "student.pt2"


def save_student(student: Student, folder: Path) -> list[Path]:
    """Write the student's weights, plan and exported program into ``folder`` (made if missing); returns the
    paths. The student's module stays where it is (a copy on the CPU is saved)."""
    if not isinstance(student, Student) or student.spec is None:
        raise EdgefreeError("save_student needs a Student that knows its input (spec): a student of prune, "
                            "reconstruct or distill, or Student(model, plan, spec=teacher.spec)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(student.model).cpu().eval()
    torch.save(model.state_dict(), folder / WEIGHTS)
    (folder / PLAN).write_text(json.dumps(student.plan.to_json(), indent=1) + "\n")
    program = torch.export.export(model, student.spec.example_inputs(2),  # any batch size
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
    torch.export.save(program, folder / PROGRAM)
    return [folder / WEIGHTS, folder / PLAN, folder / PROGRAM]


def student_source(config: dict) -> str | None:
    """The teacher's source of the build whose ``report.json`` config is ``config``, as ``load_student`` takes it."""
    return config.get("arch") if config.get("model") else DEMO_ARCH


def arch_sha256(source: str | None) -> str | None:
    """The sha256 of the Python file a ``path/to/file.py:factory`` source runs (None for any other source)."""
    if source is None or is_program(source):
        return None
    parsed = parse_source(source)
    return sha256_file(Path(parsed.target)) if parsed.kind == "file" and Path(parsed.target).is_file() else None


def require_built_arch(report: dict, build_dir: Path) -> None:
    """Refuse a build whose factory file (``--arch path/to/file.py:factory``) changed since it recorded its sha256:
    the teacher and student it builds would be other models."""
    source, built = student_source(report["config"]), report["model"].get("arch_sha256")
    if built is None or arch_sha256(source) == built:
        return
    file = Path(parse_source(source).target)
    if not file.is_file():
        raise IntegrityError(f"{file}, the Python file that builds the models of {build_dir}, is missing: put it back "
                             "where the build read it")
    raise IntegrityError(f"{file} changed since the build (its sha256 differs from the one the build recorded): the "
                         f"models it builds would be others. Restore the file as it was when {build_dir} was built, "
                         "or rebuild")


def built_student(build_dir: Path, report: dict) -> nn.Module:
    """The student of the finished build in ``build_dir`` (``report``: its report.json), once its factory file is
    checked (``require_built_arch``): what bench and export load."""
    require_built_arch(report, build_dir)
    return load_student(build_dir, student_source(report["config"]), report["config"]["num_classes"])


def load_student(folder: Path, source: str | None, num_classes: int = 10) -> nn.Module:
    """The student saved in ``folder``, for a teacher of ``source`` (``load_teacher``'s; None or a ``.pt2``:
    a program teacher).

    A zoo, torchvision or factory source is built afresh (a factory runs the user's code again), shrunk by
    the plan and loaded from ``student.pt``; a program teacher's student is its own program,
    ``student.pt2``. A plan that does not fit the architecture, or weights that do not fit the plan,
    is a clear error (``require_built_arch`` first checks a factory's file).
    """
    folder = Path(folder)
    if source is None or is_program(source):
        return load_program(folder / PROGRAM)[0]
    parsed = parse_source(source)
    model = build_architecture(parsed, num_classes)[0]
    plan_path = folder / PLAN
    if plan_path.is_file():
        try:
            values = json.loads(plan_path.read_text())
        except (OSError, ValueError) as exc:
            raise EdgefreeError(f"{plan_path} is not a readable pruning plan ({exc}): rebuild the student") from exc
        PrunePlan.from_json(values).apply(model)
    try:
        return load_checkpoint(model, folder / WEIGHTS, parsed.name)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} The pruning plan {plan_path.name} does not fit {WEIGHTS}: keep the two files "
                              "of one build together") from exc
