"""LVIS (federated) and COCO detection metrics, each with a fast and a reference backend.

- "reference": the official APIs, lvis-api 0.5.3 (run on numpy 2 through
  `compat.numpy_removed_aliases`) and pycocotools.
- "fast": faster-coco-eval 1.8.0 (C++ matching and accumulation); for LVIS its
  `lvis_style` mode with the same federated rules. Inputs are prepared identically for
  both backends so they give the same numbers.

Both backends produce a precision array [IoU thresholds, recall thresholds, classes,
area ranges]; the summary below is computed from it in one place.

Conventions: values are fractions in [0, 1]. A metric is NaN when no class in its group
(or area range) has ground truth to evaluate -- e.g. APr on a subset without rare
classes -- where the libraries would print -1.

Detection areas follow lvis-api/pycocotools: when a detection has a box, its area (used
for the small/medium/large ranges) is the box area even in mask evaluation.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from fasa_cli.errors import FasaError
from fasa_cli.evaluation.compat import numpy_removed_aliases
from fasa_cli.evaluation.io import GroundTruth, check_iou_type, load_ground_truth, prepare_detections

BACKENDS = ("fast", "reference")
LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
FREQUENCY_GROUPS = {"APr": "r", "APc": "c", "APf": "f"}
AREA_INDEX = {"all": 0, "small": 1, "medium": 2, "large": 3}  # the libraries' area-range order
LVIS_MAX_DETS = 300
COCO_MAX_DETS = 100


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise FasaError(f"unknown evaluation backend '{backend}'", f"use one of: {', '.join(BACKENDS)}")


def _mean_valid(values: np.ndarray) -> float:
    """Mean over entries the libraries did not mark absent (-1); NaN when none is left."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _iou_index(iou_thresholds: np.ndarray, iou: float) -> int:
    return int(np.flatnonzero(np.isclose(iou_thresholds, iou))[0])


def _summarize(precision: np.ndarray, iou_thresholds: np.ndarray) -> dict[str, float]:
    """COCO-style summary of a precision array [T, R, K, A]."""
    all_areas = precision[..., AREA_INDEX["all"]]
    return {
        "AP": _mean_valid(all_areas),
        "AP50": _mean_valid(all_areas[_iou_index(iou_thresholds, 0.5)]),
        "AP75": _mean_valid(all_areas[_iou_index(iou_thresholds, 0.75)]),
        "APs": _mean_valid(precision[..., AREA_INDEX["small"]]),
        "APm": _mean_valid(precision[..., AREA_INDEX["medium"]]),
        "APl": _mean_valid(precision[..., AREA_INDEX["large"]]),
    }


