"""Fixtures for the dataset tests: a small hand-written LVIS JSON and a CLI runner."""

from __future__ import annotations

import copy
import json

import pytest


def _lvis_doc() -> dict:
    """Two images, three categories; category 3 is annotated nowhere."""
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    return {
        "info": {},
        "images": [
            {"id": 1, "width": 64, "height": 48, "coco_url": "http://images.cocodataset.org/train2017/000000000001.png",
             "neg_category_ids": [3], "not_exhaustive_category_ids": []},
            {"id": 2, "width": 64, "height": 48, "coco_url": "http://images.cocodataset.org/train2017/000000000002.png",
             "neg_category_ids": [], "not_exhaustive_category_ids": [2]},
        ],
        "categories": [
            {"id": 1, "name": "a", "frequency": "f"},
            {"id": 2, "name": "b", "frequency": "c"},
            {"id": 3, "name": "c", "frequency": "r"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "segmentation": square},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "segmentation": square},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "segmentation": square},
            {"id": 4, "image_id": 2, "category_id": 2, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "segmentation": square},
        ],
    }


@pytest.fixture
def lvis_doc() -> dict:
    return copy.deepcopy(_lvis_doc())


@pytest.fixture
def write_json(tmp_path):
    def write(doc, name: str = "lvis_v1_train.json"):
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    return write
