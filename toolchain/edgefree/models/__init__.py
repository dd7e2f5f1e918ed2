"""Teachers: ``load_teacher(source, checkpoint)`` is the one door, for a zoo name, a torchvision
model, a factory of your own or a ``torch.export`` program; it returns a ``Teacher`` (module,
``InputSpec``, name), and every stage after it reads the input's shape and normalization there.
"""

from edgefree.models.spec import InputSpec, parse_shape, parse_values
from edgefree.models.registry import create_model, list_models, register_model
from edgefree.models.checkpoint import load_checkpoint
from edgefree.models.teacher import Teacher, load_teacher, output_count

# Importing the families fills the registry.
from edgefree.models import cifar_resnet, signal_cnn, torchvision_resnet, tiny  # noqa: F401,E402  (registers them)

__all__ = ["InputSpec", "parse_shape", "parse_values", "create_model", "list_models", "register_model",
           "load_checkpoint", "Teacher", "load_teacher", "output_count"]
