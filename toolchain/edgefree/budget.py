"""``--max-drop D``: the strongest compression whose estimated top-1 drop is at most D points.

The knob searched is the magnitude sparsity (magnitude pruning) or the MACs target (channel
pruning, and channel then magnitude: the magnitude stage keeps its sparsity; its strongest end is
the lowest the channel search reaches, where that is above ``MACS_TARGET``'s). With a latency target
the channel widths are the latency search's: the knob is the sparsity of a magnitude stage after
them, and without one there is nothing to search (``knob`` is None: the build checks the student it
recovers against the budget). Each candidate is
cheap: prune, refit by least squares on ``SEARCH_IMAGES`` dreams (fewer where the recipe refits on
fewer), then the data-free estimate (``edgefree.recover.estimate``) on the held-out dreams. No
distillation: a short one at the recipe's learning rate throws a freshly refit student far from
the teacher before it settles (a barely pruned, refit ResNet-56 loses most of its accuracy in one
such epoch, and regains it over the recipe's), so a candidate's estimate would say more about that
than about the pruning. Where the recipe does not refit, ``SEARCH_EPOCHS`` epoch of distillation at a tenth of its
learning rate stands in. The strongest end is tried first; where it misses, a bisection between it
and no pruning at all narrows the knob (``CANDIDATES`` in all). The full recovery that follows
(refit on every dream, the recipe's distillation) is estimated again: that estimate can land above
the candidate's (it did in both rows of ``benchmarks/results/max_drop.md``, and at a demo's few epochs
of distillation often does), and the build says so where it then exceeds the budget.
"""

from __future__ import annotations

import math
import time

from edgefree.config import BuildConfig, ChannelPruning, MagnitudePruning
from edgefree.errors import EdgefreeError, MildTargetError, UnreachableTargetError, muted_warnings
from edgefree.models import Teacher
from edgefree.recover import SyntheticSet, distill, reconstruct
from edgefree.recover.channels import lowest_macs_kept
from edgefree.recover.estimate import estimate, load_fit
from edgefree.recover.gradual import prune_gradually
from edgefree.recover.prune import with_magnitude
from edgefree.recover.student import Student

SPARSITY = (0.0, 0.97)  # magnitude: (no pruning, the strongest tried)
MACS_TARGET = (1.0, 0.1)  # channel: (no pruning, the strongest tried)
CANDIDATES = 5
SEARCH_IMAGES = 512
SEARCH_EPOCHS = 1


def knob(config: BuildConfig) -> str | None:
    """What ``--max-drop`` searches in ``config``: "sparsity" or "macs_target"; None where a latency target
    sets the channel widths and no magnitude stage follows them.

    Example:
        >>> knob(BuildConfig(prune=(ChannelPruning(macs_target=0.5), MagnitudePruning())))
        'macs_target'
    """
    if config.latency_target is not None:
        return "sparsity" if config.pruning(MagnitudePruning) else None
    return "macs_target" if config.pruning(ChannelPruning) else "sparsity"


def stages_at(config: BuildConfig, value: float) -> tuple:
    """``config``'s pruning stages with the searched knob set to ``value``.

    Example:
        >>> stages_at(BuildConfig(prune=(MagnitudePruning(sparsity=0.75),)), 0.5)[0].sparsity
        0.5
    """
    name = knob(config)
    kind = ChannelPruning if name == "macs_target" else MagnitudePruning
    return tuple(p.replace(**{name: value}) if isinstance(p, kind) else p for p in config.prune)


def _strongest_macs_target(teacher: Teacher, channel: ChannelPruning) -> float:
    """``MACS_TARGET``'s strongest end, or the lowest MACs target the channel search reaches where that is higher."""
    if channel.depth:  # blocks go too: the search reaches lower than the widths alone, checked per candidate
        return MACS_TARGET[1]
    return max(MACS_TARGET[1], math.ceil(100 * lowest_macs_kept(teacher.module, teacher.spec, channel)) / 100)


def _try(teacher: Teacher, config: BuildConfig, value: float, dreams: SyntheticSet, held_out: SyntheticSet,
         device: str, fit: dict, widths: Student | None) -> dict:
    """One cheap candidate at knob ``value``, estimated. Its warnings are not the build's (the chosen
    candidate, pruned again in full, says its own), so none is printed."""
    with muted_warnings():
        return _candidate(teacher, config, value, dreams, held_out, device, fit, widths)


def _candidate(teacher: Teacher, config: BuildConfig, value: float, dreams: SyntheticSet, held_out: SyntheticSet,
               device: str, fit: dict, widths: Student | None) -> dict:
    started = time.perf_counter()
    subset = SyntheticSet(dreams.images[:SEARCH_IMAGES], dreams.labels[:SEARCH_IMAGES])
    refit = config.reconstruct.replace(images=min(config.reconstruct.images, SEARCH_IMAGES),
                                       block_steps=0)  # candidates stay cheap: layer-wise only
    stages = list(stages_at(config, value))
    try:
        student = with_magnitude(widths, config.pruning(MagnitudePruning).replace(sparsity=value)) if widths else \
            prune_gradually(teacher, stages, dreams, refit, device)
    except UnreachableTargetError as exc:  # a MACs target the channel search cannot reach: no student to estimate
        return {"value": value, "estimated_drop": None, "unreachable": str(exc),
                "too_mild": isinstance(exc, MildTargetError), "seconds": round(time.perf_counter() - started, 2)}
    if refit.images:
        student = reconstruct(teacher, student, subset, refit, device=device, progress=False)
    else:
        short = config.distill.replace(epochs=SEARCH_EPOCHS, lr=config.distill.lr / 10, warmup_epochs=0.0, ema=0.0)
        student = distill(teacher, student, subset, short, seed=config.seed, device=device, progress=False)
    estimated = estimate(teacher, student.model.cpu(), held_out, config.seed, fit)
    return {"value": value, "estimated_drop": estimated["drop"], "seconds": round(time.perf_counter() - started, 2)}


