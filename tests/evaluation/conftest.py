"""Ground truth from /work/shared/data and detections derived from it with known defects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

SHARED_DATA = Path("/work/shared/data")
LVIS_V05_VAL_100 = SHARED_DATA / "lvis_v05_val_100.json"
COCO_VAL2014_100 = SHARED_DATA / "instances_val2014_100.json"
COCO_FAKE_BBOX = SHARED_DATA / "instances_val2014_fakebbox100_results.json"
COCO_FAKE_SEGM = SHARED_DATA / "instances_val2014_fakesegm100_results.json"


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared data {path} is not on this machine")
    return path


def _decode(rle: dict) -> np.ndarray:
    # pycocotools 2.0.11's decode trips a numpy-2 DeprecationWarning (copy keyword) per call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


class Derive:
    """Detections made from a ground truth: perfect ones, and ones with chosen defects.

    Scores are distinct so no backend's tie-breaking can matter.
    """

    def __init__(self, gt: dict):
        self.gt = gt
        self.images = {image["id"]: image for image in gt["images"]}
        self.category_ids = np.array(sorted(c["id"] for c in gt["categories"]))

    def gt_mask(self, ann: dict) -> np.ndarray:
        image = self.images[ann["image_id"]]
        segm = ann["segmentation"]
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, image["height"], image["width"]))
        elif isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, image["height"], image["width"])
        else:
            rle = segm
        return _decode(rle)

    def perfect(self, iou_type: str = "bbox", seed: int = 0) -> list[dict]:
        rng = np.random.default_rng(seed)
        scores = 0.5 + 0.5 * rng.permutation(len(self.gt["annotations"])) / len(self.gt["annotations"])
        dets = []
        for ann, score in zip(self.gt["annotations"], scores):
            det = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": float(score), "bbox": list(ann["bbox"])}
            if iou_type == "segm":
                det["segmentation"] = _encode(self.gt_mask(ann))
            dets.append(det)
        return dets

    def jittered(self, dets: list[dict], scale: float, seed: int = 0) -> list[dict]:
        """Boxes moved and resized by `scale` of their size; masks shifted by the same offset."""
        rng = np.random.default_rng(seed)
        out = []
        for det in dets:
            x, y, w, h = det["bbox"]
            dx, dy = rng.normal(0.0, scale, 2) * (w, h)
            sw, sh = np.exp(rng.normal(0.0, scale, 2))
            new = {**det, "bbox": [x + dx, y + dy, w * sw, h * sh]}
            if "segmentation" in det:
                mask = _decode(det["segmentation"])
                mask = np.roll(mask, (int(round(dy)), int(round(dx))), axis=(0, 1))
                new["segmentation"] = _encode(mask)
            out.append(new)
        return out

    def eroded(self, dets: list[dict], pixels: int) -> list[dict]:
        """Masks shrunk by `pixels` on every side (a 4-neighbour erosion per pixel)."""
        out = []
        for det in dets:
            mask = _decode(det["segmentation"]).astype(bool)
            for _ in range(pixels):
                padded = np.pad(mask, 1)
                mask = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
            out.append({**det, "segmentation": _encode(mask)})
        return out

    def relabelled(self, dets: list[dict], fraction: float, seed: int = 0) -> list[dict]:
        """A `fraction` of detections given another class, drawn from the image's verified classes when possible."""
        rng = np.random.default_rng(seed)
        present = {}
        for ann in self.gt["annotations"]:
            present.setdefault(ann["image_id"], set()).add(ann["category_id"])
        out = []
        for det in dets:
            if rng.random() < fraction:
                image = self.images[det["image_id"]]
                # Negative classes count in federated evaluation; other classes may not.
                verified = sorted((present[det["image_id"]] | set(image.get("neg_category_ids", []))) - {det["category_id"]})
                pool = verified if verified else self.category_ids
                det = {**det, "category_id": int(rng.choice(pool))}
            out.append(det)
        return out

    def dropped(self, dets: list[dict], fraction: float, seed: int = 0) -> list[dict]:
        rng = np.random.default_rng(seed)
        return [det for det in dets if rng.random() >= fraction]

    def duplicated(self, dets: list[dict], fraction: float, seed: int = 0) -> list[dict]:
        """Copies of a `fraction` of detections, scored just below their original (so they interleave)."""
        rng = np.random.default_rng(seed)
        copies = [{**det, "score": det["score"] * 0.999} for det in dets if rng.random() < fraction]
        return dets + copies

    def false_positives(self, count: int, iou_type: str = "bbox", seed: int = 0) -> list[dict]:
        """Boxes in image corners that overlap little, of classes the image verified absent (or any)."""
        rng = np.random.default_rng(seed)
        image_list = self.gt["images"]
        out = []
        for _ in range(count):
            image = image_list[int(rng.integers(len(image_list)))]
            negatives = image.get("neg_category_ids") or list(self.category_ids)
            w, h = rng.uniform(8, 40, 2)
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            det = {
                "image_id": image["id"],
                "category_id": int(rng.choice(negatives)),
                "score": float(rng.uniform(0.0, 1.0)),
                "bbox": [x, y, w, h],
            }
            if iou_type == "segm":
                mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
                mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
                det["segmentation"] = _encode(mask)
            out.append(det)
        return out

    def rescored(self, dets: list[dict], seed: int = 0) -> list[dict]:
        """Distinct random scores (ranking no longer follows quality)."""
        rng = np.random.default_rng(seed)
        scores = (rng.permutation(len(dets)) + 1) / (len(dets) + 1)
        return [{**det, "score": float(s)} for det, s in zip(dets, scores)]

    def realistic(self, iou_type: str, seed: int = 0) -> list[dict]:
        """Every defect at once: jitter, dropped and swapped labels, duplicates, false positives, varied scores."""
        dets = self.perfect(iou_type, seed)
        dets = self.jittered(dets, 0.08, seed)
        if iou_type == "segm":
            rng = np.random.default_rng(seed)
            dets = [self.eroded([det], 1)[0] if rng.random() < 0.3 else det for det in dets]
        dets = self.dropped(dets, 0.1, seed)
        dets = self.relabelled(dets, 0.15, seed)
        dets = self.duplicated(dets, 0.1, seed)
        return self.rescored(dets + self.false_positives(len(dets) // 3, iou_type, seed), seed)


def _load(path: Path) -> dict:
    with open(_require(path), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="session")
def lvis_gt() -> dict:
    return _load(LVIS_V05_VAL_100)


@pytest.fixture(scope="session")
def lvis_gt_small(lvis_gt) -> dict:
    """The first 30 images of the LVIS sample: lvis-api's cost grows with images x classes."""
    images = lvis_gt["images"][:30]
    kept = {image["id"] for image in images}
    return {**lvis_gt, "images": images, "annotations": [a for a in lvis_gt["annotations"] if a["image_id"] in kept]}


@pytest.fixture(scope="session")
def lvis_small_derive(lvis_gt_small) -> Derive:
    return Derive(lvis_gt_small)


@pytest.fixture(scope="session")
def coco_gt() -> dict:
    return _load(COCO_VAL2014_100)


@pytest.fixture(scope="session")
def coco_fake_bbox() -> list[dict]:
    return _load(COCO_FAKE_BBOX)


@pytest.fixture(scope="session")
def coco_fake_segm() -> list[dict]:
    return _load(COCO_FAKE_SEGM)


@pytest.fixture(scope="session")
def lvis_derive(lvis_gt) -> Derive:
    return Derive(lvis_gt)


@pytest.fixture(scope="session")
def coco_derive(coco_gt) -> Derive:
    return Derive(coco_gt)
