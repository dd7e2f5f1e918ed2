"""An estimate of the student's top-1 drop against the teacher, measured without any real data.

On held-out dreams (dreamed from their own seed; no stage trains, refits or calibrates on
them) the student is compared with the teacher:

* ``disagree``: % of the dreams on which the student's top-1 differs from the teacher's;
* ``kl``: mean KL(teacher || student) of the softmax outputs (nats);
* ``disagree_hard``: % disagreement on harder views of the dreams (two per dream: shifted by up to 1/8 of
  each side, images mirrored, Gaussian noise of 0.5 std added in normalized units);
* ``disagree_class_max``: the largest disagreement of any class (dreams grouped by the teacher's top-1);
* ``disagree_mix``: % disagreement on dreams of a second kind, pairs of dreams mixed 50/50 (two per dream),
  which lie between the classes, where a real image that the teacher finds hard lies;
* ``label_misfit``: minus the log of the share of the dreams that the teacher labels as the class each was
  dreamed for (0 when it labels all of them so). It describes the dreams, not the student: the further they
  stray from what the teacher was trained on, the less a student's agreement on them says about its agreement
  on real inputs, and the larger the drop behind the same disagreement.

A mapping fitted on students whose real drop was measured (``benchmarks/fidelity.py``, shipped
as ``estimate_fit.json`` beside this module, with the command that fitted it) turns these into
an estimated drop in top-1 points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgefree.errors import EdgefreeError
from edgefree.models import InputSpec, Teacher
from edgefree.recover.checks import module_of, stage_inputs
from edgefree.recover.inversion import SyntheticSet
from edgefree.recover.losses import kl_divergence
from edgefree.recover.student import Student

FIT = Path(__file__).resolve().parent / "estimate_fit.json"
FEATURES = ("disagree", "kl", "disagree_hard", "disagree_class_max", "disagree_mix", "label_misfit")
NOISE_STD = 0.5  # of the harder views, in normalized units
VIEWS = 2  # harder views and mixes per dream
LARGE_DROP = 3.0  # points: above this a build says so and what to change


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([model(b.to(device)).float().cpu() for b in x.split(batch_size)])


def _harder(x: torch.Tensor, spec: InputSpec, g: torch.Generator) -> torch.Tensor:
    """Each dream shifted by up to 1/8 of each side (edges replicated), images mirrored half the time, plus noise."""
    n, sizes = len(x), x.shape[2:]
    pad = [max(1, s // 8) for s in sizes]
    padded = F.pad(x, [p for p in reversed(pad) for _ in (0, 1)], mode="replicate")
    rows = torch.arange(n)
    if spec.rank == 1:
        t = torch.randint(0, 2 * pad[0] + 1, (n,), generator=g)[:, None] + torch.arange(sizes[0])
        out = padded[rows[:, None], :, t].permute(0, 2, 1)
    else:
        h = torch.randint(0, 2 * pad[0] + 1, (n,), generator=g)[:, None] + torch.arange(sizes[0])
        w = torch.randint(0, 2 * pad[1] + 1, (n,), generator=g)[:, None] + torch.arange(sizes[1])
        out = padded[rows[:, None, None], :, h[:, :, None], w[:, None, :]].permute(0, 3, 1, 2)
        flip = torch.rand(n, generator=g) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    low, high = spec.bounds()
    noisy = out + NOISE_STD * torch.randn(out.shape, generator=g)
    return torch.maximum(torch.minimum(noisy, high), low).contiguous()


def _mixed(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each dream mixed 50/50 with another one drawn at random."""
    return 0.5 * x + 0.5 * x[torch.randperm(len(x), generator=g)]


