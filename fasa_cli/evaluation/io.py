"""Reading ground truth and reading, checking and writing detections.

Detections are the COCO/LVIS results format: a list of dicts
`{image_id, category_id, score, bbox: [x, y, w, h]}`, plus for mask evaluation
`segmentation`: a compressed RLE `{"size": [h, w], "counts": str}`.
Files are a JSON list; a name ending in `.gz` is gzip-compressed.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fasa_cli.errors import FasaError

IOU_TYPES = ("bbox", "segm")
GroundTruth = str | Path | dict


def check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise FasaError(f"unknown iou_type '{iou_type}'", f"use one of: {', '.join(IOU_TYPES)}")


def _open_text(path: Path, mode: str):
    return gzip.open(path, mode + "t", encoding="utf-8") if path.suffix == ".gz" else open(path, mode, encoding="utf-8")


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FasaError(f"{what} file {path} does not exist", "check the path")
    try:
        with _open_text(path, "r") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise FasaError(f"{what} file {path} is not valid JSON ({err})", "regenerate or re-download the file") from None


def load_ground_truth(gt: GroundTruth, *, lvis: bool) -> dict:
    """The parsed ground truth (path or dict), checked for the COCO or LVIS fields evaluation uses."""
    source = "ground truth" if isinstance(gt, dict) else f"ground truth {gt}"
    data = gt if isinstance(gt, dict) else _read_json(gt, "ground truth")
    if not isinstance(data, dict):
        raise FasaError(f"{source} is not a JSON object", "pass a COCO/LVIS annotation file")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise FasaError(f"{source} lacks {', '.join(missing)}", "pass a COCO/LVIS annotation file")
    if lvis:
        # Federated evaluation needs these; COCO files lack them (use evaluate_coco there).
        image = next((im for im in data["images"] if "neg_category_ids" not in im or "not_exhaustive_category_ids" not in im), None)
        if image is not None:
            raise FasaError(
                f"{source}: image {image.get('id')} lacks neg_category_ids/not_exhaustive_category_ids, so it is not LVIS-format",
                "pass an LVIS v0.5/v1 annotation file, or use evaluate_coco for COCO-format ground truth",
            )
        category = next((c for c in data["categories"] if c.get("frequency") not in ("r", "c", "f")), None)
        if category is not None:
            raise FasaError(
                f"{source}: category {category.get('id')} has no frequency 'r'/'c'/'f'",
                "pass an LVIS annotation file whose categories carry their frequency group",
            )
    return data


def _check_record(det: Any, index: int, iou_type: str | None, source: str) -> None:
    """One detection's structure; raises FasaError naming the first problem."""
    where = f"{source}: detection #{index}"
    if not isinstance(det, dict):
        raise FasaError(f"{where} is a {type(det).__name__}, not a dict", "save detections as a list of dicts")
    # A mask result may omit its box (the COCO results format allows it); box evaluation
    # ignores masks.
    mask_record = iou_type == "segm" or (iou_type is None and "segmentation" in det)
    for key in ("image_id", "category_id", "score") if mask_record else ("image_id", "category_id", "score", "bbox"):
        if key not in det:
            raise FasaError(f"{where} lacks '{key}'", "each detection needs image_id, category_id, score and bbox [x, y, w, h]")
    for key in ("image_id", "category_id"):
        value = det[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise FasaError(f"{where} has a non-integer {key} {value!r}", f"store {key} as an integer")
    score = det["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float, np.number)) or not math.isfinite(score):
        raise FasaError(f"{where} has an invalid score {score!r}", "store score as a finite number")
    box = det.get("bbox")
    if box is not None:
        if (
            not isinstance(box, (list, tuple, np.ndarray))
            or len(box) != 4
            or not all(isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in box)
        ):
            raise FasaError(f"{where} has an invalid bbox {box!r}", "store bbox as 4 finite numbers [x, y, w, h]")
        if box[2] < 0 or box[3] < 0:
            raise FasaError(f"{where} has a negative box width/height {list(box)}", "store bbox as [x, y, w, h], not [x1, y1, x2, y2]")
    if mask_record:
        rle = det.get("segmentation")
        if (
            not isinstance(rle, dict)
            or not isinstance(rle.get("counts"), (str, bytes))
            or not isinstance(rle.get("size"), (list, tuple, np.ndarray))
            or len(rle["size"]) != 2
        ):
            raise FasaError(
                f"{where} has no compressed RLE segmentation {{'size': [h, w], 'counts': str}}",
                "encode masks with pycocotools.mask.encode and decode 'counts' to str",
            )


def _rle_looks_valid(rle: Any) -> bool:
    """The compressed-RLE structure _check_record requires (exact types checked fast first)."""
    return (
        type(rle) is dict
        and isinstance(rle.get("counts"), (str, bytes))
        and isinstance(rle.get("size"), (list, tuple, np.ndarray))
        and len(rle["size"]) == 2
    )


def _records_look_valid(dets: list, iou_type: str | None) -> bool:
    """Vectorised check of the common case (every record a dict with a box and valid numbers);
    False sends the list to the per-record check, which names the first problem or accepts."""
    try:
        if iou_type is None and any("segmentation" in d for d in dets):
            return False
        if iou_type == "segm" and not all(_rle_looks_valid(d["segmentation"]) for d in dets):
            return False
        id_list = [(d["image_id"], d["category_id"]) for d in dets]
        score_list = [d["score"] for d in dets]
        boxes = np.array([d["bbox"] for d in dets])
    except (KeyError, TypeError, ValueError):
        return False
    ids, scores = np.array(id_list), np.array(score_list)
    return (
        bool not in set(map(type, score_list))  # numpy would silently read True as 1
        and ids.dtype.kind in "iu"
        and bool not in set(type(v) for pair in id_list for v in pair)
        and scores.dtype.kind in "iuf"
        and boxes.dtype.kind in "iuf"
        and boxes.shape == (len(dets), 4)
        and bool(np.isfinite(scores).all() and np.isfinite(boxes).all())
        and bool((boxes[:, 2:] >= 0).all())
    )


def check_detection_records(dets: Any, *, iou_type: str | None = None, source: str = "detections") -> None:
    """The structure of a detections list (no ground truth needed)."""
    if not isinstance(dets, list):
        raise FasaError(f"{source} is a {type(dets).__name__}, not a list of detections", "save detections as a JSON list")
    if dets and _records_look_valid(dets, iou_type):
        return
    for index, det in enumerate(dets):
        _check_record(det, index, iou_type, source)


def _raise_unknown(ids: np.ndarray, known: Iterable[int], what: str, source: str) -> None:
    unknown = np.setdiff1d(np.unique(ids), np.fromiter(known, dtype=np.int64))
    if unknown.size:
        examples = ", ".join(str(int(v)) for v in unknown[:5])
        raise FasaError(
            f"{source} reference {unknown.size} {what} id(s) not in the ground truth (e.g. {examples})",
            f"evaluate against the ground truth the detections were made for, or drop those {'categories' if what == 'category' else what + 's'}",
        )


def prepare_detections(
    dets: Any,
    gt: dict,
    iou_type: str,
    *,
    max_dets_per_image: int | None = None,
    source: str = "detections",
) -> list[dict]:
    """Checked, fresh copies of `dets` (the libraries mutate what they are given).

    With `max_dets_per_image`, keeps each image's top-scoring detections (ties keep input
    order, as lvis-api does). The result is sorted by image, then by descending score, so
    every backend sees the same order and breaks score ties the same way.
    """
    check_iou_type(iou_type)
    if isinstance(dets, list) and not dets:
        raise FasaError(f"no detections to evaluate in {source}", "check the model's score threshold and the saved run's detections")
    check_detection_records(dets, iou_type=iou_type, source=source)
    with_box = sum("bbox" in d for d in dets)
    if 0 < with_box < len(dets):
        # The libraries take a result's area from its box if the *first* result has one, so
        # a mix would silently measure areas two ways.
        raise FasaError(f"{source}: {with_box} of {len(dets)} detections have a bbox", "give every detection a bbox, or none")

    image_ids = np.fromiter((d["image_id"] for d in dets), dtype=np.int64, count=len(dets))
    category_ids = np.fromiter((d["category_id"] for d in dets), dtype=np.int64, count=len(dets))
    scores = np.fromiter((d["score"] for d in dets), dtype=np.float64, count=len(dets))
    _raise_unknown(image_ids, (im["id"] for im in gt["images"]), "image", source)
    _raise_unknown(category_ids, (c["id"] for c in gt["categories"]), "category", source)

    order = np.lexsort((-scores, image_ids))  # stable: equal scores keep their input order
    if max_dets_per_image is not None:
        sorted_images = image_ids[order]
        group_start = np.searchsorted(sorted_images, sorted_images, side="left")
        rank_in_image = np.arange(len(order)) - group_start
        order = order[rank_in_image < max_dets_per_image]

    rows = order.tolist()
    if with_box == len(dets) and iou_type == "bbox":
        # Column-wise copy (same values as _to_jsonable, which converts each number alone).
        boxes = np.array([dets[i]["bbox"] for i in rows], dtype=np.float64).reshape(-1, 4).tolist()
        return [
            {"image_id": image_id, "category_id": category_id, "score": score, "bbox": box}
            for image_id, category_id, score, box in zip(
                image_ids[order].tolist(), category_ids[order].tolist(), scores[order].tolist(), boxes)
        ]
    return [_to_jsonable(dets[i], with_mask=iou_type == "segm") for i in rows]


def _to_jsonable(det: dict, with_mask: bool = True) -> dict:
    """Plain-Python copy of a checked detection (numpy scalars and bytes converted)."""
    record = {"image_id": int(det["image_id"]), "category_id": int(det["category_id"]), "score": float(det["score"])}
    if "bbox" in det:
        record["bbox"] = [float(v) for v in det["bbox"]]
    if with_mask and "segmentation" in det:
        rle = det["segmentation"]
        counts = rle["counts"]
        record["segmentation"] = {
            "size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
    return record


def save_detections(path: str | Path, dets: Sequence[dict]) -> Path:
    """Write detections as a JSON list (gzip when the name ends in .gz); returns the path."""
    dets = list(dets)
    check_detection_records(dets, source=f"detections for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open_text(path, "w") as handle:
        json.dump([_to_jsonable(d) for d in dets], handle, separators=(",", ":"))
    return path


def load_detections(path: str | Path) -> list[dict]:
    """Read and check a detections file written by `save_detections` (or any COCO results JSON)."""
    dets = _read_json(path, "detections")
    check_detection_records(dets, source=f"detections file {path}")
    return dets
