"""Mean-shift grouping (Appendix D), the third clustering beside DBSCAN-Fisher and affinity
propagation: agreement with sklearn's MeanShift, and its place in FASA's group-wise update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fasa_cli.core import FASA, FASAConfig, compute_groups
from fasa_cli.core.config import FASAConfigError
from fasa_cli.core.grouping import NO_GROUP, mean_shift_bandwidth, mean_shift_labels


def _blobs(seed: int, n_blobs: int = 4, per_blob: int = 25, dim: int = 8, spread: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (n_blobs, dim))
    points = [rng.normal(c, spread, (per_blob, dim)) for c in centres]
    points.append(rng.normal(0.0, 3.0, (10, dim)))  # scattered classes between the blobs
    return np.concatenate(points)


@pytest.mark.parametrize("seed", range(6))
def test_mean_shift_gives_sklearn_meanshift_labels(seed):
    from sklearn.cluster import MeanShift, estimate_bandwidth

    points = _blobs(seed)
    bandwidth = estimate_bandwidth(points, quantile=0.3)
    assert float(mean_shift_bandwidth(torch.from_numpy(points))) == pytest.approx(bandwidth, rel=1e-9)
    expected = MeanShift(bandwidth=bandwidth).fit_predict(points)
    got = mean_shift_labels(torch.from_numpy(points)).numpy()
    assert got.tolist() == expected.tolist()


def test_mean_shift_finds_separated_groups_of_classes():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0] * 6, [10.0] * 6, [-10.0] * 6])
    means = centres.repeat_interleave(6, 0) + 0.3 * torch.randn(18, 6, generator=gen)
    labels = mean_shift_labels(means)
    assert labels.dtype == torch.long
    assert len(set(labels.tolist())) == 3
    for block in labels.view(3, 6):
        assert len(set(block.tolist())) == 1
    # Dense ids, strongest mode first: every id 0..G-1 is used.
    assert set(labels.tolist()) == {0, 1, 2}


def test_mean_shift_degenerate_inputs():
    assert mean_shift_labels(torch.zeros(0, 3)).tolist() == []
    assert mean_shift_labels(torch.ones(1, 3)).tolist() == [0]
    assert mean_shift_labels(torch.ones(5, 3)).tolist() == [0] * 5  # identical means: one group


def test_mean_shift_is_invariant_to_the_feature_scale():
    # The bandwidth is estimated from the means, so rescaling the features keeps the groups.
    points = torch.from_numpy(_blobs(3))
    assert mean_shift_labels(points).tolist() == mean_shift_labels(points * 37.0).tolist()


def _two_groups_of_classes() -> torch.Tensor:
    """24 class means: two groups of 12, each at +-0.5 along every axis around its centre."""
    axes = torch.cat([torch.eye(6), -torch.eye(6)]) * 0.5
    return torch.cat([axes, axes + 15.0])


def test_compute_groups_with_meanshift_leaves_unseen_classes_out():
    means = _two_groups_of_classes()
    seen = torch.ones(24, dtype=torch.bool)
    seen[3] = False
    means[3] = 1e6  # an unseen class's (meaningless) statistics must not place anything
    cfg = FASAConfig(24, 6, clustering="meanshift")
    groups = compute_groups(means, torch.ones(24, 6), seen, cfg)
    assert groups[3] == NO_GROUP
    first = [c for c in range(12) if c != 3]
    # The full group (12 classes) is the stronger mode, so it is numbered first.
    assert set(groups[12:].tolist()) == {0} and set(groups[first].tolist()) == {1}


def test_group_wise_adaptation_with_meanshift_moves_each_group_together():
    fasa = FASA(FASAConfig(num_classes=24, feat_dim=6, clustering="meanshift"), [1] * 24)
    fasa.mean.copy_(_two_groups_of_classes())
    fasa.spread.fill_(1.0)
    fasa.instances_seen.fill_(10)
    valid = torch.ones(24, dtype=torch.bool)
    fasa.adapt(torch.ones(24), valid)
    before = fasa.probs.clone()
    # The first group's loss falls on average (one class's rises), the second group's rises.
    signal = torch.cat([torch.full((12,), 0.5), torch.full((12,), 1.5)])
    signal[0] = 1.4
    info = fasa.adapt(signal, valid)
    assert info["num_groups"] == 2
    ratio = (fasa.probs / before).tolist()
    assert ratio[:12] == pytest.approx([1.1] * 12) and ratio[12:] == pytest.approx([0.9] * 12)
    assert fasa.groups.tolist() == [0] * 12 + [1] * 12  # equal strength: lower class index first


def test_meanshift_refuses_the_fisher_distance():
    with pytest.raises(FASAConfigError, match="meanshift"):
        FASAConfig(3, 2, clustering="meanshift", cluster_distance="fisher")
    assert FASAConfig(3, 2, clustering="meanshift").distance == "sq_euclidean"


def test_table11_compares_the_three_clusterings():
    from fasa_cli.experiments.spec import load_spec

    spec = load_spec("table11")
    clusterings = {row.name: spec.resolve(row.name, "cpu-compact").fasa for row in spec.rows}
    grouped = {name: s.clustering for name, s in clusterings.items() if s.adapt_by == "group"}
    assert sorted(grouped.values()) == ["affinity", "dbscan", "meanshift"]
    assert clusterings["class"].adapt_by == "class"
    # The DBSCAN row keeps its identity, so records made before Mean-shift existed still count.
    assert clusterings["group"].clustering == "dbscan"
