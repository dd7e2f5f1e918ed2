"""edgefree: compress a trained image classifier without its training data.

The pipeline, one public function per stage::

    teacher = load_model("resnet20-cifar", "teacher.pt")
    pruned = prune(teacher, PruneConfig(sparsity=0.75))
    dreams = synthesize(teacher, SynthesisConfig())
    student = distill(teacher, pruned, dreams, DistillConfig())

``edgefree.pipeline.build`` runs them in order and writes a report.
"""

from edgefree.errors import EdgefreeError
from edgefree.models import create_model, load_model, list_models
from edgefree.recover import prune, synthesize, distill
from edgefree.config import PruneConfig, SynthesisConfig, DistillConfig, BuildConfig

__version__ = "0.1.0"

__all__ = [
    "EdgefreeError", "create_model", "load_model", "list_models", "prune", "synthesize",
    "distill", "PruneConfig", "SynthesisConfig", "DistillConfig", "BuildConfig",
]
