"""The fast LVIS driver (per class-group C++ calls) gives lvis-api's numbers to 1e-12."""

from __future__ import annotations

import math

import pytest

from benchmarks.bench_eval import synthetic_detections, synthetic_lvis
from fasa_cli.evaluation import LVIS_METRICS, evaluate_lvis
from fasa_cli.evaluation.metrics import _class_chunks


@pytest.mark.parametrize("iou_type,images,per_image,max_dets", [
    ("bbox", 60, 60, 300), ("segm", 30, 30, 300), ("bbox", 40, 40, 7)])
def test_fast_equals_lvis_api_on_synthetic_1203_classes(iou_type, images, per_image, max_dets):
    gt = synthetic_lvis(images, seed=3)
    dets = synthetic_detections(gt, per_image, with_masks=iou_type == "segm", seed=4)
    fast = evaluate_lvis(gt, dets, iou_type, backend="fast", max_dets=max_dets)
    reference = evaluate_lvis(gt, dets, iou_type, backend="reference", max_dets=max_dets)
    for key in LVIS_METRICS:
        if math.isnan(reference[key]):
            assert math.isnan(fast[key]), key
        else:
            assert abs(fast[key] - reference[key]) <= 1e-12, key


def test_class_chunks_cover_every_class_once():
    images_of = {c: set(range(c % 7, c % 7 + 1 + c % 40)) for c in range(1, 300)}
    chunks = list(_class_chunks(images_of, max_pairs=64))
    flat = [c for chunk in chunks for c in chunk]
    assert sorted(flat) == sorted(images_of) and len(flat) == len(set(flat))
    assert len(chunks) > 1
