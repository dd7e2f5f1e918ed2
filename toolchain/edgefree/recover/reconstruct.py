"""Layer-wise reconstruction: refit the pruned student's kept weights to the teacher's outputs.

Magnitude pruning zeroes weights without compensating for them. Here each conv and linear
layer, in forward order, gets the kept weights that best reproduce the *teacher's* output of
that layer from the *student's* input (which already carries every earlier layer's error):

    min over w_S  || w_S . X_student[S] - w_teacher . X_teacher ||^2    for every output row,

where ``S`` are the row's kept inputs. That is a small least-squares problem per row, posed by
the Gram matrix of the student's inputs and their products with the teacher's outputs, both
accumulated over the synthetic images (the kind of weight update OBS / SparseGPT make, here with
the masks fixed). Rows that keep every input share one exact solve; rows with few kept inputs are
solved exactly (Cholesky); rows that keep so many that a factorization of their own would cost more
(a 3x3 conv over 512 channels at low sparsity keeps thousands) by conjugate gradients started from
the current weights, every row of the layer in one product. The masks never change, so the
sparsity stays exact. No gradient step is taken, and distillation starts from a far better student.

Each layer's inputs come from the nearest cached ``nn.Sequential`` child (a residual block, say)
rather than from the images: the walk costs one forward pass over the network, not one per layer.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgefree import distributed
from edgefree.config import ReconstructConfig
from edgefree.models import Teacher
from edgefree.recover.blockwise import refine_blocks
from edgefree.recover.checks import stage_inputs
from edgefree.recover.student import PRUNABLE, Student
from edgefree.recover.synthesize import SyntheticSet
from edgefree.recover.walk import LayerInputs


_BMM_FLOATS = 1 << 25  # 128 MiB of float32 per batched product
_EXACT_MIN_LIMIT = 512  # rows keeping at most this many inputs are always solved exactly
_GATHER_FLOATS = 1 << 24  # elements of the stacked sub-Gram matrices gathered at once
_CG_TOLERANCE = 1e-5  # stop once every row's residual is this fraction of its right-hand side
_CG_MAX_ITERATIONS = 200


def _exact_limit(inputs: int) -> int:
    """The most kept inputs a row of a layer with ``inputs`` inputs is solved for exactly. A Cholesky solve of
    ``k`` kept inputs costs about k^3 / 3 float64 operations, conjugate gradients up to ``_CG_MAX_ITERATIONS``
    products of 2 d^2 float32 operations each; below k = 4 d^(2/3) the exact solve is the cheaper one
    with room to spare."""
    return max(_EXACT_MIN_LIMIT, int(4 * inputs ** (2 / 3)))


def _patches(layer: nn.Module, x: torch.Tensor, group: int) -> torch.Tensor:
    """What each output row of ``layer`` in ``group`` reads, as (N, d, L): im2col for a conv, a 1 for a bias."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        per_group = layer.in_channels // layer.groups
        x = x[:, group * per_group:(group + 1) * per_group]
        if isinstance(layer, nn.Conv1d):  # a 1-D convolution is a 2-D one over a height of 1
            x = F.unfold(x.unsqueeze(2), (1, *layer.kernel_size), (1, *layer.dilation), (0, *layer.padding),
                         (1, *layer.stride))
        else:
            x = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    else:
        x = x.reshape(-1, x.shape[-1]).T[None]
    if layer.bias is not None:
        x = torch.cat([x, x.new_ones(x.shape[0], 1, x.shape[2])], 1)
    return x


def _rows(layer: nn.Module, group: int) -> slice:
    per_group = layer.weight.shape[0] // getattr(layer, "groups", 1)
    return slice(group * per_group, (group + 1) * per_group)


def _solve(gram: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor, damping: float,
           start: torch.Tensor) -> torch.Tensor:
    """Per output row r: (G[S_r, S_r] + damping) w = targets[S_r, r], for every row at once.

    Rows that keep every input share one exact solve. Other rows that keep few enough inputs
    (``_exact_limit``) are solved exactly (Cholesky, float64), a batch of rows with the
    same count of kept inputs at a time. Rows that keep more are solved by preconditioned
    conjugate gradients on all of them together, started from ``start`` (the layer's current
    weights): one product with the Gram matrix per step serves every row, where an exact solve
    would cost each row a factorization of its own."""
    damp = float(damping * gram.diagonal().mean().clamp_min(1e-12))
    counts = keep.sum(1)
    fitted = torch.zeros(keep.shape, dtype=torch.float64, device=gram.device)
    full = counts == len(gram)
    if full.any():
        eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        fitted[full] = torch.linalg.solve(gram + damp * eye, targets[:, full]).T
    limit = _exact_limit(len(gram))
    small = (counts > 0) & (counts <= limit) & ~full
    if small.any():
        fitted[small] = _exact(gram, targets[:, small], keep[small], damp)
    large = (counts > limit) & ~full
    if large.any():
        fitted[large] = _conjugate_gradients(gram, targets[:, large], keep[large], damp, start[large])
    return fitted


