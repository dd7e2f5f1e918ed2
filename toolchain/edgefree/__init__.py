"""edgefree: compress a trained image classifier without its training data.

The pipeline, one public function per stage::

    teacher = load_teacher("resnet20-cifar", "teacher.pt")  # or "torchvision:mobilenet_v2", "my_model.py:build", ...
    dreams = synthesize(teacher, SynthesisConfig())
    pruned = prune(teacher, ChannelPruning(macs_target=0.5), dreams)  # or MagnitudePruning(sparsity=0.75), or both
    refit = reconstruct(teacher, pruned, dreams, ReconstructConfig())
    student = distill(teacher, refit, dreams, DistillConfig()).model

``edgefree.pipeline.build`` runs them all in order and writes a report. The names below
are imported on first use, so ``import edgefree.errors`` (and ``edgefree --help``) does not
pay for importing torch.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "EdgefreeError": "edgefree.errors",
    "load_teacher": "edgefree.models", "Teacher": "edgefree.models", "InputSpec": "edgefree.models",
    "create_model": "edgefree.models", "list_models": "edgefree.models",
    "prune": "edgefree.recover", "synthesize": "edgefree.recover", "reconstruct": "edgefree.recover",
    "distill": "edgefree.recover", "Student": "edgefree.recover",
    "MagnitudePruning": "edgefree.config", "ChannelPruning": "edgefree.config", "SynthesisConfig": "edgefree.config",
    "ReconstructConfig": "edgefree.config",
    "DistillConfig": "edgefree.config", "BuildConfig": "edgefree.config",
    "LatencyTarget": "edgefree.config", "latency_budget": "edgefree.latency_target",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgefree' has no attribute {name!r}")
