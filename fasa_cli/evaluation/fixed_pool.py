"""AP-fixed and AP-pool (Dave et al., "Evaluating Large-Vocabulary Object Detectors: The Devil
is in the Details", 2021), the paper's Table 13, each with a fast and a reference backend
like fasa_cli.evaluation.metrics' LVIS AP.

AP-fixed: every class keeps its `dets_per_class` (K = 10,000) top-scoring detections over the
whole split, with no per-image cap, then federated LVIS AP (lvis-api's rules: a class is
judged only on images where it is annotated or verified absent; unmatched detections of a
class an image lists as not exhaustively annotated are ignored). Reported as AP_fixed and per
frequency group AP_fixed_r/_c/_f.

AP-pool: the same detections matched the same way (per class, per image), but ranked
*jointly* over all classes of a pool (all, r, c, f): one precision/recall curve per pool,
recall over every counted ground truth of the pool, 101-point interpolated precision, mean
over IoU 0.5:0.95; area range "all" only. It rewards scores comparable across classes.
Detections of a pool's class on images where that class has no ground truth but was verified
absent count as false positives, also for classes without any ground truth in the split.

Backends: "reference" runs lvis-api's LVISResults (max_dets=-1: no per-image cap) and LVISEval
(its per-image matching) and, for AP-pool, pools its per-image results here. "fast" runs the
faster-coco-eval path of metrics.py; for AP-pool every (image, class) pair becomes its own
pseudo-image holding one pooled class, so per-pair matching stays per class while the C++
accumulation ranks the whole pool together. Both are prepared identically (checked,
top-K per class, positive area, federated filter) and agree to rounding on distinct scores;
with tied scores each library's tie order decides (detections in image order, then class).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fasa_cli.errors import FasaError
from fasa_cli.evaluation.io import GroundTruth, check_iou_type, load_ground_truth, prepare_detections
from fasa_cli.evaluation.metrics import (
    AREA_INDEX,
    FREQUENCY_GROUPS,
    _check_backend,
    _copy_for_library,
    _detection_areas,
    _lvis_precision_fast,
    _lvis_precision_reference,
    _mean_valid,
    _quiet_libraries,
    _verified_detections,
)

FIXED_DETS_PER_CLASS = 10_000  # Dave et al.'s K
POOLS = ("all", "r", "c", "f")
FIXED_METRICS = ("AP_fixed", "AP_fixed_r", "AP_fixed_c", "AP_fixed_f")
POOL_METRICS = ("AP_pool", "AP_pool_r", "AP_pool_c", "AP_pool_f")
REC_THRS = np.linspace(0.0, 1.00, 101)


def _suffix(pool: str) -> str:
    return "" if pool == "all" else f"_{pool}"


def top_k_per_class(dets: Sequence[dict], k: int) -> list[dict]:
    """Each class's `k` highest-scoring detections over the whole list, no per-image cap
    (equal scores keep their order in `dets`); the kept ones in their order in `dets`."""
    if k < 1:
        raise FasaError(f"dets_per_class must be positive, got {k}", f"use Dave et al.'s {FIXED_DETS_PER_CLASS}")
    if not dets:
        return []
    classes = np.fromiter((d["category_id"] for d in dets), dtype=np.int64, count=len(dets))
    scores = np.fromiter((d["score"] for d in dets), dtype=np.float64, count=len(dets))
    order = np.lexsort((-scores, classes))  # stable: by class, then score descending
    sorted_classes = classes[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_classes, sorted_classes, side="left")
    keep = np.sort(order[rank < k])
    return [dets[i] for i in keep.tolist()]


def _prepared(gt: GroundTruth, detections: Sequence[dict], iou_type: str, dets_per_class: int) -> tuple[dict, list[dict]]:
    """Checked ground truth and the detections both metrics evaluate (see module docstring)."""
    check_iou_type(iou_type)
    gt = load_ground_truth(gt, lvis=True)
    dets = prepare_detections(detections, gt, iou_type)  # checked fresh copies, no per-image cap
    dets = top_k_per_class(dets, dets_per_class)
    dets = [d for d, area in zip(dets, _detection_areas(dets)) if area > 0]
    verified = _verified_detections(gt, dets) if dets else []
    if not verified:
        raise FasaError("no detection of a class its image verified (annotated or negative) is left to evaluate",
                        "check the detections' category ids and that boxes/masks are not empty")
    return gt, verified


def short_classes(detections: Sequence[dict], gt: GroundTruth, dets_per_class: int = FIXED_DETS_PER_CLASS) -> int:
    """How many of the ground truth's classes have fewer than `dets_per_class` detections
    (Dave et al. warn about these: AP-fixed assumes the detector gave every class K)."""
    gt = load_ground_truth(gt, lvis=False)
    counts: dict[int, int] = {}
    for det in detections:
        counts[det["category_id"]] = counts.get(det["category_id"], 0) + 1
    return sum(counts.get(c["id"], 0) < dets_per_class for c in gt["categories"])


# ------------------------------------------------------------------------------- AP-fixed


def evaluate_ap_fixed(gt: GroundTruth, detections: Sequence[dict], iou_type: str = "segm", backend: str = "fast",
                      dets_per_class: int = FIXED_DETS_PER_CLASS) -> dict[str, float]:
    """AP_fixed, AP_fixed_r, AP_fixed_c, AP_fixed_f (fractions; NaN = no class to evaluate)."""
    _check_backend(backend)
    gt, dets = _prepared(gt, detections, iou_type, dets_per_class)
    return _fixed(gt, dets, iou_type, backend)


def _fixed(gt: dict, dets: list[dict], iou_type: str, backend: str) -> dict[str, float]:
    with _quiet_libraries():
        if backend == "fast":  # a per-pair budget no class can reach: no cap
            precision, _, cat_ids = _lvis_precision_fast(gt, [dict(d) for d in dets], iou_type, len(dets))
        else:  # lvis-api's own "no cap": LVISResults(max_dets=-1)
            precision, _, cat_ids = _lvis_precision_reference(gt, [dict(d) for d in dets], iou_type, -1)
    all_areas = precision[..., AREA_INDEX["all"]]
    frequency_of = {c["id"]: c["frequency"] for c in gt["categories"]}
    frequency = np.array([frequency_of[c] for c in cat_ids])
    out = {"AP_fixed": _mean_valid(all_areas)}
    for metric, group in FREQUENCY_GROUPS.items():
        out[f"AP_fixed_{group}"] = _mean_valid(all_areas[:, :, frequency == group])
    return out


# -------------------------------------------------------------------------------- AP-pool


def evaluate_ap_pool(gt: GroundTruth, detections: Sequence[dict], iou_type: str = "segm", backend: str = "fast",
                     dets_per_class: int = FIXED_DETS_PER_CLASS) -> dict[str, float]:
    """AP_pool, AP_pool_r, AP_pool_c, AP_pool_f (fractions; NaN = the pool has no ground truth)."""
    _check_backend(backend)
    gt, dets = _prepared(gt, detections, iou_type, dets_per_class)
    return _pool(gt, dets, iou_type, backend)


def evaluate_fixed_pool(gt: GroundTruth, detections: Sequence[dict], iou_type: str = "segm", backend: str = "fast",
                        dets_per_class: int = FIXED_DETS_PER_CLASS) -> dict[str, float]:
    """Both metrics from one preparation of the detections."""
    _check_backend(backend)
    gt, dets = _prepared(gt, detections, iou_type, dets_per_class)
    return {**_fixed(gt, dets, iou_type, backend), **_pool(gt, dets, iou_type, backend)}


def _pool(gt: dict, dets: list[dict], iou_type: str, backend: str) -> dict[str, float]:
    with _quiet_libraries():
        values = _pool_fast(gt, dets, iou_type) if backend == "fast" else _pool_reference(gt, dets, iou_type)
    return {f"AP_pool{_suffix(pool)}": value for pool, value in values.items()}


def _pool_members(gt: dict) -> dict[str, set[int]]:
    frequency_of = {c["id"]: c["frequency"] for c in gt["categories"]}
    members = {"all": set(frequency_of)}
    for group in ("r", "c", "f"):
        members[group] = {c for c, f in frequency_of.items() if f == group}
    return members


def pooled_precision(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, num_gt: int) -> np.ndarray:
    """(T, R) interpolated precision of one pooled ranking, as lvis-api's accumulate computes
    it for one class: detections ranked by score (stable), `matched`/`ignored` (T, D) bool."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # max to the right
    out = np.zeros((len(tp), len(REC_THRS)))
    for t in range(len(tp)):  # ten IoU thresholds: evaluation, not a hot path
        recall = tp[t] / num_gt
        index = np.searchsorted(recall, REC_THRS, side="left")
        inside = index < len(recall)
        out[t, inside] = envelope[t, index[inside]]
    return out


