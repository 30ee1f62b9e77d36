"""LVIS metrics: the fast backend agrees with lvis-api on real LVIS v0.5 ground truth."""

from __future__ import annotations

import copy
import gzip
import json
import math

import pytest

from fasa_cli.errors import FasaError
from fasa_cli.evaluation import LVIS_METRICS, evaluate_lvis


def _assert_same(fast: dict, reference: dict, tol: float = 1e-4) -> None:
    assert set(fast) == set(reference) == set(LVIS_METRICS)
    for key in LVIS_METRICS:
        if math.isnan(reference[key]):
            assert math.isnan(fast[key]), key
        else:
            assert fast[key] == pytest.approx(reference[key], abs=tol), key


@pytest.fixture(scope="module")
def realistic_bbox(lvis_derive):
    return lvis_derive.realistic("bbox", seed=1)


@pytest.fixture(scope="module")
def realistic_segm(lvis_derive):
    return lvis_derive.realistic("segm", seed=2)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_fast_backend_matches_lvis_api(lvis_gt, realistic_bbox, realistic_segm, iou_type):
    dets = realistic_bbox if iou_type == "bbox" else realistic_segm
    reference = evaluate_lvis(lvis_gt, dets, iou_type, backend="reference")
    fast = evaluate_lvis(lvis_gt, dets, iou_type, backend="fast")
    _assert_same(fast, reference)
    # The derived defects must leave a result that is neither trivial nor empty.
    assert 0.05 < reference["AP"] < 0.95
    assert all(0.0 <= v <= 1.0 for v in reference.values() if not math.isnan(v))


def test_backends_agree_when_the_per_image_limit_bites(lvis_gt_small, lvis_small_derive):
    dets = lvis_small_derive.realistic("bbox", seed=6)
    limited_ref = evaluate_lvis(lvis_gt_small, dets, "bbox", backend="reference", max_dets=3)
    limited_fast = evaluate_lvis(lvis_gt_small, dets, "bbox", backend="fast", max_dets=3)
    _assert_same(limited_fast, limited_ref)
    full = evaluate_lvis(lvis_gt_small, dets, "bbox", backend="fast")
    assert limited_fast["AP"] < full["AP"]


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_detections_score_one(lvis_gt_small, lvis_small_derive, backend, iou_type):
    results = evaluate_lvis(lvis_gt_small, lvis_small_derive.perfect(iou_type), iou_type, backend=backend)
    assert results["AP"] == pytest.approx(1.0, abs=1e-9)
    for key, value in results.items():
        assert math.isnan(value) or value == pytest.approx(1.0, abs=1e-9), key


def _frequency(gt: dict) -> dict[int, str]:
    return {c["id"]: c["frequency"] for c in gt["categories"]}


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_a_class_without_detections_scores_zero(lvis_gt_small, lvis_small_derive, backend):
    frequency = _frequency(lvis_gt_small)
    with_gt = sorted({a["category_id"] for a in lvis_gt_small["annotations"]})
    common = [c for c in with_gt if frequency[c] == "c"]
    assert common, "the LVIS sample should hold a common class"
    dets = [d for d in lvis_small_derive.perfect("bbox") if d["category_id"] != common[0]]
    results = evaluate_lvis(lvis_gt_small, dets, "bbox", backend=backend)
    # Every other class stays perfect, so the missing class costs exactly its share.
    assert results["APc"] == pytest.approx((len(common) - 1) / len(common), abs=1e-9)
    assert results["AP"] == pytest.approx((len(with_gt) - 1) / len(with_gt), abs=1e-9)
    assert results["APf"] == pytest.approx(1.0, abs=1e-9)


def test_only_verified_classes_count(lvis_gt_small, lvis_small_derive):
    """Federated rule: a detection of a class neither annotated nor negative in its image is skipped."""
    present: dict[int, set[int]] = {}
    for ann in lvis_gt_small["annotations"]:
        present.setdefault(ann["image_id"], set()).add(ann["category_id"])
    with_gt = set().union(*present.values())
    # An image with a negative class that is annotated elsewhere (so its AP is evaluated).
    image, negative_id = next(
        (image, c) for image in lvis_gt_small["images"] for c in image["neg_category_ids"] if c in with_gt
    )
    verified = present.get(image["id"], set()) | set(image["neg_category_ids"])
    unverified_id = next(c for c in sorted(with_gt) if c not in verified)
    stray = {"image_id": image["id"], "category_id": unverified_id, "score": 0.99, "bbox": [1.0, 1.0, 30.0, 30.0]}
    perfect = lvis_small_derive.perfect("bbox")
    for backend in ("fast", "reference"):
        assert evaluate_lvis(lvis_gt_small, perfect + [stray], "bbox", backend=backend)["AP"] == pytest.approx(1.0)
        # The same false positive on a verified-absent class costs precision.
        negative = {**stray, "category_id": negative_id}
        assert evaluate_lvis(lvis_gt_small, perfect + [negative], "bbox", backend=backend)["AP"] < 1.0


