"""Top-1 accuracy of a model on an evaluation set."""

import torch
from torch import nn

from edgefree.data import EvalData


@torch.no_grad()
def accuracy(model: nn.Module, data: EvalData, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent; the model is evaluated in eval mode.

    Example:
        >>> from edgefree.data import load_eval_data
        >>> from edgefree.models import create_model
        >>> model = create_model("digits-cnn")
        >>> 0.0 <= accuracy(model, load_eval_data("digits", model.input_spec)) <= 100.0
        True
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.normalized(model.input_spec, slice(start, start + batch_size))
        pred = model(x.to(device)).argmax(1).cpu()
        correct += (pred == data.labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return 100.0 * correct / max(len(data), 1)
