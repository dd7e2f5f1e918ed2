"""The built-in default teacher: a BatchNorm CNN for scikit-learn's 8x8 digits, shipped with the package.

It plays the model owner's part. Its weights (``models/digits-cnn.pt``, a plain state_dict)
were trained once on the digits' 80% training split, which the recovery pipeline never
reads, by ``benchmarks/make_digits_teacher.py`` in edgefree's source repository. Loading
them instead of training on the user's CPU makes the default build's teacher the same on
every machine.
"""

from __future__ import annotations

from pathlib import Path

from edgefree.models import Teacher, load_teacher

DEMO_ARCH = "digits-cnn"
DEMO_EVAL = "digits"
WEIGHTS = Path(__file__).resolve().parent / "models" / "digits-cnn.pt"


def default_teacher() -> Teacher:
    """The built-in default teacher, in eval mode, loaded from the weights inside the package.

    Example:
        >>> teacher = default_teacher()
        >>> teacher.name, teacher.spec.shape
        ('digits-cnn', (1, 8, 8))
    """
    return load_teacher(DEMO_ARCH, WEIGHTS)