def test_group_without_classes_is_nan(lvis_gt_small, lvis_small_derive):
    frequency = _frequency(lvis_gt_small)
    no_rare = {
        **lvis_gt_small,
        "annotations": [a for a in lvis_gt_small["annotations"] if frequency[a["category_id"]] != "r"],
    }
    dets = [d for d in lvis_small_derive.perfect("bbox") if frequency[d["category_id"]] != "r"]
    results = evaluate_lvis(no_rare, dets, "bbox")
    assert math.isnan(results["APr"])
    assert results["APc"] == pytest.approx(1.0)


def test_reading_ground_truth_from_a_file(tmp_path, lvis_gt_small, lvis_small_derive):
    path = tmp_path / "gt.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(lvis_gt_small, handle)
    dets = lvis_small_derive.realistic("bbox", seed=3)
    _assert_same(evaluate_lvis(path, dets, "bbox"), evaluate_lvis(lvis_gt_small, dets, "bbox"), tol=0.0)


def test_inputs_are_not_mutated(lvis_gt_small, lvis_small_derive):
    dets = lvis_small_derive.perfect("segm")[:50]
    before_dets = copy.deepcopy(dets)
    before_gt = copy.deepcopy(lvis_gt_small)
    evaluate_lvis(lvis_gt_small, dets, "segm", backend="reference")
    evaluate_lvis(lvis_gt_small, dets, "segm", backend="fast")
    assert dets == before_dets
    assert lvis_gt_small == before_gt


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_no_detections_is_a_clear_error(lvis_gt, backend):
    with pytest.raises(FasaError, match="no detections to evaluate"):
        evaluate_lvis(lvis_gt, [], "bbox", backend=backend)


def test_unknown_image_and_category_are_named(lvis_gt_small, lvis_small_derive):
    lvis_gt, dets = lvis_gt_small, lvis_small_derive.perfect("bbox")[:5]
    with pytest.raises(FasaError, match=r"1 image id\(s\) not in the ground truth \(e\.g\. 987654321\)"):
        evaluate_lvis(lvis_gt, dets + [{**dets[0], "image_id": 987654321}], "bbox")
    with pytest.raises(FasaError, match=r"category id\(s\) not in the ground truth \(e\.g\. 99999\)"):
        evaluate_lvis(lvis_gt, dets + [{**dets[0], "category_id": 99999}], "bbox")


def test_bad_arguments_are_clear_errors(lvis_gt_small, coco_gt, lvis_small_derive, tmp_path):
    lvis_gt, dets = lvis_gt_small, lvis_small_derive.perfect("bbox")[:5]
    with pytest.raises(FasaError, match="unknown evaluation backend 'slow'"):
        evaluate_lvis(lvis_gt, dets, "bbox", backend="slow")
    with pytest.raises(FasaError, match="unknown iou_type 'mask'"):
        evaluate_lvis(lvis_gt, dets, "mask")
    with pytest.raises(FasaError, match="not LVIS-format"):
        evaluate_lvis(coco_gt, [{**d, "image_id": coco_gt["images"][0]["id"]} for d in dets], "bbox")
    with pytest.raises(FasaError, match="does not exist"):
        evaluate_lvis(tmp_path / "missing.json", dets, "bbox")
    with pytest.raises(FasaError, match="no compressed RLE segmentation"):
        evaluate_lvis(lvis_gt, dets, "segm")


def test_zero_area_detections_are_skipped_like_lvis_api(lvis_gt_small, lvis_small_derive):
    lvis_gt, dets = lvis_gt_small, lvis_small_derive.perfect("bbox")
    flat = [{**d, "bbox": [d["bbox"][0], d["bbox"][1], 0.0, d["bbox"][3]], "score": 1.0} for d in dets[:20]]
    _assert_same(
        evaluate_lvis(lvis_gt, dets + flat, "bbox", backend="fast"),
        evaluate_lvis(lvis_gt, dets + flat, "bbox", backend="reference"),
    )
    with pytest.raises(FasaError, match="zero area"):
        evaluate_lvis(lvis_gt, flat, "bbox")



def test_only_unverified_detections_is_a_clear_error(lvis_gt_small):
    """E.g. class ids shifted by one: nothing counts, which lvis-api itself would crash on."""
    image = lvis_gt_small["images"][0]
    annotated = {a["category_id"] for a in lvis_gt_small["annotations"] if a["image_id"] == image["id"]}
    verified = annotated | set(image["neg_category_ids"])
    unverified = next(c["id"] for c in lvis_gt_small["categories"] if c["id"] not in verified)
    stray = {"image_id": image["id"], "category_id": unverified, "score": 0.5, "bbox": [0.0, 0.0, 10.0, 10.0]}
    for backend in ("fast", "reference"):
        with pytest.raises(FasaError, match="none of the 1 detections is of a class its image verified"):
            evaluate_lvis(lvis_gt_small, [stray], "bbox", backend=backend)
