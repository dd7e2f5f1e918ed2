"""``--max-drop D``: the strongest compression whose estimated top-1 drop is at most D points.

The knob searched is the magnitude sparsity (magnitude pruning) or the MACs target (channel
pruning, and channel then magnitude: the magnitude stage keeps its sparsity). Each candidate is
cheap: prune, refit by least squares on ``SEARCH_IMAGES`` dreams (fewer where the recipe refits on
fewer), then the data-free estimate (``edgefree.recover.estimate``) on the held-out dreams. No
distillation: a short one at the recipe's learning rate throws a freshly refit student far from
the teacher before it settles (a barely pruned, refit ResNet-56 loses most of its accuracy in one
such epoch, and regains it over the recipe's), so a candidate's estimate would say more about that
than about the pruning. Where the recipe does not refit, ``SEARCH_EPOCHS`` epoch of distillation at a tenth of its
learning rate stands in. The strongest end is tried first; where it misses, a bisection between it
and no pruning at all narrows the knob (``CANDIDATES`` in all). The full recovery that follows
(refit on every dream, the recipe's distillation) usually lowers the drop further, so a candidate that
meets the budget here is a conservative choice.
"""

from __future__ import annotations

import time

from edgefree.config import BuildConfig, ChannelPruning, MagnitudePruning
from edgefree.models import Teacher
from edgefree.recover import SyntheticSet, distill, reconstruct
from edgefree.recover.estimate import estimate, load_fit
from edgefree.recover.gradual import prune_gradually

SPARSITY = (0.0, 0.97)  # magnitude: (no pruning, the strongest tried)
MACS_TARGET = (1.0, 0.1)  # channel: (no pruning, the strongest tried)
CANDIDATES = 5
SEARCH_IMAGES = 512
SEARCH_EPOCHS = 1


def _stages(config: BuildConfig, value: float) -> tuple:
    """``config``'s pruning stages with the searched knob set to ``value``."""
    kind, knob = (ChannelPruning, "macs_target") if config.pruning(ChannelPruning) else (MagnitudePruning, "sparsity")
    return tuple(p.replace(**{knob: value}) if isinstance(p, kind) else p for p in config.prune)


def _try(teacher: Teacher, config: BuildConfig, value: float, dreams: SyntheticSet, held_out: SyntheticSet,
         device: str, fit: dict) -> dict:
    started = time.perf_counter()
    subset = SyntheticSet(dreams.images[:SEARCH_IMAGES], dreams.labels[:SEARCH_IMAGES])
    refit = config.reconstruct.replace(images=min(config.reconstruct.images, SEARCH_IMAGES),
                                       block_steps=0)  # candidates stay cheap: layer-wise only
    student = prune_gradually(teacher, list(_stages(config, value)), dreams, refit, device)
    if refit.images:
        student = reconstruct(teacher, student, subset, refit, device=device, progress=False)
    else:
        short = config.distill.replace(epochs=SEARCH_EPOCHS, lr=config.distill.lr / 10, warmup_epochs=0.0)
        student = distill(teacher, student, subset, short, seed=config.seed, device=device, progress=False)
    estimated = estimate(teacher, student.model.cpu(), held_out, config.seed, fit)
    return {"value": value, "estimated_drop": estimated["drop"], "seconds": round(time.perf_counter() - started, 2)}


def search_budget(teacher: Teacher, config: BuildConfig, dreams: SyntheticSet, held_out: SyntheticSet,
                  device: str = "cpu", fit: dict | None = None) -> dict:
    """Search ``config``'s pruning knob for ``config.max_drop`` (the module docstring says how).

    Returns ``{"knob", "max_drop", "candidates": [{value, estimated_drop, seconds}], "chosen",
    "met", "prune": [stage dicts], "seconds"}``: ``chosen`` is the strongest candidate estimated
    within the budget or, where none is (``met`` False), the one whose estimate came closest.
    ``fit``: the estimate's mapping (None: the shipped one), one for every candidate.
    """
    started = time.perf_counter()
    channel = config.pruning(ChannelPruning) is not None
    mild, strong = MACS_TARGET if channel else SPARSITY
    fit = fit or load_fit()  # one mapping for every candidate
    tried = [_try(teacher, config, strong, dreams, held_out, device, fit)]
    passing, failing = mild, strong
    if tried[0]["estimated_drop"] > config.max_drop:
        for _ in range(CANDIDATES - 1):
            middle = round((passing + failing) / 2, 3)
            tried.append(_try(teacher, config, middle, dreams, held_out, device, fit))
            if tried[-1]["estimated_drop"] <= config.max_drop:
                passing = middle
            else:
                failing = middle
    met = [t for t in tried if t["estimated_drop"] <= config.max_drop]
    # the strongest that met the budget; where none did, the closest
    chosen = (min(met, key=lambda t: t["value"]) if channel else max(met, key=lambda t: t["value"])) if met else \
        min(tried, key=lambda t: t["estimated_drop"])
    return {"knob": "macs_target" if channel else "sparsity", "max_drop": config.max_drop, "candidates": tried,
            "chosen": chosen["value"], "met": bool(met), "estimated_drop": chosen["estimated_drop"],
            "prune": [p.to_dict() for p in _stages(config, chosen["value"])],
            "seconds": round(time.perf_counter() - started, 2)}
