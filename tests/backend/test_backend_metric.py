"""The LVIS metric keeps every detection of every image (mmengine truncates the collected
results to the dataset size, so results must be per image, not per detection)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fasa_cli.data.embedded import default_root
from fasa_cli.evaluation import load_detections


def test_metric_keeps_all_detections_and_scores_ground_truth_perfectly(tiny_data_dir, tmp_path):
    import fasa_cli.mmdet_ext  # noqa: F401
    from mmdet.registry import METRICS
    from fasa_cli.data import annotation_mask

    ann_file = default_root("tiny", 0) / "annotations" / "lvis_v1_val.json"
    gt = json.loads(ann_file.read_text())
    label_of = {c["id"]: i for i, c in enumerate(gt["categories"])}
    metric = METRICS.build(dict(type="FASALVISMetric", ann_file=str(ann_file),
                                outfile=str(tmp_path / "dets.json.gz")))
    images = {img["id"]: img for img in gt["images"]}
    by_image: dict[int, list] = {i: [] for i in images}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    samples = []
    for img_id, anns in by_image.items():
        h, w = images[img_id]["height"], images[img_id]["width"]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns]).reshape(-1, 4)
        masks = torch.from_numpy(np.stack([annotation_mask(a["segmentation"], h, w) for a in anns]))
        samples.append({"img_id": img_id, "pred_instances": {
            "bboxes": boxes.float(), "scores": torch.ones(len(anns)),
            "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.long),
            "masks": masks}})
    metric.process({}, samples)
    results = metric.evaluate(size=len(samples))
    assert len(load_detections(tmp_path / "dets.json.gz")) == len(gt["annotations"])
    assert results["AP"] == pytest.approx(1.0)
    assert results["bbox_AP"] == pytest.approx(1.0)
