"""LVIS mask and box AP through fasa_cli.evaluation (faster-coco-eval's LVIS mode by default,
lvis-api as the reference), with the detections saved for `fasa eval` and `fasa tide`."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pycocotools.mask as mask_util
from mmengine.evaluator import BaseMetric
from mmdet.registry import METRICS

from fasa_cli.evaluation import evaluate_lvis, save_detections


@METRICS.register_module()
class FASALVISMetric(BaseMetric):
    default_prefix = ""

    def __init__(self, ann_file: str, iou_types: Sequence[str] = ("segm", "bbox"),
                 backend: str = "fast", max_dets: int = 300, outfile: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.ann_file = ann_file
        self.iou_types = tuple(iou_types)
        self.backend = backend
        self.max_dets = max_dets
        self.outfile = outfile
        with open(ann_file) as f:
            # The dataset maps labels to categories in the JSON's category order (lvis-api).
            self.cat_ids = [c["id"] for c in json.load(f)["categories"]]

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        # One entry per image: mmengine truncates the collected results to the dataset size.
        for sample in data_samples:
            pred = sample["pred_instances"]
            boxes = pred["bboxes"].cpu().numpy()
            scores = pred["scores"].cpu().numpy()
            labels = pred["labels"].cpu().numpy()
            masks = pred["masks"].cpu().numpy() if "masks" in pred else None
            detections = []
            for i in range(len(labels)):
                x1, y1, x2, y2 = boxes[i].tolist()
                det = {"image_id": sample["img_id"], "category_id": self.cat_ids[labels[i]],
                       "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i])}
                if masks is not None:
                    rle = mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode()
                    det["segmentation"] = rle
                detections.append(det)
            self.results.append(detections)

    def compute_metrics(self, results: list) -> dict:
        results = [det for per_image in results for det in per_image]
        if self.outfile:
            save_detections(self.outfile, results)
        metrics = {}
        for iou_type in self.iou_types:
            prefix = "" if iou_type == "segm" else "bbox_"
            metrics.update({f"{prefix}{k}": float(v) for k, v in self.evaluate_iou_type(results, iou_type).items()})
        return metrics

    def evaluate_iou_type(self, results: list[dict], iou_type: str) -> dict:
        """One IoU type's metrics of the flat detection list (subclasses change the protocol)."""
        return evaluate_lvis(self.ann_file, results, iou_type=iou_type, backend=self.backend,
                             max_dets=self.max_dets)