def _pool_reference(gt: dict, dets: list[dict], iou_type: str) -> dict[str, float]:
    """lvis-api's per-image matching (LVISEval.evaluate), pooled here per Dave et al."""
    from lvis import LVIS, LVISEval, LVISResults

    lvis_gt = LVIS.__new__(LVIS)
    lvis_gt.logger = logging.getLogger("lvis.lvis")
    lvis_gt.dataset = _copy_for_library(gt)
    lvis_gt._create_index()
    evaluator = LVISEval(lvis_gt, LVISResults(lvis_gt, [dict(d) for d in dets], max_dets=-1), iou_type=iou_type)
    evaluator.params.area_rng = evaluator.params.area_rng[:1]  # "all" only, as Dave et al.
    evaluator.params.area_rng_lbl = evaluator.params.area_rng_lbl[:1]
    evaluator.evaluate()
    cat_ids = list(evaluator.params.cat_ids)
    num_images = len(evaluator.params.img_ids)
    out = {}
    for pool, members in _pool_members(gt).items():
        columns = [k for k, c in enumerate(cat_ids) if c in members]
        # Image-major, then class: the order LVISPooledEval concatenates the entries in.
        entries = [evaluator.eval_imgs[k * num_images + i] for i in range(num_images) for k in columns]
        entries = [e for e in entries if e is not None]
        gt_ignore = np.concatenate([e["gt_ignore"] for e in entries]) if entries else np.zeros(0)
        num_gt = int(np.count_nonzero(gt_ignore == 0))
        if num_gt == 0:
            out[pool] = float("nan")
            continue
        scores = np.concatenate([np.asarray(e["dt_scores"], dtype=np.float64) for e in entries])
        matched = np.concatenate([np.asarray(e["dt_matches"]) > 0 for e in entries], axis=1)
        ignored = np.concatenate([np.asarray(e["dt_ignore"], dtype=bool) for e in entries], axis=1)
        out[pool] = float(pooled_precision(scores, matched, ignored, num_gt).mean())
    return out


