"""COCO metrics: pycocotools' classic example gives its well-known numbers on both backends."""

from __future__ import annotations

import math

import pytest

from fasa_cli.errors import FasaError
from fasa_cli.evaluation import COCO_METRICS, evaluate_coco

# pycocotools' demo (COCO val2014, 100 images, fake results) as published with the library.
KNOWN_BBOX = {"AP": 0.505, "AP50": 0.697, "AP75": 0.573, "APs": 0.586, "APm": 0.519, "APl": 0.501}
KNOWN_SEGM = {"AP": 0.320, "AP50": 0.562, "AP75": 0.299, "APs": 0.387, "APm": 0.310, "APl": 0.327}


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pycocotools_demo_numbers(coco_gt, coco_fake_bbox, coco_fake_segm, backend, iou_type):
    dets, known = (coco_fake_bbox, KNOWN_BBOX) if iou_type == "bbox" else (coco_fake_segm, KNOWN_SEGM)
    results = evaluate_coco(coco_gt, dets, iou_type, backend=backend)
    assert set(results) == set(COCO_METRICS)
    for key, value in known.items():
        assert results[key] == pytest.approx(value, abs=5e-4), key


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_backends_agree_on_derived_detections(coco_gt, coco_derive, iou_type):
    dets = coco_derive.realistic(iou_type, seed=4)
    fast = evaluate_coco(coco_gt, dets, iou_type, backend="fast")
    reference = evaluate_coco(coco_gt, dets, iou_type, backend="reference")
    for key in COCO_METRICS:
        assert fast[key] == pytest.approx(reference[key], abs=1e-4), key


def _classes_with_gt(gt: dict) -> list[int]:
    return sorted({a["category_id"] for a in gt["annotations"] if not a.get("iscrowd", 0)})


def test_bins_average_per_class_ap(coco_gt, coco_fake_bbox):
    with_gt = _classes_with_gt(coco_gt)
    absent = sorted({c["id"] for c in coco_gt["categories"]} - set(with_gt))
    half = len(with_gt) // 2
    bins = {"AP1": with_gt[:half], "AP2": with_gt[half:], "all": with_gt + absent, "none": absent}
    results = evaluate_coco(coco_gt, coco_fake_bbox, "bbox", bins=bins)
    # Every class contributes the same number of precision entries, so the mean of
    # per-class APs over all classes is the overall AP.
    assert results["all"] == pytest.approx(results["AP"], abs=1e-12)
    weighted = (half * results["AP1"] + (len(with_gt) - half) * results["AP2"]) / len(with_gt)
    assert weighted == pytest.approx(results["AP"], abs=1e-12)
    assert math.isnan(results["none"])  # no class of the bin has ground truth here


def test_bin_of_a_class_without_detections_is_zero(coco_gt, coco_derive):
    with_gt = _classes_with_gt(coco_gt)
    missing = with_gt[0]
    dets = [d for d in coco_derive.perfect("bbox") if d["category_id"] != missing]
    results = evaluate_coco(coco_gt, dets, "bbox", bins={"missing": [missing], "rest": with_gt[1:]})
    assert results["missing"] == 0.0
    assert results["rest"] == pytest.approx(1.0, abs=1e-9)


def test_bins_must_name_known_classes(coco_gt, coco_fake_bbox):
    with pytest.raises(FasaError, match="bin 'AP1' names category ids not in the ground truth"):
        evaluate_coco(coco_gt, coco_fake_bbox, "bbox", bins={"AP1": [1, 424242]})


def test_no_detections_is_a_clear_error(coco_gt):
    with pytest.raises(FasaError, match="no detections to evaluate"):
        evaluate_coco(coco_gt, [], "bbox")


def test_unknown_image_is_named(coco_gt, coco_fake_bbox):
    with pytest.raises(FasaError, match=r"image id\(s\) not in the ground truth \(e\.g\. 31337\)"):
        evaluate_coco(coco_gt, coco_fake_bbox + [{**coco_fake_bbox[0], "image_id": 31337}], "bbox")