def _exact(gram: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor, damp: float) -> torch.Tensor:
    """Cholesky solves of each row's kept sub-system, stacked by count of kept inputs."""
    d = len(gram)
    fitted = torch.zeros(keep.shape, dtype=torch.float64, device=gram.device)
    counts = keep.sum(1)
    kept_first = torch.sort(torch.where(keep, torch.arange(d, device=gram.device), d), dim=1).values
    regularized = gram + damp * torch.eye(d, dtype=gram.dtype, device=gram.device)
    for k in counts.unique().tolist():
        rows = (counts == k).nonzero().squeeze(1)
        for chunk in rows.split(max(1, _GATHER_FLOATS // (k * k))):
            idx = kept_first[chunk, :k]  # each row's k kept inputs, in order
            a = regularized[idx[:, :, None], idx[:, None, :]]
            b = targets[idx, chunk[:, None]]
            fitted[chunk[:, None], idx] = torch.cholesky_solve(b[..., None], torch.linalg.cholesky(a))[..., 0]
    return fitted


def _conjugate_gradients(gram: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor, damp: float,
                         start: torch.Tensor) -> torch.Tensor:
    """Jacobi-preconditioned conjugate gradients in float32, one row per system, masked to the kept inputs."""
    g, mask = gram.float(), keep.float()
    rhs = targets.T.float() * mask
    inv_diag = 1.0 / (gram.diagonal().float() + damp)

    def apply(p):
        return (p @ g + damp * p) * mask

    w = start.float() * mask
    r = rhs - apply(w)
    z = r * inv_diag
    p, rz = z.clone(), (r * z).sum(1, keepdim=True)
    bound = _CG_TOLERANCE * rhs.norm(dim=1).clamp_min(1e-30)
    for _ in range(_CG_MAX_ITERATIONS):
        if bool((r.norm(dim=1) <= bound).all()):
            break
        ap = apply(p)
        alpha = rz / (p * ap).sum(1, keepdim=True).clamp_min(1e-30)
        w += alpha * p
        r -= alpha * ap
        z = r * inv_diag
        rz_next = (r * z).sum(1, keepdim=True)
        p = z + rz_next / rz.clamp_min(1e-30) * p
        rz = rz_next
    return w.double()


@torch.no_grad()
def _refit(teacher_layer: nn.Module, student_layer: nn.Module, mask: torch.Tensor, kept_outputs: list[int] | None,
           teacher_inputs: list[torch.Tensor], student_inputs: list[torch.Tensor], damping: float) -> None:
    """Normal equations per output row: (X_s[S] X_s[S]^T + damping) w_S = X_s[S] y_teacher, where the
    student keeps the teacher's output channels ``kept_outputs`` (None: all of them)."""
    outputs = [teacher_layer(x) for x in teacher_inputs]
    if kept_outputs is not None:
        outputs = [y[:, kept_outputs] for y in outputs]
    for group in range(getattr(student_layer, "groups", 1)):
        rows = _rows(student_layer, group)
        gram = targets = 0
        for xs, y in zip(student_inputs, outputs):
            patches = _patches(student_layer, xs, group)  # (N, d, L)
            y = y[:, rows].reshape(len(y), rows.stop - rows.start, -1) if y.dim() > 2 else y[:, rows].T[None]
            step = max(1, _BMM_FLOATS // patches.shape[1] ** 2)  # bounds the (chunk, d, d) products' memory
            for p, t in zip(patches.split(step), y.split(step)):  # float32 products, summed in float64
                gram = gram + torch.bmm(p, p.transpose(1, 2)).sum(0).double()
                targets = targets + torch.bmm(p, t.transpose(1, 2)).sum(0).double()  # (d, rows)
        distributed.all_reduce_sum(gram, targets)  # each rank's images: every rank solves the same system
        keep = mask[rows].reshape(rows.stop - rows.start, -1)
        if student_layer.bias is not None:
            keep = torch.cat([keep, keep.new_ones(len(keep), 1)], 1)
        start = student_layer.weight[rows].reshape(len(keep), -1)
        if student_layer.bias is not None:
            start = torch.cat([start, student_layer.bias[rows, None]], 1)
        fitted = _solve(gram, targets, keep, damping, start.double())
        if student_layer.bias is not None:
            student_layer.bias[rows] = fitted[:, -1].to(student_layer.bias.dtype)
            fitted = fitted[:, :-1]
        student_layer.weight[rows] = fitted.reshape_as(student_layer.weight[rows]).to(student_layer.weight.dtype)


def _layers_to_refit(student: Student, teacher_modules: dict) -> list[str]:
    """Every masked layer; after channel or block pruning, every conv and linear layer the teacher also has
    (a layer whose inputs lost channels, or whose input now comes by another path, needs new weights)."""
    structural = bool(student.plan.channels or student.plan.removed_blocks)
    return [name for name, m in student.model.named_modules() if isinstance(m, PRUNABLE) and name in teacher_modules
            and (structural or f"{name}.weight" in student.masks)]


@torch.no_grad()
def reconstruct(teacher: Teacher, pruned: Student, synthetic: SyntheticSet,
                config: ReconstructConfig = ReconstructConfig(), device: str = "cpu",
                progress: bool = True) -> Student:
    """Refit the kept weights of every pruned layer, in forward order, to the teacher's outputs.

    Uses the first ``config.images`` synthetic images; masks and channels are unchanged. A
    channel-pruned layer is fit to the teacher's outputs on the channels it keeps, from the input
    channels it keeps. With ``config.block_steps``, block-wise reconstruction follows
    (``edgefree.recover.blockwise``). Returns a new ``Student`` whose ``stats`` say what was done; the input is
    untouched (``images=0``: the new ``Student`` shares its model, as nothing is refit).

    Example:
        >>> from edgefree.demo import default_teacher
        >>> from edgefree.config import SynthesisConfig
        >>> from edgefree.recover import prune, synthesize
        >>> teacher = default_teacher()
        >>> dreams = synthesize(teacher, SynthesisConfig(images=32, batch_size=32, iterations=5), progress=False)
        >>> refit = reconstruct(teacher, prune(teacher), dreams, progress=False)
    """
    stage_inputs(teacher, synthetic, pruned, config, ReconstructConfig)
    started = time.perf_counter()
    if config.images == 0:
        return Student(pruned.model, pruned.plan, {"seconds": 0.0, "layers": 0, "skipped": [], "images": 0}, pruned.spec)
    teacher = teacher.module.eval().to(device)
    student = copy.deepcopy(pruned.model).eval().to(device)
    modules_t, modules_s = dict(teacher.named_modules()), dict(student.named_modules())
    layers = _layers_to_refit(pruned, modules_t)
    batches = [b.to(device) for b in distributed.rank_batches(synthetic.images[:config.images], config.batch_size)]
    teacher_inputs, student_inputs = LayerInputs(teacher, batches), LayerInputs(student, batches)
    skipped = []  # layers the forward pass never calls: nothing to fit them to
    for name in tqdm(layers, desc="reconstruct", unit="layer", disable=not progress, leave=False):
        inputs_t, inputs_s = teacher_inputs(name), student_inputs(name)
        if inputs_t is None or inputs_s is None:
            skipped.append(name)
            continue
        layer_s = modules_s[name]
        mask = pruned.masks.get(f"{name}.weight")
        mask = torch.ones_like(layer_s.weight, dtype=torch.bool) if mask is None else mask.to(device)
        size = modules_t[name].weight.shape[0]
        kept = pruned.plan.kept(name, size) if pruned.plan.channels else None
        _refit(modules_t[name], layer_s, mask, kept if kept is not None and len(kept) < size else None,
               inputs_t, inputs_s, config.damping)
    stats = {"seconds": time.perf_counter() - started, "layers": len(layers) - len(skipped), "skipped": skipped,
             "images": min(config.images, len(synthetic))}
    if config.block_steps:
        clock = time.perf_counter()
        errors = refine_blocks(teacher, student, pruned.plan, batches, config.block_steps, config.block_lr)
        stats["blocks"] = {"count": len(errors), "seconds": time.perf_counter() - clock,
                           "error_before": {k: round(v[0], 5) for k, v in errors.items()},
                           "error_after": {k: round(v[1], 5) for k, v in errors.items()}}
        stats["seconds"] = time.perf_counter() - started
    return pruned.with_model(student, stats)
