"""Data-free recovery: prune the teacher, dream images from it, distill into the student."""

from edgefree.recover.prune import Pruned, prune, apply_masks, sparsity_report
from edgefree.recover.synthesize import SyntheticSet, synthesize, gaussian_noise_set
from edgefree.recover.distill import distill, freeze_batchnorm, recalibrate_batchnorm

__all__ = ["Pruned", "prune", "apply_masks", "sparsity_report", "SyntheticSet", "synthesize",
           "gaussian_noise_set", "distill", "freeze_batchnorm", "recalibrate_batchnorm"]
