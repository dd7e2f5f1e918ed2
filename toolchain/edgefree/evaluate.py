"""Top-1 accuracy of a model on an evaluation set."""

import torch
from torch import nn

from edgefree.data import EvalData
from edgefree.models import InputSpec


@torch.no_grad()
def accuracy(model: nn.Module, data: EvalData, spec: InputSpec, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of ``model`` (which takes inputs of ``spec``), evaluated in eval mode.

    Example:
        >>> from edgefree.data import load_eval_data
        >>> from edgefree.demo import default_teacher
        >>> teacher = default_teacher()  # the built-in digits CNN: 359 of the 360 held-out digits right
        >>> round(accuracy(teacher.module, load_eval_data("digits", teacher.spec), teacher.spec), 2)
        99.72
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.normalized(spec, slice(start, start + batch_size))
        pred = model(x.to(device)).argmax(1).cpu()
        correct += (pred == data.labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return 100.0 * correct / max(len(data), 1)
