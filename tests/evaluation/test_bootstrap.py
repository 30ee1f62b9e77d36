"""Match tables and paired bootstrap intervals: exactly lvis-api's AP on any image subset."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fasa_cli.evaluation import evaluate_lvis
from fasa_cli.evaluation.bootstrap import MatchTable, match_table, paired_deltas

METRICS = ("AP", "AP50", "AP75", "APr", "APc", "APf")


@pytest.fixture(scope="module")
def dets(lvis_small_derive):
    return lvis_small_derive.realistic("segm", seed=3)


@pytest.fixture(scope="module")
def table(lvis_gt_small, dets):
    return match_table(lvis_gt_small, dets, "segm")


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12


def test_full_split_equals_lvis_api(lvis_gt_small, dets, table):
    reference = evaluate_lvis(lvis_gt_small, dets, "segm", backend="reference")
    ours = {k: float(v[0]) for k, v in table.metrics().items()}
    for name in METRICS:
        assert _close(ours[name], reference[name]), (name, ours[name], reference[name])


def test_a_zero_one_weighting_equals_lvis_api_on_that_subset(lvis_gt_small, dets, table):
    keep = table.image_ids[::2]
    subset = {**lvis_gt_small, "images": [im for im in lvis_gt_small["images"] if im["id"] in set(keep.tolist())],
              "annotations": [a for a in lvis_gt_small["annotations"] if a["image_id"] in set(keep.tolist())]}
    reference = evaluate_lvis(subset, [d for d in dets if d["image_id"] in set(keep.tolist())], "segm", backend="reference")
    weights = np.isin(table.image_ids, keep).astype(float)[None]
    ours = {k: float(v[0]) for k, v in table.metrics(weights).items()}
    for name in METRICS:
        assert _close(ours[name], reference[name]), (name, ours[name], reference[name])


def test_save_and_load_round_trip(table, tmp_path):
    again = MatchTable.load(table.save(tmp_path / "m.npz"))
    assert np.array_equal(again.det_tp, table.det_tp) and np.array_equal(again.det_fp, table.det_fp)
    assert again.metrics()["AP"][0] == table.metrics()["AP"][0]


def test_paired_interval_of_a_run_with_itself_is_zero_and_a_worse_run_is_seen(lvis_small_derive, lvis_gt_small, table):
    same = paired_deltas([table], [table], ("AP", "APr"), samples=50)
    assert same["AP"].delta == 0 and same["AP"].low == 0 and same["AP"].high == 0
    assert not same["AP"].excludes_zero
    worse = match_table(lvis_gt_small, lvis_small_derive.jittered(lvis_small_derive.realistic("segm", seed=3), 0.3), "segm")
    delta = paired_deltas([worse], [table], ("AP",), samples=100)["AP"]
    assert delta.delta < 0 and delta.high < 0 and delta.excludes_zero
    assert delta.low <= delta.delta <= delta.high


def test_over_several_seeds_the_interval_also_resamples_the_pairs(lvis_small_derive, lvis_gt_small, table):
    """Two seed pairs that disagree (one equal, one clearly worse) give a wider interval than
    either pair's image noise alone would, reaching from about the worse pair's difference to 0."""
    worse = match_table(lvis_gt_small, lvis_small_derive.jittered(lvis_small_derive.realistic("segm", seed=3), 0.3), "segm")
    one = paired_deltas([worse], [table], ("AP",), samples=400)["AP"]
    both = paired_deltas([worse, table], [table, table], ("AP",), samples=400)["AP"]
    assert both.delta == pytest.approx(one.delta / 2)
    # Images alone would give the mean pair's interval, half as wide as one worse pair's.
    assert both.high - both.low > 1.5 * (one.high - one.low) / 2
    assert both.high >= -1e-12 and both.low <= 0.9 * one.delta  # a draw of only the equal pair, or only the worse
    same = paired_deltas([table, table], [table, table], ("AP",), samples=50)["AP"]
    assert same.low == same.high == 0


# -- classification: prediction tables ----------------------------------------------------


def _predictions(seed: int, accuracy: float, classes: int = 12, per_class: int = 20):
    from fasa_cli.evaluation.bootstrap import PredictionTable

    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(classes), per_class)
    wrong = rng.random(len(label)) > accuracy
    pred = np.where(wrong, (label + rng.integers(1, classes, len(label))) % classes, label)
    frequency = np.array(list("ffffccccrrrr"))[:classes]
    return PredictionTable(np.arange(len(label)), label, pred, frequency)


def test_prediction_table_equals_the_classifier_metric_on_any_multiset():
    pytest.importorskip("mmengine")
    from fasa_cli.cls_ext.metric import accuracy_metrics

    table = _predictions(0, 0.6)
    ours = {k: float(v[0]) for k, v in table.metrics().items()}
    reference, _ = accuracy_metrics(table.pred, table.label, table.frequency)
    assert ours == pytest.approx(reference, abs=1e-12)
    # Image i taken w_i times, with every image of class 11 (a few-shot one) left out.
    w = np.random.default_rng(1).integers(0, 3, len(table.label)).astype(float)
    w[table.label == 11] = 0
    repeated = np.repeat(np.arange(len(w)), w.astype(int))
    reference, _ = accuracy_metrics(table.pred[repeated], table.label[repeated], table.frequency)
    ours = {k: float(v[0]) for k, v in table.metrics(w[None]).items()}
    assert ours == pytest.approx(reference, abs=1e-12)


def test_prediction_table_round_trips_through_load_outcomes(table, tmp_path):
    from fasa_cli.evaluation.bootstrap import PredictionTable, load_outcomes

    predictions = _predictions(2, 0.5)
    again = load_outcomes(predictions.save(tmp_path / "p.npz"))
    assert isinstance(again, PredictionTable)
    assert np.array_equal(again.pred, predictions.pred) and list(again.frequency) == list(predictions.frequency)
    assert isinstance(load_outcomes(table.save(tmp_path / "m.npz")), MatchTable)  # detection still loads


def test_paired_accuracy_interval_sees_a_real_gain_and_none_between_equals():
    base = [_predictions(s, 0.5) for s in range(3)]
    same = paired_deltas(base, base, ["accuracy", "acc_few"])
    assert same["accuracy"].delta == 0 and same["accuracy"].low == same["accuracy"].high == 0
    better = [_predictions(s + 10, 0.8) for s in range(3)]
    gain = paired_deltas(better, base, ["accuracy", "acc_many", "acc_few"])
    assert gain["accuracy"].excludes_zero and gain["accuracy"].low > 0.15
    assert gain["acc_few"].low <= gain["acc_few"].delta <= gain["acc_few"].high
