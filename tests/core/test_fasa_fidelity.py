"""Switches between the paper's reading and the official code's (README "Fidelity")."""

from __future__ import annotations

import pytest
import torch

from fasa_cli.core import FASA, FASAConfig


def _fasa(**settings) -> FASA:
    return FASA(FASAConfig(num_classes=3, feat_dim=2, momentum=0.5, **settings), [10, 10, 10])


def test_a_single_roi_keeps_the_spread_by_default_and_blends_zero_in_the_official_mode():
    two = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    for mode, expected in (("keep", 2 ** 0.5), ("blend_zero", 0.5 * 2 ** 0.5)):
        fasa = _fasa(single_sample_spread=mode)
        fasa.update(two, torch.tensor([0, 0]))  # std sqrt(2) in each dimension
        fasa.update(torch.tensor([[1.0, 1.0]]), torch.tensor([0]))  # one RoI: no unbiased spread
        assert fasa.spread[0].tolist() == pytest.approx([expected, expected], abs=1e-6), mode


def test_group_signal_mean_compares_shared_classes_and_sum_counts_missing_ones_as_zero():
    # One group of two classes. Class 0 worsens slightly; class 1 has no signal now.
    before, after = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([1.05, 0.0, 0.0])
    valid_before = torch.tensor([True, True, False])
    valid_after = torch.tensor([True, False, False])
    outcome = {}
    for mode in ("mean", "sum"):
        fasa = _fasa(group_signal=mode, adapt_by="group", dbscan_eps=100.0)
        fasa.update(torch.tensor([[0.0, 0.0], [0.1, 0.1], [0.0, 0.1], [0.1, 0.0]]), torch.tensor([0, 0, 1, 1]))
        p0 = fasa.probs
        fasa.adapt(before, valid_before)
        fasa.adapt(after, valid_after)
        outcome[mode] = (fasa.probs / p0)[:2].tolist()
    assert outcome["mean"] == pytest.approx([0.9, 0.9])  # 1.05 > 1.0 over the shared class 0
    assert outcome["sum"] == pytest.approx([1.1, 1.1])   # 1.05 + 0 < 1.0 + 0.5


def test_adapt_reports_the_share_of_one_class_groups():
    fasa = FASA(FASAConfig(num_classes=4, feat_dim=1, dbscan_eps=0.5), [5, 5, 5, 5])
    fasa.update(torch.tensor([[0.0], [0.1], [0.05], [9.0], [9.1], [50.0], [50.1], [80.0], [80.2]]),
                torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3]))
    fasa.adapt(torch.ones(4), torch.ones(4, dtype=torch.bool))
    info = fasa.adapt(torch.ones(4) * 0.5, torch.ones(4, dtype=torch.bool))
    assert info["num_groups"] >= 2 and 0.0 <= info["singleton_share"] <= 1.0
    sizes = torch.bincount(fasa.groups)
    assert info["singleton_share"] == pytest.approx(float((sizes == 1).sum()) / len(sizes))
