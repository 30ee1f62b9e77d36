"""Paired bootstrap intervals over validation images for LVIS AP and top-1 accuracy differences.

A run's detections are reduced once to a *match table*: for every evaluated detection its
class, image, score and whether it is a true / false positive at each IoU threshold (the
per-image matching of lvis-api, federated rules included), and per (class, image) the
number of ground truths that count. AP on any multiset of validation images then needs no
detections or masks: image i taken w_i times weighs its detections and ground truths by
w_i. With every w_i = 1 this is lvis-api's accumulation exactly (tested), so the tables
are small enough to keep with each committed record.

A classification run is reduced the same way to a *prediction table* (label and top-1
prediction per test image), from which accuracy on any weighting of the images follows.

Two runs evaluated on the same images are compared with the *same* resamples, so the
interval of their difference is not inflated by which images happened to be in val; over
several seeds the seed pairs are resampled too (`paired_deltas`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fasa_cli.errors import FasaError
from fasa_cli.evaluation.compat import numpy_removed_aliases
from fasa_cli.evaluation.io import GroundTruth, load_ground_truth, prepare_detections

REC_THRS = np.linspace(0.0, 1.00, 101)
IOU_THRS = np.linspace(0.5, 0.95, 10)
METRICS = ("AP", "AP50", "AP75", "APr", "APc", "APf")
# Accuracy overall and the mean per-class accuracy of each frequency group (classification).
ACCURACY_METRICS = {"accuracy": None, "acc_many": "f", "acc_medium": "c", "acc_few": "r"}
_BLOCK = 4_000_000  # elements of a (samples x thresholds x detections) block


@dataclass
class MatchTable:
    """Per-detection matching of one run on one validation split (area range "all")."""

    image_ids: np.ndarray   # (N,) validation image ids, sorted (lvis-api's order)
    class_ids: np.ndarray   # (K,) category ids, sorted
    frequency: np.ndarray   # (K,) 'r' / 'c' / 'f'
    det_class: np.ndarray   # (D,) class index; detections grouped by class, in accumulation order
    det_image: np.ndarray   # (D,) image index
    det_tp: np.ndarray      # (T, D) bool
    det_fp: np.ndarray      # (T, D) bool
    gt_class: np.ndarray    # (G,) class index of a (class, image) pair with counted ground truth
    gt_image: np.ndarray    # (G,) image index
    gt_count: np.ndarray    # (G,) ground truths counted there
    iou_type: str = "segm"
    _starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._starts = np.searchsorted(self.det_class, np.arange(len(self.class_ids) + 1))

    # -- storage -----------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        bits = 1 << np.arange(len(IOU_THRS), dtype=np.uint16)[:, None]
        with open(path, "wb") as handle:  # np.savez would append .npz to a temp name
            np.savez_compressed(
                handle, image_ids=self.image_ids, class_ids=self.class_ids,
                frequency=self.frequency.astype("U1"), det_class=self.det_class.astype(np.int32),
                det_image=self.det_image.astype(np.int32),
                det_tp=(self.det_tp * bits).sum(0).astype(np.uint16),
                det_fp=(self.det_fp * bits).sum(0).astype(np.uint16),
                gt_class=self.gt_class.astype(np.int32), gt_image=self.gt_image.astype(np.int32),
                gt_count=self.gt_count.astype(np.int32), iou_type=np.array(self.iou_type))
        return path

    @classmethod
    def load(cls, source: Path | bytes) -> "MatchTable":
        try:
            return cls.from_npz(np.load(io.BytesIO(source) if isinstance(source, bytes) else source))
        except (OSError, ValueError, KeyError) as err:
            raise FasaError(f"match table {source if isinstance(source, Path) else '(bytes)'} is unreadable ({err})",
                            "re-run `fasa eval` on the run, or redo it") from None

    @classmethod
    def from_npz(cls, data) -> "MatchTable":
        bits = 1 << np.arange(len(IOU_THRS), dtype=np.uint16)[:, None]
        return cls(
            image_ids=data["image_ids"], class_ids=data["class_ids"], frequency=data["frequency"],
            det_class=data["det_class"], det_image=data["det_image"],
            det_tp=(data["det_tp"][None] & bits) > 0, det_fp=(data["det_fp"][None] & bits) > 0,
            gt_class=data["gt_class"], gt_image=data["gt_image"], gt_count=data["gt_count"],
            iou_type=str(data["iou_type"]))

    # -- AP on weighted image sets ----------------------------------------------------------
    def class_ap(self, weights: np.ndarray) -> np.ndarray:
        """(B, K) AP@[.5:.95] per class for B image weightings (B, N); NaN without ground truth.

        Loops over classes (evaluation, not a training step), vectorised over samples and
        IoU thresholds, in blocks that bound memory."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        return self._class_precision(weights).mean(axis=1)

    def _class_precision(self, weights: np.ndarray) -> np.ndarray:
        """(B, T, K) precision averaged over recall thresholds."""
        samples, classes = len(weights), len(self.class_ids)
        out = np.full((samples, len(IOU_THRS), classes), np.nan)
        gt_weight = np.zeros((samples, classes))
        np.add.at(gt_weight.T, self.gt_class, (weights[:, self.gt_image] * self.gt_count).T)
        for k in range(classes):
            start, stop = self._starts[k], self._starts[k + 1]
            has_gt = gt_weight[:, k] > 0
            if stop == start:
                out[has_gt, :, k] = 0.0
                continue
            step = max(1, _BLOCK // (len(IOU_THRS) * (stop - start)))
            for b in range(0, samples, step):
                rows = slice(b, b + step)
                out[rows, :, k] = _mean_precision(
                    weights[rows][:, self.det_image[start:stop]], self.det_tp[:, start:stop],
                    self.det_fp[:, start:stop], gt_weight[rows, k])
            out[~has_gt, :, k] = np.nan
        return out

    def metrics(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """AP, AP50, AP75, APr, APc, APf (fractions), each of shape (B,)."""
        if weights is None:
            weights = np.ones((1, len(self.image_ids)))
        precision = self._class_precision(np.atleast_2d(weights))
        per_class = precision.mean(axis=1)
        with np.errstate(all="ignore"), _quiet_nan_means():
            result = {
                "AP": np.nanmean(per_class, axis=1),
                "AP50": np.nanmean(precision[:, 0], axis=1),
                "AP75": np.nanmean(precision[:, 5], axis=1),
            }
            for name, letter in (("APr", "r"), ("APc", "c"), ("APf", "f")):
                mask = self.frequency == letter
                result[name] = np.nanmean(per_class[:, mask], axis=1) if mask.any() else np.full(len(per_class), np.nan)
        return result

    def per_class_ap(self) -> dict[str, list]:
        """The full split's AP per class (NaN -> None), in category-id order."""
        ap = self.class_ap(np.ones((1, len(self.image_ids))))[0]
        return {"class_ids": self.class_ids.tolist(), "frequency": self.frequency.tolist(),
                "AP": [None if np.isnan(v) else float(v) for v in ap]}


def _mean_precision(w: np.ndarray, tp: np.ndarray, fp: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """lvis-api's interpolated precision, mean over recall thresholds: (B, T) for one class.

    w: (B, D) weights of the class's detections in accumulation order; tp, fp: (T, D)."""
    tp_sum = np.cumsum(w[:, None, :] * tp[None], axis=2)
    fp_sum = np.cumsum(w[:, None, :] * fp[None], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(num_gt[:, None, None] > 0, tp_sum / num_gt[:, None, None], 0.0)
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1]
    samples, thresholds, dets = envelope.shape
    rows = samples * thresholds
    # One searchsorted for every (sample, threshold) row: row r's recalls are shifted into
    # [2r, 2r + 1], so the flattened array stays sorted.
    offset = 2.0 * np.arange(rows)[:, None]
    found = np.searchsorted((recall.reshape(rows, dets) + offset).ravel(), (REC_THRS[None] + offset).ravel(), side="left")
    local = found.reshape(rows, len(REC_THRS)) - dets * np.arange(rows)[:, None]
    inside = local < dets
    picked = np.take_along_axis(envelope.reshape(rows, dets), np.minimum(local, dets - 1), axis=1)
    return np.where(inside, picked, 0.0).mean(axis=1).reshape(samples, thresholds)


class _quiet_nan_means:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


@dataclass
class PredictionTable:
    """Top-1 predictions of one classification run on its test split."""

    image_ids: np.ndarray   # (N,) test image index, in the test loader's (fixed) order
    label: np.ndarray       # (N,) true class
    pred: np.ndarray        # (N,) predicted class
    frequency: np.ndarray   # (C,) 'f' / 'c' / 'r' (many / medium / few shot)

    def save(self, path: Path) -> Path:
        with open(path, "wb") as handle:
            np.savez_compressed(handle, kind=np.array("classification"), image_ids=self.image_ids,
                                label=self.label.astype(np.int32), pred=self.pred.astype(np.int32),
                                frequency=self.frequency.astype("U1"))
        return path

    @classmethod
    def from_npz(cls, data) -> "PredictionTable":
        return cls(image_ids=data["image_ids"], label=data["label"], pred=data["pred"], frequency=data["frequency"])

    def _weights(self, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            return np.ones((1, len(self.image_ids)))
        return np.atleast_2d(np.asarray(weights, dtype=np.float64))

    def per_class(self, weights: np.ndarray | None = None) -> np.ndarray:
        """(B, C) accuracy of each class; NaN where a weighting holds none of its images."""
        weights = self._weights(weights)
        one_hot = np.zeros((len(self.label), len(self.frequency)))
        one_hot[np.arange(len(self.label)), self.label] = 1.0
        hits = (self.pred == self.label).astype(np.float64)
        count = weights @ one_hot                 # weighted test images per class
        correct = (weights * hits) @ one_hot      # weighted correct ones
        with np.errstate(all="ignore"):
            return np.where(count > 0, correct / count, np.nan)

    def metrics(self, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """accuracy (over images) and acc_many, acc_medium, acc_few (mean per-class accuracy of
        the group's classes), fractions, each of shape (B,): the classifier's test metric
        (`fasa_cli.cls_ext.metric`) is this with every weight 1."""
        weights = self._weights(weights)
        per_class = self.per_class(weights)
        hits = (self.pred == self.label).astype(np.float64)
        with np.errstate(all="ignore"), _quiet_nan_means():
            out = {"accuracy": (weights @ hits) / weights.sum(axis=1)}
            for name, letter in ACCURACY_METRICS.items():
                if letter is not None:
                    members = self.frequency == letter
                    out[name] = (np.nanmean(per_class[:, members], axis=1) if members.any()
                                 else np.full(len(weights), np.nan))
        return out


def load_outcomes(path: Path) -> "MatchTable | PredictionTable":
    """A run's per-image evaluation outcomes: a match table (detection) or a prediction table."""
    try:
        with np.load(path) as data:  # read once; the file says which table it holds
            if "kind" in data.files and str(data["kind"]) == "classification":
                return PredictionTable.from_npz(data)
            return MatchTable.from_npz(data)
    except (OSError, ValueError, KeyError) as err:
        raise FasaError(f"evaluation outcomes {path} are unreadable ({err})",
                        "re-run `fasa eval` on the run, or redo it") from None


# -- building a table from detections (lvis-api's own matching) ---------------------------


def match_table(gt: GroundTruth, detections: Sequence[dict], iou_type: str = "segm", max_dets: int = 300) -> MatchTable:
    """Match detections to ground truth exactly as lvis-api does and keep the outcome."""
    from lvis import LVIS, LVISEval, LVISResults

    gt = load_ground_truth(gt, lvis=True)
    categories = sorted(gt["categories"], key=lambda c: c["id"])
    image_ids = np.array(sorted(im["id"] for im in gt["images"]), dtype=np.int64)
    class_ids = np.array([c["id"] for c in categories], dtype=np.int64)
    frequency = np.array([c["frequency"] for c in categories])
    dets = prepare_detections(detections, gt, iou_type, max_dets_per_image=max_dets) if detections else []
    dets = _evaluable(gt, dets, iou_type)

    lvis_gt = LVIS.__new__(LVIS)
    lvis_gt.logger = logging.getLogger("lvis.lvis")
    lvis_gt.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    lvis_gt._create_index()
    quiet = logging.getLogger("lvis")
    level, quiet.level = quiet.level, logging.WARNING
    try:
        evaluator = LVISEval(lvis_gt, LVISResults(lvis_gt, dets, max_dets=max_dets) if dets else _empty(lvis_gt),
                             iou_type=iou_type)
        evaluator.params.max_dets = max_dets
        with numpy_removed_aliases():
            evaluator.evaluate()
    finally:
        quiet.level = level

    num_images = len(evaluator.params.img_ids)
    num_areas = len(evaluator.params.area_rng)
    if list(evaluator.params.img_ids) != image_ids.tolist():
        raise FasaError("lvis-api ordered the validation images unexpectedly", "report this as a bug")
    image_index = {int(i): n for n, i in enumerate(image_ids)}
    det_parts: list[tuple] = []
    gt_class, gt_image, gt_count = [], [], []
    for k in range(len(class_ids)):
        base = k * num_areas * num_images  # area "all" comes first
        entries = [e for e in evaluator.eval_imgs[base:base + num_images] if e is not None]
        if not entries:
            continue
        for e in entries:
            counted = int(np.count_nonzero(np.asarray(e["gt_ignore"]) == 0))
            if counted:
                gt_class.append(k)
                gt_image.append(image_index[int(e["image_id"])])
                gt_count.append(counted)
        scores = np.concatenate([np.asarray(e["dt_scores"], dtype=np.float64) for e in entries])
        if not len(scores):
            continue
        order = np.argsort(-scores, kind="mergesort")  # lvis-api's accumulation order
        matched = np.concatenate([np.asarray(e["dt_matches"]).reshape(len(IOU_THRS), -1) for e in entries], axis=1)[:, order]
        ignored = np.concatenate([np.asarray(e["dt_ignore"]).reshape(len(IOU_THRS), -1) for e in entries], axis=1)[:, order]
        images = np.concatenate([np.full(len(e["dt_scores"]), image_index[int(e["image_id"])]) for e in entries])[order]
        det_parts.append((np.full(len(order), k), images, (matched != 0) & ~ignored.astype(bool),
                          (matched == 0) & ~ignored.astype(bool)))
    if det_parts:
        det_class = np.concatenate([p[0] for p in det_parts])
        det_image = np.concatenate([p[1] for p in det_parts])
        det_tp = np.concatenate([p[2] for p in det_parts], axis=1)
        det_fp = np.concatenate([p[3] for p in det_parts], axis=1)
    else:
        det_class = det_image = np.zeros(0, dtype=np.int64)
        det_tp = det_fp = np.zeros((len(IOU_THRS), 0), dtype=bool)
    return MatchTable(image_ids, class_ids, frequency, det_class, det_image, det_tp, det_fp,
                      np.asarray(gt_class, dtype=np.int64), np.asarray(gt_image, dtype=np.int64),
                      np.asarray(gt_count, dtype=np.int64), iou_type)


def _evaluable(gt: dict, dets: list[dict], iou_type: str) -> list[dict]:
    """The detections lvis-api evaluates: positive area, of a class their image verified."""
    if not dets:
        return []
    from pycocotools import mask as mask_utils

    if "bbox" in dets[0]:
        areas = [d["bbox"][2] * d["bbox"][3] for d in dets]
    else:
        areas = mask_utils.area([d["segmentation"] for d in dets])
    verified = {(a["image_id"], a["category_id"]) for a in gt["annotations"] if a["area"] > 0}
    verified.update((im["id"], c) for im in gt["images"] for c in im["neg_category_ids"])
    return [d for d, area in zip(dets, areas) if area > 0 and (d["image_id"], d["category_id"]) in verified]


def _empty(lvis_gt):
    """LVISResults of no detections (lvis-api refuses an empty list)."""
    from lvis import LVISResults

    results = LVISResults.__new__(LVISResults)
    results.logger = logging.getLogger("lvis.results")
    results.dataset = {"images": lvis_gt.dataset["images"], "categories": lvis_gt.dataset["categories"], "annotations": []}
    results._create_index()
    return results


# -- paired intervals ---------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDelta:
    metric: str
    delta: float    # mean over pairs of (a - b) on the full split, fraction
    low: float      # bootstrap percentile interval of that mean
    high: float
    pairs: int
    samples: int

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def bootstrap_weights(num_images: int, samples: int, seed: int = 0) -> np.ndarray:
    """(samples, N) multiplicities of the N images in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=samples).astype(np.float64)


def paired_deltas(
    runs_a: Sequence[MatchTable],
    runs_b: Sequence[MatchTable],
    metrics: Sequence[str] = ("AP", "APr"),
    samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedDelta]:
    """Mean over paired runs (a_i, b_i: same seed, same split) of metric(a_i) - metric(b_i),
    with a percentile interval from a two-level bootstrap: each resample draws the validation
    images (the same draw for every run) and, with two or more pairs, the pairs themselves.
    Images alone measure evaluation noise; drawing the pairs adds training noise, which is
    as large: a change of thread count alone moved one baseline seed's APr by 4 points."""
    if not runs_a or len(runs_a) != len(runs_b):
        raise FasaError("paired intervals need the same number (> 0) of runs on each side",
                        "compare rows over the same seeds")
    images = runs_a[0].image_ids
    for table in (*runs_a, *runs_b):
        if not np.array_equal(table.image_ids, images):
            raise FasaError("paired runs were evaluated on different validation images",
                            "compare runs of the same dataset")
    weights = np.vstack([np.ones((1, len(images))), bootstrap_weights(len(images), samples, seed)])
    # per_pair[m][i, s]: pair i's difference on resample s (column 0: the full split)
    per_pair = {m: np.zeros((len(runs_a), len(weights))) for m in metrics}
    for i, (a, b) in enumerate(zip(runs_a, runs_b)):
        ma, mb = a.metrics(weights), b.metrics(weights)
        for m in metrics:
            per_pair[m][i] = ma[m] - mb[m]
    pairs = len(runs_a)
    drawn = (np.random.default_rng([seed, 1]).integers(0, pairs, size=(samples, pairs)) if pairs > 1
             else np.zeros((samples, 1), dtype=int))
    columns = np.arange(1, samples + 1)[:, None]
    tail = 100 * (1 - level) / 2
    out = {}
    for m in metrics:
        boot = per_pair[m][drawn, columns].mean(axis=1)
        low, high = (np.nanpercentile(boot, [tail, 100 - tail]) if np.isfinite(boot).any() else (np.nan, np.nan))
        out[m] = PairedDelta(m, float(per_pair[m][:, 0].mean()), float(low), float(high), pairs, samples)
    return out


def seed_paired_delta(metric: str, pairs: Sequence[tuple[float | None, float | None]],
                      level: float = 0.95) -> PairedDelta | None:
    """Mean of a_i - b_i over seed pairs (a_i, b_i) with a Student-t interval, for run-level
    metrics (step time, memory) that have no per-image outcomes to resample; pairs with a
    missing side are skipped; None below 2 pairs."""
    from scipy.stats import t as student_t

    diffs = np.array([a - b for a, b in pairs if a is not None and b is not None], dtype=float)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < 2:
        return None
    half = float(student_t.ppf(0.5 + level / 2, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
    mean = float(diffs.mean())
    return PairedDelta(metric, mean, mean - half, mean + half, len(diffs), 0)


def bootstrap_spread(tables: Sequence[MatchTable], metrics: Sequence[str] = ("AP", "APr"),
                     samples: int = 200, seed: int = 0) -> dict[str, float]:
    """Evaluation noise alone: the bootstrap sd over images of each metric, averaged over runs."""
    weights = bootstrap_weights(len(tables[0].image_ids), samples, seed)
    spread = {m: 0.0 for m in metrics}
    for table in tables:
        values = table.metrics(weights)
        for m in metrics:
            spread[m] += float(np.nanstd(values[m], ddof=1)) / len(tables)
    return spread
