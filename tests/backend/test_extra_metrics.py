"""The evaluators of Tables 6, 12 and 13 without a detector: AP-fixed / AP-pool on the whole
test budget beside LVIS AP on each image's standard budget, COCO AP with bins, and the
Table 12 figures a run's ProgressHook keeps across a resume."""

from __future__ import annotations

import json
import math

import pytest

from fasa_cli.evaluation import evaluate_lvis, load_detections
from fasa_cli.evaluation.fixed_pool import evaluate_fixed_pool
from fasa_cli.mmdet_ext.extra_metrics import FASACocoMetric, FASALVISFixedPoolMetric, standard_budget
from fasa_cli.mmdet_ext.hooks import ProgressHook


def _gt() -> dict:
    def ann(i, image, cat, box):
        x, y, w, h = box
        return {"id": i, "image_id": image, "category_id": cat, "bbox": box, "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}

    return {"images": [{"id": i, "height": 64, "width": 64, "neg_category_ids": [1, 2],
                        "not_exhaustive_category_ids": []} for i in (1, 2)],
            "categories": [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "f"},
                           {"id": 3, "name": "c", "frequency": "c"}],
            "annotations": [ann(1, 1, 3, [4, 4, 20, 20]), ann(2, 2, 3, [30, 30, 20, 20]), ann(3, 2, 3, [4, 4, 10, 10])]}


def _det(image, cat, box, score):
    from pycocotools import mask as mask_utils
    import numpy as np

    x, y, w, h = box
    mask = np.zeros((64, 64), dtype=np.uint8, order="F")
    mask[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(mask)
    return {"image_id": image, "category_id": cat, "bbox": [float(v) for v in box], "score": score,
            "segmentation": {"size": [64, 64], "counts": rle["counts"].decode()}}


# Image 2's true positives rank below three false positives: a 2-per-image budget cuts them.
PER_IMAGE = [
    [_det(1, 3, (4, 4, 20, 20), 0.9), _det(1, 3, (40, 40, 8, 8), 0.00005)],
    [_det(2, 3, (50, 2, 8, 8), 0.95), _det(2, 3, (2, 50, 8, 8), 0.94), _det(2, 3, (50, 50, 6, 6), 0.93),
     _det(2, 3, (30, 30, 20, 20), 0.5), _det(2, 3, (4, 4, 10, 10), 0.4)],
]


def test_standard_budget_is_each_images_best_above_the_threshold():
    kept = standard_budget(PER_IMAGE[1], 2, None)
    assert [d["score"] for d in kept] == [0.95, 0.94]
    assert [d["score"] for d in standard_budget(PER_IMAGE[0], 5, 1e-4)] == [0.9]


def test_fixed_pool_metric_scores_the_whole_budget_and_keeps_the_standard_one(tmp_path):
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(_gt()))
    outfile = tmp_path / "dets.json.gz"
    metric = FASALVISFixedPoolMetric(str(ann), iou_types=("segm",), outfile=str(outfile), dets_per_class=10,
                                     standard_max_per_img=2, standard_score_thr=1e-4)
    metrics = metric.compute_metrics([list(p) for p in PER_IMAGE])
    every = [d for p in PER_IMAGE for d in p]
    standard = [d for p in PER_IMAGE for d in standard_budget(p, 2, 1e-4)]
    expected = evaluate_fixed_pool(_gt(), every, "segm", dets_per_class=10)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, nan_ok=True), key
    assert metrics["AP"] == pytest.approx(evaluate_lvis(_gt(), standard, "segm")["AP"])
    assert metrics["AP_fixed"] > metrics["AP"]  # the standard budget lost image 2's true positives
    assert len(load_detections(outfile)) == len(standard) == 3  # what TIDE and match tables read
    assert metrics["AP_fixed_short_classes"] == 3.0  # every class has fewer than 10 detections


def test_coco_metric_reports_named_bins(tmp_path):
    gt = _gt()
    for image in gt["images"]:
        del image["neg_category_ids"], image["not_exhaustive_category_ids"]
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(gt))
    metric = FASACocoMetric(str(ann), iou_types=("segm", "bbox"), bins={"AP1": [3], "AP2": [1, 2]})
    metrics = metric.compute_metrics([list(p) for p in PER_IMAGE])
    assert metrics["AP1"] == pytest.approx(metrics["AP"]) and metrics["bbox_AP1"] == pytest.approx(metrics["bbox_AP"])
    assert math.isnan(metrics["AP2"])  # no ground truth in that bin


def test_progress_hook_keeps_table12_figures_across_a_resume():
    hook = ProgressHook()
    hook._fresh = [9.0] * 5 + [1.0, 2.0, 3.0]  # five warm-up steps are dropped
    hook.after_train(runner=None)
    assert hook.mean_step_time() == 2.0 and hook.step_time_std() == 1.0
    assert hook.peak_rss_mb > 0 and math.isnan(hook.peak_gpu_mb)  # no CUDA on this machine
    checkpoint: dict = {}
    hook.before_save_checkpoint(runner=None, checkpoint=checkpoint)
    resumed = ProgressHook()
    resumed.after_load_checkpoint(runner=None, checkpoint=checkpoint)
    assert (resumed.step_times, resumed.peak_rss_mb) == (hook.step_times, hook.peak_rss_mb)
    assert math.isnan(resumed.peak_gpu_mb)
    old = ProgressHook()  # a checkpoint written before these figures existed
    old.after_load_checkpoint(runner=None, checkpoint={"fasa_progress": {"step_times": [1.0], "peak_mb": 5.0}})
    assert old.peak_rss_mb == 0.0 and math.isnan(old.peak_gpu_mb)
