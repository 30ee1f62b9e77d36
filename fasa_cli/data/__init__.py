"""Datasets: the embedded long-tailed LVIS-format data and preparers for real data."""

from fasa_cli.data.embedded import PRESETS, default_root, ensure_embedded
from fasa_cli.data.lvis_format import (
    DatasetPaths,
    annotation_mask,
    check_dataset,
    class_groups,
    load_lvis_json,
)

__all__ = [
    "PRESETS",
    "DatasetPaths",
    "annotation_mask",
    "check_dataset",
    "class_groups",
    "default_root",
    "ensure_embedded",
    "load_lvis_json",
]