def _disagree(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * float((a.argmax(1) != b.argmax(1)).float().mean())


def features(teacher: nn.Module, student: nn.Module, held_out: SyntheticSet, spec: InputSpec,
             seed: int = 0) -> dict[str, float]:
    """The student against the teacher on ``held_out`` dreams (``FEATURES``, module docstring).

    Example:
        >>> from edgefree.demo import default_teacher
        >>> from edgefree.config import SynthesisConfig
        >>> from edgefree.recover import synthesize
        >>> teacher = default_teacher()
        >>> dreams = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=5), progress=False)
        >>> features(teacher.module, teacher.module, dreams, teacher.spec)["disagree_hard"]
        0.0
    """
    g = torch.Generator().manual_seed(seed)
    models = (teacher.eval(), student.eval())
    x = held_out.images
    t, s = (_logits(m, x) for m in models)
    kl = kl_divergence(s, t)
    hard = torch.cat([_harder(x, spec, g) for _ in range(VIEWS)])
    mixed = torch.cat([_mixed(x, g) for _ in range(VIEWS)])
    by_class = t.argmax(1)
    per_class = [_disagree(t[by_class == c], s[by_class == c]) for c in by_class.unique() if (by_class == c).sum() >= 3]
    return {"disagree": _disagree(t, s), "kl": float(kl),
            "disagree_hard": _disagree(*(_logits(m, hard) for m in models)),
            "disagree_class_max": max(per_class, default=_disagree(t, s)),
            "disagree_mix": _disagree(*(_logits(m, mixed) for m in models)),
            "label_misfit": _label_misfit(t, held_out.labels)}


def _label_misfit(teacher_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Minus the log of the share of dreams the teacher labels as their target (at least one dream counted)."""
    labelled = int((teacher_logits.argmax(1) == labels.to(teacher_logits.device)).sum())
    return -math.log(max(labelled, 1) / len(labels))


def load_fit(path: Path = FIT) -> dict:
    """The fitted mapping from features to drop (written by ``benchmarks/fidelity.py``)."""
    if not path.is_file():
        raise EdgefreeError(f"the accuracy estimate's fit {path} is missing: reinstall edgefree, or write it with "
                            "`python benchmarks/fidelity.py`")
    return json.loads(path.read_text())


def chance_drop(classes: int) -> float:
    """The drop (points) of a student at chance, 100 * (1 - 1 / classes)."""
    return 100.0 * (1 - 1 / classes)


def predict(fit: dict, measured: dict[str, float], classes: int | None = None) -> float:
    """The drop (points) that ``fit`` gives for ``measured`` features: a linear function of the
    fit's features; with ``transform`` "log1p", log(1 + drop) as a linear function of
    log(1 + feature) (a power law); with "logit", the logit of the drop's share of a student at
    chance (``chance_drop``) as a linear function of the features (a drop bounded at
    both ends, its errors as large as it is); with "log1p-max", the largest of its ``parts``, each
    such a power law of one feature. Never below 0, nor above a student at chance."""
    if fit.get("transform") == "log1p-max":
        return max(predict(part, measured, classes) for part in fit["parts"])
    values = [measured[name] for name in fit["features"]]
    transform = fit.get("transform")
    if transform == "log1p":
        values = [math.log1p(max(v, 0.0)) for v in values]
    drop = fit["intercept"] + sum(c * v for c, v in zip(fit["coef"], values))
    if transform == "log1p":
        drop = math.expm1(min(drop, 10.0))
    elif transform == "logit":  # a model whose classes are unknown is taken for ten
        drop = chance_drop(classes or 10) / (1.0 + math.exp(-max(min(drop, 50.0), -50.0)))
    return min(max(0.0, float(drop)), chance_drop(classes) if classes else math.inf)


def estimate(teacher: Teacher, student: nn.Module | Student, held_out: SyntheticSet, seed: int = 0,
             fit: dict | None = None) -> dict:
    """The estimated top-1 drop of ``student`` (a module, or a ``Student``'s model) against ``teacher`` in points,
    from ``held_out`` dreams alone.

    Returns ``{"drop": points, "features": {...}}`` (``fit``: the mapping; None: the shipped one).

    Example:
        >>> from edgefree.demo import default_teacher
        >>> from edgefree.config import SynthesisConfig
        >>> from edgefree.recover import synthesize
        >>> teacher = default_teacher()
        >>> dreams = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=5), progress=False)
        >>> estimate(teacher, teacher.module, dreams)["drop"] < 1.0
        True
    """
    stage_inputs(teacher, held_out)
    student = module_of(student)
    if not len(held_out):
        raise EdgefreeError("the accuracy estimate needs held-out dreams and got none: dream them with "
                            "edgefree.pipeline.held_out_dreams (or synthesize with a seed of their own)")
    fit = fit or load_fit()
    measured = features(teacher.module, student, held_out, teacher.spec, seed)
    classes = _logits(teacher.module.eval(), held_out.images[:1]).shape[1]
    return {"drop": round(predict(fit, measured, classes), 2), "features": {k: round(v, 4) for k, v in measured.items()}}


def remedy(method: str, rank: int, epochs: int) -> str:
    """What to change to recover more, for a build of synthesis ``method`` on a teacher of input ``rank``
    (2: an image; 1: a signal) distilled ``epochs`` epochs: an image teacher dreamed pixel by pixel gets
    the generator's new dreams every epoch (``--recipe generator``, which recovered more on every image
    row of ``benchmarks/results/recovery_levers.md`` than twice the distillation of ``fast``'s dreams); a
    generator build or a signal (on the EEG teacher of ``benchmarks/results/signal_recovery.md`` the
    generator gained nothing where ``fast`` reached the teacher, and lost 11 points at 98% magnitude),
    twice the distillation."""
    if method != "generator" and rank == 2:
        return "dream with --recipe generator (new dreams every epoch)"
    return f"distil longer (--epochs {2 * epochs})"


def advice(drop: float, fix: str, milder: str, limit: float = LARGE_DROP) -> str | None:
    """One line for a build whose estimated drop exceeds ``limit`` points: what to change (None: not large).
    ``fix``: what recovers more for this build (``remedy``); ``milder``: the options that prune it less."""
    if drop <= limit:
        return None
    return (f"the estimated drop (~{drop:.1f} points) is large: prune less ({milder}), {fix}, "
            "or let edgefree choose with --max-drop D")
