"""The FASA method in plain PyTorch (no mmdet import): config, module and helpers."""

from fasa_cli.core.config import FASAConfig, FASAConfigError
from fasa_cli.core.fasa import FASA
from fasa_cli.core.grouping import NO_GROUP, compute_groups
from fasa_cli.core.stats import fisher_distance, initial_probs, per_class_mean, squared_euclidean_distance

__all__ = [
    "FASA",
    "FASAConfig",
    "FASAConfigError",
    "NO_GROUP",
    "compute_groups",
    "fisher_distance",
    "initial_probs",
    "per_class_mean",
    "squared_euclidean_distance",
]
