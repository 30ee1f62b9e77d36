"""Evaluators beyond LVIS AP: AP-fixed / AP-pool next to LVIS AP (Table 13), and COCO AP with
COCO-LT's AP1..AP4 bins (Table 6). Both keep FASALVISMetric's per-image collection."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from mmdet.registry import METRICS

from fasa_cli.evaluation import evaluate_coco
from fasa_cli.evaluation.fixed_pool import FIXED_DETS_PER_CLASS, evaluate_fixed_pool, short_classes
from fasa_cli.mmdet_ext.metric import FASALVISMetric


def standard_budget(per_image: list[dict], max_per_img: int, score_thr: float | None) -> list[dict]:
    """An image's detections as the standard test budget would have given them: those scoring
    above `score_thr` (mmdet keeps scores > thr), the `max_per_img` best (stable on ties)."""
    kept = [d for d in per_image if score_thr is None or d["score"] > score_thr]
    order = np.argsort([-d["score"] for d in kept], kind="stable")[:max_per_img]
    return [kept[i] for i in order]


@METRICS.register_module()
class FASALVISFixedPoolMetric(FASALVISMetric):
    """AP-fixed and AP-pool (mask) on every detection the enlarged test budget gave, then the
    usual LVIS metrics, detection file, TIDE and match tables on each image's standard budget,
    so those equal a run made with the standard budget."""

    def __init__(self, *args, dets_per_class: int = FIXED_DETS_PER_CLASS, standard_max_per_img: int = 300,
                 standard_score_thr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dets_per_class = dets_per_class
        self.standard_max_per_img = standard_max_per_img
        self.standard_score_thr = standard_score_thr

    def compute_metrics(self, results: list) -> dict:
        every = [det for per_image in results for det in per_image]
        fixed = evaluate_fixed_pool(self.ann_file, every, iou_type="segm", backend=self.backend,
                                    dets_per_class=self.dets_per_class)
        standard = [standard_budget(per_image, self.standard_max_per_img, self.standard_score_thr)
                    for per_image in results]
        metrics = super().compute_metrics(standard)
        metrics.update({k: float(v) for k, v in fixed.items()})
        # Classes the detector gave fewer than K detections (Dave et al. warn about them).
        metrics["AP_fixed_short_classes"] = float(short_classes(every, self.ann_file, self.dets_per_class))
        return metrics


@METRICS.register_module()
class FASACocoMetric(FASALVISMetric):
    """COCO mask and box AP (fasa_cli.evaluation.evaluate_coco), with named bins of category
    ids (COCO-LT's AP1..AP4) as mean per-class AP over each bin; detections saved likewise."""

    def __init__(self, *args, bins: dict[str, Sequence[int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.bins = {name: [int(i) for i in ids] for name, ids in (bins or {}).items()}

    def evaluate_iou_type(self, results: list[dict], iou_type: str) -> dict:
        return evaluate_coco(self.ann_file, results, iou_type=iou_type, backend=self.backend, bins=self.bins)
