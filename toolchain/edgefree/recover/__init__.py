"""Data-free recovery: prune the teacher, dream images from it, refit and distill the student on them."""

from edgefree.recover.prune import PrunePlan, Student, prune, apply_masks, sparsity_report
from edgefree.recover.synthesize import SyntheticSet, synthesize, gaussian_noise_set
from edgefree.recover.reconstruct import reconstruct
from edgefree.recover.distill import distill, freeze_batchnorm, recalibrate_batchnorm

__all__ = ["PrunePlan", "Student", "prune", "apply_masks", "sparsity_report", "SyntheticSet", "synthesize",
           "gaussian_noise_set", "reconstruct", "distill", "freeze_batchnorm", "recalibrate_batchnorm"]
