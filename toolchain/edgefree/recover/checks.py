"""What each stage of the Python API checks of its arguments before any work: one line naming a wrong
argument and where the right one comes from, instead of an attribute error deep inside."""

from __future__ import annotations

from torch import nn

from edgefree.errors import EdgefreeError
from edgefree.models import Teacher
from edgefree.recover.inversion import SyntheticSet
from edgefree.recover.student import Student

# where a user gets each kind of argument
_FROM = {
    "Teacher": "edgefree.load_teacher(...) returns one, also of a module you built: load_teacher(module, "
               "input_spec={'shape': (3, 32, 32)})",
    "Student": "prune(teacher, config, dreams) returns one (reconstruct and distill too)",
    "SyntheticSet": "synthesize(teacher, config) returns one",
    "Module": "a student's .model, or any nn.Module",
}


def require(value, kind: type, argument: str = "config") -> None:
    """``value`` is a ``kind``, or one line says what ``argument`` must be (and, for a teacher, student or
    dreams, where one comes from)."""
    if not isinstance(value, kind):
        where = _FROM.get(kind.__name__)
        raise EdgefreeError(f"{argument} must be a {kind.__name__}, got {type(value).__name__}"
                            + (f": {where}" if where else ""))


_NO_DREAMS = object()  # a stage that takes no dreams


def stage_inputs(teacher, dreams=_NO_DREAMS, student=None, config=None, config_kind: type | None = None,
                 dreams_optional: bool = False) -> None:
    """A stage's teacher, dreams, student and config checked by kind, and the dreams by shape: images of the
    teacher's input (dreams of another teacher would fail deep inside a convolution). ``dreams_optional``: a
    stage that works without them takes None."""
    require(teacher, Teacher, "teacher")
    if student is not None:
        require(student, Student, "the pruned student")
    if config_kind is not None:
        require(config, config_kind)
    if dreams is _NO_DREAMS or (dreams is None and dreams_optional):
        return
    require(dreams, SyntheticSet, "dreams")
    shape, wanted = tuple(dreams.images.shape[1:]), tuple(teacher.spec.shape)
    if shape != wanted:
        raise EdgefreeError(f"the dreams are {'x'.join(map(str, shape))} and the teacher takes "
                            f"{'x'.join(map(str, wanted))}: dream them from this teacher (synthesize(teacher, ...))")


def module_of(student, argument: str = "student") -> nn.Module:
    """The module of ``student``: a ``Student``'s model, or a module itself."""
    if isinstance(student, Student):
        return student.model
    require(student, nn.Module, argument)
    return student
