"""TIDE errors respond to the defect each one names."""

from __future__ import annotations

import math

import pytest

from fasa_cli.errors import FasaError
from fasa_cli.evaluation import TIDE_ERROR_NAMES, tide_errors

ERRORS = set(TIDE_ERROR_NAMES.values())


@pytest.fixture(scope="module")
def perfect(lvis_derive):
    return lvis_derive.perfect("bbox")


def test_perfect_detections_have_no_errors(lvis_gt, perfect):
    # tidecv divides by zero on some all-zero paths; this must come back as zeros.
    errors = tide_errors(lvis_gt, perfect, "bbox")
    assert set(errors) == ERRORS
    assert all(value == 0.0 for value in errors.values())


def test_swapped_labels_raise_classification_error(lvis_gt, lvis_derive, perfect):
    swapped = tide_errors(lvis_gt, lvis_derive.relabelled(perfect, 0.3), "bbox")
    jittered = tide_errors(lvis_gt, lvis_derive.jittered(perfect, 0.15), "bbox")
    assert swapped["E_cls"] > 1.0
    assert swapped["E_cls"] > jittered["E_cls"]
    assert swapped["E_cls"] > swapped["E_loc"]


def test_jittered_boxes_raise_localisation_error(lvis_gt, lvis_derive, perfect):
    errors = tide_errors(lvis_gt, lvis_derive.jittered(perfect, 0.15), "bbox")
    assert errors["E_loc"] > 1.0
    assert errors["E_loc"] > errors["E_cls"]
    # Stronger jitter, more localisation error.
    assert tide_errors(lvis_gt, lvis_derive.jittered(perfect, 0.3), "bbox")["E_loc"] > errors["E_loc"]


def test_duplicates_raise_duplicate_error(lvis_gt, lvis_derive, perfect):
    errors = tide_errors(lvis_gt, lvis_derive.duplicated(perfect, 0.3), "bbox")
    assert errors["E_dupe"] > 1.0
    assert errors["E_dupe"] == max(errors.values())


def test_false_positives_raise_background_error(lvis_gt, lvis_derive, perfect):
    errors = tide_errors(lvis_gt, perfect + lvis_derive.false_positives(400), "bbox")
    assert errors["E_bkg"] > 1.0
    assert errors["E_bkg"] == max(errors.values())


def test_dropped_detections_raise_missed_error(lvis_gt, lvis_derive, perfect):
    errors = tide_errors(lvis_gt, lvis_derive.dropped(perfect, 0.3), "bbox")
    assert errors["E_miss"] > 1.0
    assert errors["E_miss"] == max(errors.values())


def test_mask_mode_sees_eroded_masks_as_localisation_error(lvis_gt_small, lvis_small_derive):
    perfect_masks = lvis_small_derive.perfect("segm")
    assert all(v == 0.0 for v in tide_errors(lvis_gt_small, perfect_masks, "segm").values())
    # Boxes stay perfect, so only mask mode can see the shrunken masks.
    eroded = lvis_small_derive.eroded(perfect_masks, 6)
    assert tide_errors(lvis_gt_small, eroded, "segm")["E_loc"] > 1.0
    assert tide_errors(lvis_gt_small, eroded, "bbox")["E_loc"] == 0.0


def test_coco_crowd_regions_are_ignored(coco_gt, coco_derive):
    # Perfect detections include the crowd regions themselves; TIDE must not count them.
    errors = tide_errors(coco_gt, coco_derive.perfect("bbox"), "bbox")
    assert all(value == 0.0 for value in errors.values())


def test_no_detections_is_a_clear_error(lvis_gt):
    with pytest.raises(FasaError, match="no detections to evaluate"):
        tide_errors(lvis_gt, [], "bbox")


def test_ground_truth_without_annotations_is_a_clear_error(lvis_gt, perfect):
    empty = {**lvis_gt, "annotations": []}
    with pytest.raises(FasaError, match="no annotations"):
        tide_errors(empty, perfect[:5], "bbox")


def test_undefined_gain_is_nan_not_a_crash():
    """Only a crowd region is detected (ignored) and the one object is missed: fixing the
    miss leaves tidecv nothing to average (its ZeroDivisionError)."""
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "segmentation": square},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 1, "segmentation": square},
        ],
    }
    errors = tide_errors(gt, [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [60, 60, 30, 30]}], "bbox")
    assert math.isnan(errors["E_miss"])
    assert all(errors[name] == 0.0 for name in ERRORS - {"E_miss"})
