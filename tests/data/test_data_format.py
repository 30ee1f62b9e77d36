"""LVIS/COCO JSON validation, class groups and mask decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fasa_cli.data import annotation_mask, check_dataset, class_groups, load_lvis_json
from fasa_cli.data.lvis_format import frequency_letters
from fasa_cli.errors import FasaError

SHARED = Path("/work/shared/data")


def test_valid_json_has_no_problems(lvis_doc, write_json):
    path = write_json(lvis_doc)
    assert check_dataset(path) == []
    assert load_lvis_json(path)["categories"][0]["name"] == "a"


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["annotations"][0].update(image_id=99), "unknown images"),
        (lambda d: d["annotations"][1].update(category_id=42), "unknown categories"),
        (lambda d: d["categories"][2].pop("frequency"), "without a frequency"),
        (lambda d: d["images"][1]["neg_category_ids"].append(2), "annotated category as negative"),
        (lambda d: d["annotations"][0].update(segmentation=[[1.0, 2.0, 3.0]]), "malformed segmentation"),
        (lambda d: d["annotations"][0].update(bbox=[50.0, 10.0, 30.0, 5.0]), "box outside"),
        (lambda d: d["annotations"][2].update(id=1), "duplicate annotation ids"),
        (lambda d: d["images"][0].pop("neg_category_ids"), "'neg_category_ids'"),
    ],
)
def test_each_breakage_is_reported_once(lvis_doc, write_json, breakage, expected):
    breakage(lvis_doc)
    path = write_json(lvis_doc)
    problems = check_dataset(path)
    assert len(problems) == 1 and expected in problems[0], problems
    with pytest.raises(FasaError) as err:
        load_lvis_json(path)
    assert str(path) in err.value.problem and expected in err.value.problem
    assert err.value.fix


def test_repeated_problems_are_grouped_with_examples(lvis_doc, write_json):
    for ann in lvis_doc["annotations"]:
        ann["category_id"] = 77
    problems = check_dataset(write_json(lvis_doc))
    assert len(problems) == 1 and problems[0].startswith("4 annotations point at unknown categories")


def test_unparsable_and_missing_files_raise(tmp_path, write_json):
    with pytest.raises(FasaError, match="not valid JSON .*line 1"):
        check_dataset(write_json('{"images": [', "broken.json"))
    with pytest.raises(FasaError, match="does not exist"):
        load_lvis_json(tmp_path / "nope.json")
    assert "top level is a JSON list" in check_dataset(write_json("[1, 2]", "list.json"))[0]


def test_image_files_are_checked(lvis_doc, write_json, tmp_path):
    from PIL import Image

    (tmp_path / "train2017").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "train2017" / "000000000001.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "train2017" / "000000000002.png")
    problems = check_dataset(write_json(lvis_doc), image_root=tmp_path)
    assert len(problems) == 1 and "size differs" in problems[0] and "10x10" in problems[0]
    (tmp_path / "train2017" / "000000000002.png").unlink()
    problems = check_dataset(write_json(lvis_doc), image_root=tmp_path)
    assert len(problems) == 1 and "missing" in problems[0]


def test_class_groups_counts(lvis_doc):
    groups = class_groups(lvis_doc)
    assert groups["id"].tolist() == [1, 2, 3]
    assert groups["instance_count"].tolist() == [3, 1, 0]  # category 1 twice in image 1, once in image 2
    assert groups["image_count"].tolist() == [2, 1, 0]
    assert groups["frequency"].tolist() == ["f", "c", "r"]  # the records' letters win


def test_class_groups_derives_missing_frequency_from_thresholds(lvis_doc):
    for cat in lvis_doc["categories"]:
        cat.pop("frequency")
    lvis_doc["info"] = {"frequency_thresholds": {"rare": [1, 2], "common": [2, 3], "frequent": [3, None]}}
    assert class_groups(lvis_doc)["frequency"].tolist() == ["c", "r", "r"]  # 2, 1, 0 images


def test_frequency_letters_boundaries_follow_lvis():
    assert frequency_letters(np.array([0, 1, 9, 10, 99, 100, 5000])).tolist() == ["r", "r", "r", "c", "c", "f", "f"]


def test_annotation_mask_polygon_and_rle_agree():
    poly = [[2.0, 2.0, 12.0, 2.0, 7.0, 11.0]]
    from_poly = annotation_mask(poly, 16, 20)
    rle = mask_utils.encode(np.asfortranarray(from_poly.astype(np.uint8)))
    compressed = {"size": rle["size"], "counts": rle["counts"].decode()}
    assert from_poly.shape == (16, 20) and 20 < from_poly.sum() < 60
    assert np.array_equal(annotation_mask(compressed, 16, 20), from_poly)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared real-data samples not present")
def test_real_annotation_samples_pass():
    # Real LVIS v0.5 val and COCO val2014 ground truth (100 images each) are well formed.
    assert check_dataset(SHARED / "lvis_v05_val_100.json", fmt="lvis") == []
    assert check_dataset(SHARED / "instances_val2014_100.json") == []
    groups = class_groups(load_lvis_json(SHARED / "lvis_v05_val_100.json"))
    assert len(groups) == 1230 and set(groups["frequency"]) == {"r", "c", "f"}
    assert groups["instance_count"].sum() == 977
