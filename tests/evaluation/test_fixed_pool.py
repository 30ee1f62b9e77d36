"""AP-fixed and AP-pool (Dave et al., 2021): the fast and reference backends against lvis-api
itself on the shared LVIS sample, and AP-pool against a computation by hand."""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict

import numpy as np
import pytest

from fasa_cli.errors import FasaError
from fasa_cli.evaluation import evaluate_lvis
from fasa_cli.evaluation.compat import numpy_removed_aliases
from fasa_cli.evaluation.fixed_pool import (
    FIXED_METRICS,
    POOL_METRICS,
    evaluate_ap_fixed,
    evaluate_ap_pool,
    evaluate_fixed_pool,
    short_classes,
    top_k_per_class,
)


def _lvis_api_no_cap(gt: dict, dets: list[dict], iou_type: str) -> dict[str, float]:
    """lvis-api run as Dave et al. run it for AP-fixed: LVISResults(max_dets=-1), LVISEval."""
    from lvis import LVIS, LVISEval, LVISResults

    lvis_gt = LVIS.__new__(LVIS)
    lvis_gt.logger = logging.getLogger("lvis.lvis")
    lvis_gt.dataset = copy.deepcopy(gt)
    lvis_gt._create_index()
    evaluator = LVISEval(lvis_gt, LVISResults(lvis_gt, copy.deepcopy(dets), max_dets=-1), iou_type=iou_type)
    evaluator.evaluate()
    with numpy_removed_aliases():
        evaluator.accumulate()
    evaluator.summarize()
    return {k: float(v) for k, v in evaluator.get_results().items()}


def _top_k_by_hand(dets: list[dict], k: int) -> list[dict]:
    by_class = defaultdict(list)
    for det in dets:
        by_class[det["category_id"]].append(det)
    return [d for c in by_class for d in sorted(by_class[c], key=lambda d: -d["score"])[:k]]


