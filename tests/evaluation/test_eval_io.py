"""Detection files: round trip, format checks, and how detections are prepared for evaluation."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from fasa_cli.errors import FasaError
from fasa_cli.evaluation import load_detections, save_detections
from fasa_cli.evaluation.io import load_ground_truth, prepare_detections

GT = {
    "images": [{"id": 1, "width": 64, "height": 48}, {"id": 2, "width": 64, "height": 48}],
    "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
    "annotations": [],
}


def _det(image_id=1, category_id=7, score=0.5, bbox=(1.0, 2.0, 3.0, 4.0), **extra):
    return {"image_id": image_id, "category_id": category_id, "score": score, "bbox": list(bbox), **extra}


@pytest.mark.parametrize("name", ["dets.json", "dets.json.gz"])
def test_round_trip_converts_numpy_and_bytes(tmp_path, name):
    rle = {"size": np.array([48, 64]), "counts": b"PPYo0"}
    dets = [
        _det(image_id=np.int64(1), category_id=np.int32(7), score=np.float32(0.25), bbox=np.array([1, 2, 3, 4.5])),
        _det(image_id=2, category_id=9, score=0.75, segmentation=rle),
    ]
    path = save_detections(tmp_path / "run" / name, dets)
    loaded = load_detections(path)
    assert loaded == [
        {"image_id": 1, "category_id": 7, "score": 0.25, "bbox": [1.0, 2.0, 3.0, 4.5]},
        {"image_id": 2, "category_id": 9, "score": 0.75, "bbox": [1.0, 2.0, 3.0, 4.0], "segmentation": {"size": [48, 64], "counts": "PPYo0"}},
    ]
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as handle:
            assert json.load(handle) == loaded


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"category_id": 7, "score": 0.5, "bbox": [0, 0, 1, 1]}, r"detection #1 lacks 'image_id'"),
        (_det(image_id="1"), r"detection #1 has a non-integer image_id '1'"),
        (_det(category_id=True), r"detection #1 has a non-integer category_id True"),
        (_det(image_id=1.0), r"detection #1 has a non-integer image_id 1.0"),
        (_det(score=float("nan")), r"detection #1 has an invalid score nan"),
        (_det(score=True), r"detection #1 has an invalid score True"),
        (_det(bbox=(0, 0, 1)), r"detection #1 has an invalid bbox"),
        (_det(bbox=(10, 10, 5, -2)), r"negative box width/height"),
        (_det(segmentation=[[0, 0, 1, 1, 1, 0]]), r"no compressed RLE segmentation"),
        ("oops", r"detection #1 is a str, not a dict"),
    ],
)
def test_bad_records_are_named(tmp_path, bad, message):
    with pytest.raises(FasaError, match=message):
        save_detections(tmp_path / "dets.json", [_det(), bad])
    path = tmp_path / "raw.json"
    path.write_text(json.dumps([_det(), bad]))
    with pytest.raises(FasaError, match=message):
        load_detections(path)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(FasaError, match="does not exist"):
        load_detections(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(FasaError, match="is not valid JSON"):
        load_detections(tmp_path / "broken.json")
    (tmp_path / "object.json").write_text("{}")
    with pytest.raises(FasaError, match="not a list of detections"):
        load_detections(tmp_path / "object.json")


def test_ground_truth_checks(tmp_path):
    with pytest.raises(FasaError, match="lacks annotations"):
        load_ground_truth({"images": [], "categories": []}, lvis=False)
    with pytest.raises(FasaError, match="not LVIS-format"):
        load_ground_truth(GT, lvis=True)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    assert load_ground_truth(path, lvis=False) == GT


def test_prepare_keeps_each_images_best_and_orders_them():
    dets = [
        _det(image_id=2, score=0.1),
        _det(image_id=1, score=0.3),
        _det(image_id=2, score=0.9),
        _det(image_id=1, score=0.3, category_id=9),  # ties keep input order
        _det(image_id=1, score=0.8),
        _det(image_id=2, score=0.5),
    ]
    prepared = prepare_detections(dets, GT, "bbox", max_dets_per_image=2)
    assert [(d["image_id"], d["score"], d["category_id"]) for d in prepared] == [(1, 0.8, 7), (1, 0.3, 7), (2, 0.9, 7), (2, 0.5, 7)]
    everything = prepare_detections(dets, GT, "bbox")
    assert [(d["image_id"], d["score"], d["category_id"]) for d in everything][:3] == [(1, 0.8, 7), (1, 0.3, 7), (1, 0.3, 9)]
    assert len(everything) == len(dets)


def test_prepare_drops_masks_for_box_evaluation_and_rejects_mixed_boxes():
    rle = {"size": [48, 64], "counts": "PPYo0"}
    prepared = prepare_detections([_det(segmentation=rle)], GT, "bbox")
    assert "segmentation" not in prepared[0]
    masks_only = {"image_id": 1, "category_id": 7, "score": 0.5, "segmentation": rle}
    assert prepare_detections([masks_only], GT, "segm")[0] == masks_only
    with pytest.raises(FasaError, match="1 of 2 detections have a bbox"):
        prepare_detections([masks_only, _det(segmentation=rle)], GT, "segm")


def test_box_evaluation_ignores_whatever_mask_a_record_carries():
    polygon_record = _det(segmentation=[[0, 0, 5, 0, 5, 5]])
    assert prepare_detections([polygon_record], GT, "bbox") == [_det()]
    with pytest.raises(FasaError, match="no compressed RLE segmentation"):
        prepare_detections([polygon_record], GT, "segm")
