"""Evaluation: LVIS and COCO metrics (fast and reference backends), TIDE errors, detection files."""

from fasa_cli.evaluation.fixed_pool import evaluate_ap_fixed, evaluate_ap_pool, evaluate_fixed_pool
from fasa_cli.evaluation.io import load_detections, save_detections
from fasa_cli.evaluation.metrics import BACKENDS, COCO_METRICS, LVIS_METRICS, evaluate_coco, evaluate_lvis
from fasa_cli.evaluation.tide import TIDE_ERROR_NAMES, tide_errors

__all__ = [
    "BACKENDS",
    "COCO_METRICS",
    "LVIS_METRICS",
    "TIDE_ERROR_NAMES",
    "evaluate_ap_fixed",
    "evaluate_ap_pool",
    "evaluate_coco",
    "evaluate_fixed_pool",
    "evaluate_lvis",
    "load_detections",
    "save_detections",
    "tide_errors",
]