def _crowded(derive, gt: dict, iou_type: str, seed: int) -> list[dict]:
    """Realistic detections plus 350 high-scoring false positives on one image, so lvis-api's
    usual 300-per-image cap would cut that image's true positives."""
    from pycocotools import mask as mask_utils

    dets = derive.realistic(iou_type, seed=seed)
    counts = defaultdict(int)
    for ann in gt["annotations"]:
        counts[ann["image_id"]] += 1
    image = max((im for im in gt["images"] if im["neg_category_ids"]), key=lambda im: counts[im["id"]])
    rng = np.random.default_rng(seed)
    extra = []
    for i in range(350):
        w, h = rng.uniform(4, 20, 2)
        x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
        det = {"image_id": image["id"], "category_id": image["neg_category_ids"][0],
               "score": 2.0 + i * 1e-4, "bbox": [x, y, w, h]}
        if iou_type == "segm":
            mask = np.zeros((image["height"], image["width"]), dtype=np.uint8, order="F")
            mask[int(y):int(y + h) + 1, int(x):int(x + w) + 1] = 1
            rle = mask_utils.encode(mask)
            det["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        extra.append(det)
    return dets + extra


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ap_fixed_is_lvis_api_without_a_per_image_cap_on_top_k_per_class(lvis_gt, lvis_gt_small, lvis_derive,
                                                                         lvis_small_derive, iou_type):
    gt, derive = (lvis_gt, lvis_derive) if iou_type == "bbox" else (lvis_gt_small, lvis_small_derive)
    dets = _crowded(derive, gt, iou_type, seed=3)
    for k in (10_000, 12):  # the paper's K (binds nowhere here), and one that cuts most classes
        expected = _lvis_api_no_cap(gt, _top_k_by_hand(dets, k), iou_type)
        for backend in ("fast", "reference"):
            got = evaluate_ap_fixed(gt, dets, iou_type, backend=backend, dets_per_class=k)
            assert set(got) == set(FIXED_METRICS)
            for ours, theirs in (("AP_fixed", "AP"), ("AP_fixed_r", "APr"), ("AP_fixed_c", "APc"), ("AP_fixed_f", "APf")):
                if theirs == "APr" and expected[theirs] == -1:
                    assert math.isnan(got[ours])
                else:
                    assert got[ours] == pytest.approx(expected[theirs], abs=1e-9 if backend == "reference" else 1e-4), (k, backend, ours)
    # Neither the per-image cap nor the per-class budget is a no-op on these detections.
    capped = evaluate_lvis(gt, dets, iou_type, backend="reference", max_dets=300)["AP"]
    assert evaluate_ap_fixed(gt, dets, iou_type, backend="reference")["AP_fixed"] > capped + 1e-3
    assert evaluate_ap_fixed(gt, dets, iou_type, dets_per_class=12)["AP_fixed"] != pytest.approx(
        evaluate_ap_fixed(gt, dets, iou_type)["AP_fixed"], abs=1e-3)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ap_pool_fast_backend_matches_the_reference(lvis_gt, lvis_gt_small, lvis_derive, lvis_small_derive, iou_type):
    gt, derive = (lvis_gt, lvis_derive) if iou_type == "bbox" else (lvis_gt_small, lvis_small_derive)
    dets = _crowded(derive, gt, iou_type, seed=4)
    fast = evaluate_ap_pool(gt, dets, iou_type, backend="fast")
    reference = evaluate_ap_pool(gt, dets, iou_type, backend="reference")
    assert set(fast) == set(reference) == set(POOL_METRICS)
    for key in POOL_METRICS:
        if math.isnan(reference[key]):
            assert math.isnan(fast[key]), key
        else:
            assert fast[key] == pytest.approx(reference[key], abs=1e-6), key
    assert 0.02 < reference["AP_pool"] < 0.98
    # Pooling ranks classes together: not the mean of per-class APs.
    assert reference["AP_pool"] != pytest.approx(evaluate_ap_fixed(gt, dets, iou_type)["AP_fixed"], abs=1e-3)
    both = evaluate_fixed_pool(gt, dets, iou_type, backend="fast")
    assert both["AP_pool"] == fast["AP_pool"]


def _hand_gt() -> dict:
    """Two 100 x 100 images. Classes 1, 2 rare, 3 frequent, 4 common without any ground truth."""
    def ann(i, image, cat, box):
        x, y, w, h = box
        return {"id": i, "image_id": image, "category_id": cat, "bbox": box, "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}

    return {
        "images": [
            {"id": 1, "height": 100, "width": 100, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
            {"id": 2, "height": 100, "width": 100, "neg_category_ids": [1, 3, 4], "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": 1, "frequency": "r"}, {"id": 2, "frequency": "r"},
                       {"id": 3, "frequency": "f"}, {"id": 4, "frequency": "c"}],
        "annotations": [ann(1, 1, 1, [10, 10, 20, 20]), ann(2, 2, 2, [50, 50, 20, 20]), ann(3, 1, 3, [60, 60, 30, 30])],
    }


def _det(image, cat, box, score):
    return {"image_id": image, "category_id": cat, "bbox": box, "score": score}


HAND_DETS = [
    _det(1, 1, [10, 10, 20, 20], 0.90),  # TP, class 1
    _det(1, 2, [70, 10, 10, 10], 0.80),  # FP: image 1 is verified free of class 2
    _det(2, 2, [50, 50, 20, 20], 0.70),  # TP, class 2
    _det(1, 3, [60, 60, 30, 30], 0.85),  # TP, class 3
    _det(2, 3, [5, 5, 10, 10], 0.95),    # FP: image 2 is verified free of class 3
]
CLASS_4_FP = _det(2, 4, [80, 80, 10, 10], 0.88)  # FP of a class with no ground truth at all


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_ap_pool_matches_a_hand_computation(backend):
    # Boxes are exact or disjoint, so every IoU threshold gives the same curve. 101 recall
    # thresholds 0, 0.01, ..., 1; precision at r = the best precision at recall >= r.
    got = evaluate_ap_pool(_hand_gt(), HAND_DETS, "bbox", backend=backend)
    # Pool r (classes 1, 2): 0.90 TP, 0.80 FP, 0.70 TP over 2 ground truths: precision
    # 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1 for r <= 0.50 (51 thresholds), 2/3 above (50).
    assert got["AP_pool_r"] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-9)
    # Pool f (class 3): 0.95 FP, 0.85 TP -> precision 1/2 at every recall threshold.
    assert got["AP_pool_f"] == pytest.approx(0.5, abs=1e-9)
    # Pool all: 0.95 F, 0.90 T, 0.85 T, 0.80 F, 0.70 T over 3 ground truths: precision
    # 0, 1/2, 2/3, 1/2, 3/5 at recall 0, 1/3, 2/3, 2/3, 1 -> 2/3 for r <= 0.66 (67), 3/5 above (34).
    assert got["AP_pool"] == pytest.approx((67 * 2 / 3 + 34 * 0.6) / 101, abs=1e-9)
    assert math.isnan(got["AP_pool_c"])  # class 4, the only common one, has no ground truth
    # Per-class AP of the same detections: class 1 scores 1, classes 2 and 3 each 1/2.
    fixed = evaluate_ap_fixed(_hand_gt(), HAND_DETS, "bbox", backend=backend)
    assert fixed["AP_fixed_r"] == pytest.approx(0.75, abs=1e-9)
    assert fixed["AP_fixed"] == pytest.approx(2 / 3, abs=1e-9)

    # A false positive of a class without ground truth, verified absent, still counts in its
    # pool: 0.95 F, 0.90 T, 0.88 F, 0.85 T, 0.80 F, 0.70 T -> precision <= 1/2 everywhere.
    with_class_4 = evaluate_ap_pool(_hand_gt(), HAND_DETS + [CLASS_4_FP], "bbox", backend=backend)
    assert with_class_4["AP_pool"] == pytest.approx(0.5, abs=1e-9)
    assert with_class_4["AP_pool_r"] == got["AP_pool_r"]
    # ... while per-class AP skips the class.
    assert evaluate_ap_fixed(_hand_gt(), HAND_DETS + [CLASS_4_FP], "bbox", backend=backend)["AP_fixed"] == fixed["AP_fixed"]


def test_top_k_per_class_keeps_each_class_best_in_input_order_and_ties_stably():
    dets = [_det(1, 1, [0, 0, 1, 1], s) for s in (0.1, 0.9, 0.5, 0.5, 0.7)] + [_det(2, 2, [0, 0, 1, 1], 0.2)]
    kept = top_k_per_class(dets, 3)
    assert kept == [dets[1], dets[2], dets[4], dets[5]]  # 0.9, the first 0.5, 0.7; class 2 untouched
    assert top_k_per_class(dets, 10) == dets
    with pytest.raises(FasaError, match="dets_per_class"):
        top_k_per_class(dets, 0)
    assert short_classes(dets, _hand_gt(), dets_per_class=2) == 3  # classes 2, 3, 4 have < 2


def test_ap_fixed_errors_are_one_line():
    with pytest.raises(FasaError, match="no detection"):
        evaluate_ap_fixed(_hand_gt(), [_det(2, 1, [0, 0, 0, 0], 0.5)], "bbox")  # zero area only
    with pytest.raises(FasaError, match="backend"):
        evaluate_ap_pool(_hand_gt(), HAND_DETS, "bbox", backend="quick")