def per_class_ap(precision: np.ndarray) -> np.ndarray:
    """AP (IoU 0.5:0.95, all areas) of each class from a precision array [T, R, K, A]; NaN without GT."""
    all_areas = precision[..., AREA_INDEX["all"]]
    valid = all_areas > -1
    counts = valid.sum(axis=(0, 1))
    sums = np.where(valid, all_areas, 0.0).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence the libraries' progress prints, info logs and deprecation noise during a call."""
    loggers = [logging.getLogger(name) for name in ("lvis", "faster_coco_eval")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _copy_for_library(gt: dict, annotations: list[dict] | None = None) -> dict:
    """A ground truth dict whose annotation dicts the libraries may mutate (they add keys)."""
    anns = gt["annotations"] if annotations is None else annotations
    return {**gt, "annotations": [dict(a) for a in anns]}


# ---------------------------------------------------------------------------- LVIS


def _lvis_precision_reference(gt: dict, dets: list[dict], iou_type: str, max_dets: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    from lvis import LVIS, LVISEval, LVISResults

    # lvis.LVIS only reads a path; build it from the parsed dict instead of writing a file.
    lvis_gt = LVIS.__new__(LVIS)
    lvis_gt.logger = logging.getLogger("lvis.lvis")
    lvis_gt.dataset = _copy_for_library(gt)
    lvis_gt._create_index()

    results = LVISResults(lvis_gt, dets, max_dets=max_dets)
    evaluator = LVISEval(lvis_gt, results, iou_type=iou_type)
    evaluator.params.max_dets = max_dets
    evaluator.evaluate()
    with numpy_removed_aliases():  # accumulate() uses np.float
        evaluator.accumulate()
    return evaluator.eval["precision"], np.asarray(evaluator.params.iou_thrs), list(evaluator.params.cat_ids)


def _class_chunks(images_of: dict[int, set[int]], max_pairs: int = 256) -> Iterator[list[int]]:
    """Classes in groups for one C++ call each: a call costs about a millisecond plus a few
    microseconds per (image, class) pair, so classes on few images share a call."""
    chunk: list[int] = []
    union: set[int] = set()
    for cat_id in sorted(images_of, key=lambda c: (len(images_of[c]), c)):
        grown = union | images_of[cat_id]
        if chunk and len(grown) * (len(chunk) + 1) > max_pairs:
            yield chunk
            chunk, grown = [], set(images_of[cat_id])
        chunk.append(cat_id)
        union = grown
    if chunk:
        yield chunk


def _lvis_precision_fast(gt: dict, dets: list[dict], iou_type: str, max_dets: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """faster-coco-eval's C++ matching and accumulation (lvis_style), driven directly.

    The library's own driver spends most of its time in Python: an index of the results,
    a dict over every (image, class) pair (600k on LVIS) and one C++ pass over all of them.
    Here every class with ground truth is evaluated on just the images that hold its ground
    truth or detections -- the only pairs that can count -- and classes without ground truth
    keep precision -1, as in lvis-api. Per pair the inputs are the library's: the same
    instance fields, the same dt order (input order, stably sorted by score) and IoUs from
    its own mask/box IoU, so the C++ core returns the same numbers.
    """
    import faster_coco_eval.faster_eval_api_cpp as _C
    from faster_coco_eval.core import mask as mask_utils
    from faster_coco_eval.core.cocoeval import Params

    params = Params(iouType=iou_type)
    params.maxDets = [max_dets]
    segm = iou_type == "segm"

    # lvis-api only evaluates annotations with positive area; mirror it for identical numbers.
    gts = [dict(a) for a in gt["annotations"] if a["area"] > 0]
    for ann in gts:
        ann["ignore"] = int(ann.get("iscrowd", 0))
    not_exhaustive = {im["id"]: set(im["not_exhaustive_category_ids"]) for im in gt["images"]}
    box_area = "bbox" in dets[0]  # as loadRes: the box area when results carry boxes
    dts = dets  # evaluate_lvis's own fresh copies: completed in place
    for index, det in enumerate(dts, 1):
        det["id"], det["iscrowd"] = index, 0
        det["lvis_mark"] = det["category_id"] in not_exhaustive[det["image_id"]]
        if box_area:
            det["area"] = det["bbox"][2] * det["bbox"][3]
    if not box_area:
        areas = mask_utils.area([d["segmentation"] for d in dts])
        boxes = mask_utils.toBbox([d["segmentation"] for d in dts])
        for record, area, box in zip(dts, areas, boxes):
            record["area"], record["bbox"] = area, box
    # Instances grouped by (image, class), each group in input order.
    gt_pairs: dict[tuple[int, int], list[dict]] = {}
    dt_pairs: dict[tuple[int, int], list[dict]] = {}
    for records, pairs in ((gts, gt_pairs), (dts, dt_pairs)):
        for record in records:
            pairs.setdefault((record["image_id"], record["category_id"]), []).append(record)

    if segm:  # masks are decoded only where an IoU is needed: pairs with both sides
        sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
        mask_utils.calculateRleForAllAnnotations(gts, sizes, True, False, 0.02, 1)
        matched = [d for pair, group in dt_pairs.items() if pair in gt_pairs for d in group]
        mask_utils.calculateRleForAllAnnotations(matched, sizes, True, False, 0.02, 1)
    key = "rle" if segm else "bbox"
    images_of: dict[int, set[int]] = {}
    ious: dict[tuple[int, int], np.ndarray | list] = {}
    for pair, gt_list in gt_pairs.items():
        images_of.setdefault(pair[1], set()).add(pair[0])
        dt_list = dt_pairs.get(pair)
        if dt_list:  # the library's computeIoU, per pair
            order = np.argsort([-d["score"] for d in dt_list], kind="mergesort")[:max_dets]
            ious[pair] = mask_utils.iou([dt_list[i][key] for i in order], [g[key] for g in gt_list],
                                        [int(g.get("iscrowd", 0)) for g in gt_list])
    for image_id, cat_id in dt_pairs:
        if cat_id in images_of:
            images_of[cat_id].add(image_id)

    num_t, num_r, num_a = len(params.iouThrs), len(params.recThrs), len(params.areaRng)
    # Columns only for classes with ground truth: lvis-api's other columns are all -1, which
    # every summary skips, so leaving them out changes no metric.
    evaluated = sorted(images_of)
    precision = -np.ones((num_t, num_r, len(evaluated), num_a))
    column = {cat_id: k for k, cat_id in enumerate(evaluated)}
    for chunk in _class_chunks(images_of):
        image_ids = sorted(set().union(*(images_of[c] for c in chunk)))
        # Small datasets per call: a C++ call's cost grows with its datasets and pairs.
        gt_dataset, dt_dataset = _C.Dataset(), _C.Dataset()
        for image_id in image_ids:
            for cat_id in chunk:
                for dataset, pairs in ((gt_dataset, gt_pairs), (dt_dataset, dt_pairs)):
                    for record in pairs.get((image_id, cat_id), ()):
                        dataset.append_ref(image_id, cat_id, record)
        params.imgIds, params.catIds = image_ids, chunk
        table = [[ious.get((image_id, cat_id), []) for cat_id in chunk] for image_id in image_ids]
        result = _C.COCOevalEvaluateAccumulate(params, table, gt_dataset, dt_dataset, image_ids, chunk, True)
        precision[:, :, [column[c] for c in chunk], :] = np.asarray(result["precision"])[..., -1]
    return precision, np.asarray(params.iouThrs), evaluated


def _detection_areas(dets: list[dict]) -> np.ndarray:
    """Areas as the libraries assign them: the box area if results carry boxes, else the mask area."""
    if "bbox" in dets[0]:
        boxes = np.array([d["bbox"] for d in dets], dtype=np.float64)
        return boxes[:, 2] * boxes[:, 3]
    from pycocotools import mask as mask_utils

    return np.asarray(mask_utils.area([d["segmentation"] for d in dets]), dtype=np.float64)


def _verified_detections(gt: dict, dets: list[dict]) -> list[dict]:
    """Detections of classes their image verified: annotated there or listed as negative."""
    verified = {(ann["image_id"], ann["category_id"]) for ann in gt["annotations"] if ann["area"] > 0}
    verified.update((image["id"], cat_id) for image in gt["images"] for cat_id in image["neg_category_ids"])
    return [d for d in dets if (d["image_id"], d["category_id"]) in verified]


def evaluate_lvis(
    gt: GroundTruth,
    detections: Sequence[dict],
    iou_type: str = "segm",
    backend: str = "fast",
    max_dets: int = LVIS_MAX_DETS,
) -> dict[str, float]:
    """LVIS federated AP: AP, AP50, AP75, APs, APm, APl, APr, APc, APf (fractions; NaN = no class to evaluate).

    `gt` is an LVIS v0.5/v1 annotation file or its parsed dict; `detections` the results
    list (see fasa_cli.evaluation.io). Each image keeps its `max_dets` best detections.
    """
    check_iou_type(iou_type)
    _check_backend(backend)
    if max_dets < 1:
        raise FasaError(f"max_dets must be positive, got {max_dets}", "use the LVIS protocol's 300")
    gt = load_ground_truth(gt, lvis=True)
    dets = prepare_detections(detections, gt, iou_type, max_dets_per_image=max_dets)
    # lvis-api evaluates only detections with positive area; drop the others for both backends.
    dets = [d for d, area in zip(dets, _detection_areas(dets)) if area > 0]
    if not dets:
        raise FasaError("no detections to evaluate: every detection has zero area", "check the saved boxes are [x, y, w, h] and masks are not empty")
    # The federated rule, applied here for both backends (lvis-api would apply it itself):
    # faster-coco-eval 1.8.0 crashes in mask mode on the detections it drops by this rule
    # when their image has no ground truth (no image size registered for them).
    verified = _verified_detections(gt, dets)
    if not verified:
        raise FasaError(
            f"none of the {len(dets)} detections is of a class its image verified (annotated or negative), "
            "so federated LVIS evaluation has no detections to evaluate",
            "check that the detections' category ids are this annotation file's ids (LVIS ids start at 1)",
        )
    dets = verified

    compute = _lvis_precision_fast if backend == "fast" else _lvis_precision_reference
    with _quiet_libraries():
        precision, iou_thresholds, cat_ids = compute(gt, dets, iou_type, max_dets)

    results = _summarize(precision, iou_thresholds)
    frequency_of = {c["id"]: c["frequency"] for c in gt["categories"]}
    frequency = np.array([frequency_of[c] for c in cat_ids])  # the precision array's columns
    for metric, group in FREQUENCY_GROUPS.items():
        results[metric] = _mean_valid(precision[:, :, frequency == group, AREA_INDEX["all"]])
    return results


# ---------------------------------------------------------------------------- COCO


def _coco_precision_reference(gt: dict, dets: list[dict], iou_type: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = _copy_for_library(gt)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(dets)
    evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    max_index = evaluator.params.maxDets.index(COCO_MAX_DETS)
    return evaluator.eval["precision"][..., max_index], np.asarray(evaluator.params.iouThrs), list(evaluator.params.catIds)


def _coco_precision_fast(gt: dict, dets: list[dict], iou_type: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(_copy_for_library(gt))
    coco_dt = coco_gt.loadRes(dets)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=lambda *_: None)
    evaluator.evaluate()
    evaluator.accumulate()
    max_index = evaluator.params.maxDets.index(COCO_MAX_DETS)
    return evaluator.eval["precision"][..., max_index], np.asarray(evaluator.params.iouThrs), [int(c) for c in evaluator.params.catIds]


def evaluate_coco(
    gt: GroundTruth,
    detections: Sequence[dict],
    iou_type: str = "segm",
    backend: str = "fast",
    bins: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float]:
    """COCO AP: AP, AP50, AP75, APs, APm, APl (fractions; NaN = nothing to evaluate), max 100 per image and class.

    `bins` maps a name to category ids (e.g. COCO-LT's AP1..AP4 by training instance
    count); each bin's value is the mean per-class AP over its classes that have ground
    truth in `gt` (NaN when none has).
    """
    check_iou_type(iou_type)
    _check_backend(backend)
    gt = load_ground_truth(gt, lvis=False)
    dets = prepare_detections(detections, gt, iou_type)
    known = {c["id"] for c in gt["categories"]}
    for name, ids in (bins or {}).items():
        unknown = sorted(set(int(i) for i in ids) - known)
        if unknown:
            raise FasaError(f"bin '{name}' names category ids not in the ground truth (e.g. {unknown[:5]})", "build the bins from the same annotation file")

    compute = _coco_precision_fast if backend == "fast" else _coco_precision_reference
    with _quiet_libraries():
        precision, iou_thresholds, cat_ids = compute(gt, dets, iou_type)

    results = _summarize(precision, iou_thresholds)
    if bins:
        class_ap = per_class_ap(precision)
        column = {cat_id: k for k, cat_id in enumerate(cat_ids)}
        for name, ids in bins.items():
            values = class_ap[[column[int(i)] for i in ids]]
            values = values[~np.isnan(values)]
            results[name] = float(values.mean()) if values.size else float("nan")
    return results