def search_budget(teacher: Teacher, config: BuildConfig, dreams: SyntheticSet, held_out: SyntheticSet,
                  device: str = "cpu", fit: dict | None = None, widths: Student | None = None) -> dict:
    """Search ``config``'s pruning knob (``knob``) for ``config.max_drop`` (the module docstring says how).

    Returns ``{"knob", "max_drop", "candidates": [{value, estimated_drop, seconds}], "chosen",
    "estimated_drop", "met", "prune": [stage dicts], "seconds"}``: ``chosen`` is the strongest candidate
    estimated within the budget (``estimated_drop`` its estimate) or, where none is (``met`` False), the one
    whose estimate came closest; ``prune`` its stages (``edgefree.config.pruning_from_dict`` reads each,
    ``stages_at(config, chosen)`` gives them as configs). Each candidate is refit with ``config.reconstruct``:
    a ``BuildConfig`` without ``model`` takes the built-in teacher's recipe, so name one
    (``BuildConfig(recipe="fast", ...)``) for a teacher of your own.
    ``fit``: the estimate's mapping (None: the shipped one), one for every candidate. ``widths``: the
    student of a latency target (``edgefree.latency_budget``), whose channels and blocks every candidate
    keeps, each with its own sparsity on them. A candidate whose MACs target the channel search cannot
    reach has no estimate (``estimated_drop`` None, ``unreachable`` says why): one too low counts as over the
    budget, one too mild to remove a channel (``too_mild``) sends the search to stronger ones.

    Example:
        >>> from edgefree.config import SynthesisConfig
        >>> from edgefree.demo import default_teacher
        >>> from edgefree.recover import synthesize
        >>> teacher = default_teacher()
        >>> dreams = synthesize(teacher, SynthesisConfig(images=64, batch_size=64, iterations=5), progress=False)
        >>> held_out = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=5), seed=1,
        ...                       progress=False)
        >>> found = search_budget(teacher, BuildConfig(max_drop=2.0), dreams, held_out)
        >>> found["knob"], found["candidates"][0]["value"], len(found["candidates"]) <= 5
        ('sparsity', 0.97, True)
    """
    started = time.perf_counter()
    if config.max_drop is None:
        raise EdgefreeError("search_budget searches for config.max_drop, and it is None: pass "
                            "BuildConfig(max_drop=D), D the most top-1 points the student may lose")
    name = knob(config)
    if config.latency_target is not None and widths is None:
        raise EdgefreeError("search_budget with a latency target needs its widths: pass widths (the student "
                            "edgefree.latency_budget chose)")
    if name is None:
        raise EdgefreeError("--max-drop has nothing to search: the latency target sets every channel width; add a "
                            "magnitude stage after it (--pruning channel,magnitude) for --max-drop to choose its "
                            "sparsity")
    channel = name == "macs_target"
    mild, strong = (MACS_TARGET[0], _strongest_macs_target(teacher, config.pruning(ChannelPruning))) if channel \
        else SPARSITY
    fit = fit or load_fit()  # one mapping for every candidate

    def within(t: dict) -> bool:
        return t["estimated_drop"] is not None and t["estimated_drop"] <= config.max_drop

    tried = [_try(teacher, config, strong, dreams, held_out, device, fit, widths)]
    passing, failing = mild, strong
    if not within(tried[0]):
        for _ in range(CANDIDATES - 1):
            middle = round((passing + failing) / 2, 3)
            tried.append(_try(teacher, config, middle, dreams, held_out, device, fit, widths))
            if within(tried[-1]) or tried[-1].get("too_mild"):  # too mild to remove a channel: try stronger
                passing = middle
            else:
                failing = middle
    if widths and not any(within(t) for t in tried):  # the latency target's widths alone, no sparsity on them
        tried.append(_try(teacher, config, mild, dreams, held_out, device, fit, widths))
    met = [t for t in tried if within(t)]
    built = [t for t in tried if t["estimated_drop"] is not None]
    if not built:
        raise EdgefreeError(f"--max-drop: no MACs target it tried could be reached ({tried[-1]['unreachable']})")
    # the strongest that met the budget; where none did, the closest
    chosen = (min(met, key=lambda t: t["value"]) if channel else max(met, key=lambda t: t["value"])) if met else \
        min(built, key=lambda t: t["estimated_drop"])
    return {"knob": name, "max_drop": config.max_drop, "candidates": tried,
            "chosen": chosen["value"], "met": bool(met), "estimated_drop": chosen["estimated_drop"],
            "prune": [p.to_dict() for p in stages_at(config, chosen["value"])],
            "seconds": round(time.perf_counter() - started, 2)}
