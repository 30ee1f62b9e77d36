"""lvis-api on numpy 2 through the project's shim, and tidecv without its plotting dependencies."""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest

from fasa_cli.evaluation import evaluate_lvis
from fasa_cli.evaluation.compat import import_tidecv, numpy_removed_aliases


def _lvis_eval(gt: dict, dets: list[dict], iou_type: str):
    """lvis-api used directly, the way its README shows, on copies of the inputs."""
    from lvis import LVIS, LVISEval, LVISResults

    lvis_gt = LVIS.__new__(LVIS)
    lvis_gt.logger = logging.getLogger("lvis.test")
    lvis_gt.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    lvis_gt._create_index()
    with warnings.catch_warnings():  # lvis-api calls the deprecated logger.warn
        warnings.simplefilter("ignore", DeprecationWarning)
        results = LVISResults(lvis_gt, [dict(d) for d in dets], max_dets=300)
    evaluator = LVISEval(lvis_gt, results, iou_type=iou_type)
    evaluator.evaluate()
    return evaluator


def test_numpy_2_lacks_the_alias_lvis_api_uses():
    assert int(np.__version__.split(".")[0]) >= 2
    assert not hasattr(np, "float")


def test_lvis_api_fails_on_numpy_2_without_the_shim(lvis_gt_small, lvis_small_derive):
    evaluator = _lvis_eval(lvis_gt_small, lvis_small_derive.perfect("bbox"), "bbox")
    with pytest.raises(AttributeError, match="float"):
        evaluator.accumulate()


def test_lvis_api_runs_on_numpy_2_through_the_shim(lvis_gt, lvis_derive):
    """Plain lvis-api (its own federated filtering and per-image limit) inside the shim
    gives what evaluate_lvis reports, and numpy is left as it was."""
    dets = lvis_derive.realistic("bbox", seed=5)
    evaluator = _lvis_eval(lvis_gt, dets, "bbox")
    with numpy_removed_aliases():
        evaluator.accumulate()
        evaluator.summarize()
    assert not hasattr(np, "float")
    # The reference backend is this same call; the fast one must match it too.
    ours = evaluate_lvis(lvis_gt, dets, "bbox", backend="fast")
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APc", "APf", "APr"):
        expected = evaluator.results[key]
        if expected == -1:
            assert np.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(expected, abs=1e-4), key


def test_shim_restores_numpy_after_an_error():
    with pytest.raises(RuntimeError):
        with numpy_removed_aliases():
            assert np.float is float
            raise RuntimeError("inside")
    assert not hasattr(np, "float") and not hasattr(np, "int")


def test_tidecv_imports_without_leaving_placeholders():
    tidecv = import_tidecv()
    assert hasattr(tidecv, "TIDERun") and hasattr(tidecv, "Data")
    for name in ("seaborn", "appdirs"):
        module = sys.modules.get(name)
        # Either the real package is installed, or nothing is left registered under its name.
        assert module is None or getattr(module, "__file__", None) is not None
