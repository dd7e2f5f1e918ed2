"""The divergence every stage measures a student by: KL(teacher || student) of the softmax outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of KL(teacher || student) at ``temperature``, scaled by its square so that
    gradients keep their size (Hinton's distillation loss; at 1, the plain divergence in nats)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t
