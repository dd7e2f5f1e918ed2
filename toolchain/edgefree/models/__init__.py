"""Model zoo with one door: ``create_model(name)``; ``load_model(name, path)`` adds weights.

Every model carries ``model.input_spec`` (shape and normalization), so the stages
after it (synthesis, evaluation, export) know what a valid input looks like.
"""

from edgefree.models.registry import InputSpec, create_model, list_models, register_model
from edgefree.models.checkpoint import load_checkpoint, load_model

# Importing the families fills the registry.
from edgefree.models import cifar_resnet, signal_cnn, torchvision_resnet, tiny  # noqa: F401,E402

__all__ = ["InputSpec", "create_model", "list_models", "register_model", "load_checkpoint", "load_model"]