def _pool_fast(gt: dict, dets: list[dict], iou_type: str) -> dict[str, float]:
    """faster-coco-eval on pseudo-images: each (image, class) pair is an image of its own whose
    annotations and detections carry a pool's id, once for pool 'all' and once for the class's
    frequency group, so matching stays per (image, class) and ranking is per pool."""
    pool_id = {pool: k + 1 for k, pool in enumerate(POOLS)}
    frequency_of = {c["id"]: c["frequency"] for c in gt["categories"]}
    images = {im["id"]: im for im in gt["images"]}
    pairs: dict[tuple[int, int], int] = {}
    gts = [a for a in gt["annotations"] if a["area"] > 0]
    for record in (*gts, *dets):
        pairs.setdefault((record["image_id"], record["category_id"]), 0)
    for index, pair in enumerate(sorted(pairs), 1):  # image-major, then class
        pairs[pair] = index
    pseudo_images = []
    for (image_id, cat_id), index in pairs.items():
        image = images[image_id]
        marked = cat_id in image["not_exhaustive_category_ids"]
        pseudo_images.append({"id": index, "height": image["height"], "width": image["width"],
                              "neg_category_ids": [], "not_exhaustive_category_ids":
                                  [pool_id["all"], pool_id[frequency_of[cat_id]]] if marked else []})

    def relabel(records: list[dict]) -> list[dict]:
        out = []
        for record in records:
            pseudo = pairs[(record["image_id"], record["category_id"])]
            for pool in ("all", frequency_of[record["category_id"]]):
                out.append({**record, "image_id": pseudo, "category_id": pool_id[pool]})
        return out

    pseudo_gt = {"images": pseudo_images, "annotations": relabel(gts),
                 "categories": [{"id": i, "frequency": "f"} for i in pool_id.values()]}
    pseudo_dets = relabel(dets)
    precision, _, evaluated = _lvis_precision_fast(pseudo_gt, pseudo_dets, iou_type, max(len(dets), 1))
    column = {cat: k for k, cat in enumerate(evaluated)}
    return {pool: _mean_valid(precision[:, :, column[pool_id[pool]], AREA_INDEX["all"]])
            if pool_id[pool] in column else float("nan") for pool in POOLS}
