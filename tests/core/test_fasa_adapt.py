"""Sec. 3.2: the adaptive update of p_c (loss and metric signals, clamp, group- and
class-wise) and the clustering into super-groups."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fasa_cli.core import FASA, FASAConfig, compute_groups


def with_stats(means, stds=None, counts=None, **kw) -> FASA:
    """A module whose classes have the given (seen) means [C, d]; a None row = unseen class."""
    num_classes, dim = len(means), next(len(m) for m in means if m is not None)
    fasa = FASA(FASAConfig(num_classes=num_classes, feat_dim=dim, **kw), counts or [1] * num_classes)
    for c, m in enumerate(means):
        if m is not None:
            fasa.mean[c] = torch.tensor(m, dtype=torch.float32)
            fasa.spread[c] = torch.full((dim,), 1.0 if stds is None else stds[c])
            fasa.instances_seen[c] = 10
    return fasa


def ones(n):
    return torch.ones(n, dtype=torch.bool)


def test_first_call_only_stores_the_signal():
    fasa = with_stats([[0.0], [5.0]], counts=[1, 3], adapt_by="class")
    before = fasa.probs
    info = fasa.adapt(torch.tensor([1.0, 2.0]), ones(2))
    assert info["first_call"] and not info["adapted"]
    assert torch.equal(fasa.probs, before)
    assert fasa.prev_signal.tolist() == [1.0, 2.0] and bool(fasa.has_prev)


@pytest.mark.parametrize("signal_kind, better", [("loss", 0.5), ("metric", 2.0)])
def test_class_wise_rule_moves_p_the_right_way(signal_kind, better):
    fasa = with_stats([[0.0], [10.0], [20.0], [30.0]], counts=[1, 2, 4, 8], adapt_by="class", signal=signal_kind)
    p0 = fasa.probs
    fasa.adapt(torch.ones(4), ones(4))
    worse = 2.0 if better < 1.0 else 0.5
    info = fasa.adapt(torch.tensor([better, worse, 1.0, better]), ones(4))
    expected = p0 * torch.tensor([1.1, 0.9, 1.0, 1.1])
    assert torch.allclose(fasa.probs, expected)
    assert (info["up"], info["down"], info["num_groups"]) == (2, 1, 4)


def test_probabilities_are_clamped_to_one_and_stay_non_negative():
    fasa = with_stats([[0.0], [10.0]], scale=0.95 * 2, adapt_by="class")  # p = [0.95, 0.95]
    fasa.adapt(torch.tensor([1.0, 1.0]), ones(2))
    fasa.adapt(torch.tensor([0.5, 2.0]), ones(2))
    assert fasa.probs.tolist() == pytest.approx([1.0, 0.95 * 0.9])  # 0.95 * 1.1 clamped
    for epoch in range(200):  # keeps getting worse
        fasa.adapt(torch.tensor([0.5, 3.0 + epoch]), ones(2))
    assert fasa.probs[0] == 1.0 and 0.0 <= fasa.probs[1] < 1e-8


def test_group_wise_update_moves_classes_without_signal_with_their_group():
    # classes 0-2 near each other, 3-4 near each other, the two sets far apart; 5 unseen
    means = [[0.0, 0.0], [0.2, 0.1], [0.1, -0.2], [50.0, 50.0], [50.3, 49.9], None]
    fasa = with_stats(means, counts=[1, 2, 3, 4, 5, 6])
    p0 = fasa.probs
    valid = torch.tensor([True, True, False, False, False, True])  # group {3,4}: no signal
    fasa.adapt(torch.tensor([2.0, 2.0, 0.0, 0.0, 0.0, 1.0]), valid)
    info = fasa.adapt(torch.tensor([1.0, 2.5, 9.0, 9.0, 9.0, 0.1]), valid)  # group mean 2 -> 1.75
    groups = fasa.groups.tolist()
    assert groups[0] == groups[1] == groups[2] != groups[3] == groups[4] and groups[5] == -1
    assert info["num_groups"] == 2 and info["up"] == 3 and info["down"] == 0
    assert torch.allclose(fasa.probs, p0 * torch.tensor([1.1, 1.1, 1.1, 1.0, 1.0, 1.0]))


def test_only_classes_valid_in_both_epochs_are_compared():
    fasa = with_stats([[0.0], [0.1]], counts=[1, 1])
    fasa.adapt(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    # class 1 newly valid with a low loss must not make the group look better; class 0 worsened
    fasa.adapt(torch.tensor([1.2, 0.0]), ones(2))
    assert fasa.probs.tolist() == pytest.approx([0.5 * 0.9, 0.5 * 0.9])


def test_non_finite_signal_counts_as_missing():
    fasa = with_stats([[0.0], [30.0]], counts=[1, 1], adapt_by="class")
    fasa.adapt(torch.tensor([1.0, 1.0]), ones(2))
    fasa.adapt(torch.tensor([0.5, float("nan")]), ones(2))
    assert fasa.probs.tolist() == pytest.approx([0.55, 0.5])


def test_dbscan_noise_class_is_its_own_group():
    means = [[0.0, 0.0], [0.1, 0.0], [40.0, -40.0]]  # class 2 has no neighbour
    fasa = with_stats(means, counts=[1, 1, 1])
    p0 = fasa.probs
    fasa.adapt(torch.tensor([1.0, 1.0, 1.0]), ones(3))
    fasa.adapt(torch.tensor([1.0, 1.0, 2.0]), ones(3))
    assert fasa.groups[0] == fasa.groups[1] != fasa.groups[2]
    assert torch.allclose(fasa.probs, p0 * torch.tensor([1.0, 1.0, 0.9]))


def test_static_sampling_never_changes_p_but_records_the_signal():
    fasa = with_stats([[0.0], [30.0]], counts=[1, 9], adaptive=False, scale=5.0)
    p0 = fasa.probs
    assert p0.tolist() == pytest.approx([1.0, 0.5])  # 5 * [0.9, 0.1], clamped
    for signal in ([1.0, 1.0], [0.1, 9.0], [0.0, 0.0]):
        fasa.adapt(torch.tensor(signal), ones(2))
        assert torch.equal(fasa.probs, p0)
    assert fasa.prev_signal.tolist() == [0.0, 0.0]


def test_adapt_rejects_wrong_sizes():
    fasa = with_stats([[0.0], [1.0]])
    with pytest.raises(ValueError, match="2 entries"):
        fasa.adapt(torch.ones(3), ones(3))


# ---------------------------------------------------------------- clustering


def test_fisher_dbscan_keeps_separated_classes_apart_and_joins_near_ones():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0] * 8, [6.0] * 8, [-6.0] * 8])
    means = centres.repeat_interleave(4, 0) + 0.2 * torch.randn(12, 8, generator=gen)
    cfg = FASAConfig(num_classes=12, feat_dim=8)
    groups = compute_groups(means, torch.ones(12, 8), torch.ones(12, dtype=torch.bool), cfg)
    assert groups.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_fisher_distance_joins_classes_whose_spread_covers_the_gap():
    # Same means; with std 1 the classes are 6 std apart, with std 20 they overlap.
    means = torch.tensor([[0.0, 0.0], [6.0, 6.0]])
    cfg = FASAConfig(num_classes=2, feat_dim=2)
    seen = torch.ones(2, dtype=torch.bool)
    assert compute_groups(means, torch.ones(2, 2), seen, cfg).tolist() == [0, 1]
    assert compute_groups(means, torch.full((2, 2), 20.0), seen, cfg).tolist() == [0, 0]


def test_variance_mode_clusters_like_std_mode():
    means = torch.tensor([[0.0], [1.0], [9.0]])
    seen = torch.ones(3, dtype=torch.bool)
    std = torch.tensor([[1.0], [1.0], [1.0]])
    by_std = compute_groups(means, std, seen, FASAConfig(3, 1, spread="std"))
    by_var = compute_groups(means, std.square(), seen, FASAConfig(3, 1, spread="var"))
    assert by_std.tolist() == by_var.tolist() == [0, 0, 1]


def test_affinity_propagation_with_similarity_finds_the_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    means = centres.repeat_interleave(5, 0) + 0.5 * torch.randn(15, 2, generator=gen)
    seen = torch.ones(15, dtype=torch.bool)
    cfg = FASAConfig(15, 2, clustering="affinity", affinity_input="similarity")
    groups = compute_groups(means, torch.ones(15, 2), seen, cfg)
    assert len(set(groups.tolist())) == 3
    for block in groups.view(3, 5):
        assert len(set(block.tolist())) == 1


def test_affinity_propagation_official_distance_input_still_groups_every_class():
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(15, 2, generator=gen)
    seen = torch.ones(15, dtype=torch.bool)
    seen[7] = False
    cfg = FASAConfig(15, 2, clustering="affinity")  # affinity_input="distance", the official choice
    groups = compute_groups(means, torch.ones(15, 2), seen, cfg)
    assert groups[7] == -1
    ids = groups[seen]
    assert (ids >= 0).all() and set(ids.tolist()) == set(range(int(ids.max()) + 1))


signals = st.lists(st.floats(0, 5, width=32), min_size=6, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    epochs=st.lists(st.tuples(signals, st.lists(st.booleans(), min_size=6, max_size=6)), min_size=2, max_size=5),
    adapt_by=st.sampled_from(["group", "class"]),
    signal_kind=st.sampled_from(["loss", "metric"]),
)
def test_p_only_moves_by_alpha_or_beta_and_stays_in_unit_interval(epochs, adapt_by, signal_kind):
    means = [[0.0, 0.0], [0.3, 0.0], [9.0, 9.0], [9.2, 9.0], [-9.0, 4.0], None]
    fasa = with_stats(means, counts=[1, 2, 3, 4, 5, 6], scale=4.0, adapt_by=adapt_by, signal=signal_kind)
    for signal, valid in epochs:
        before = fasa.probs
        info = fasa.adapt(torch.tensor(signal), torch.tensor(valid))
        after = fasa.probs
        assert ((after >= 0) & (after <= 1)).all()
        ratio_ok = (
            torch.isclose(after, before)
            | torch.isclose(after, (before * 1.1).clamp(max=1.0))
            | torch.isclose(after, before * 0.9)
        )
        assert ratio_ok.all()
        assert after[5] == before[5]  # unseen class: never moved
        assert info["up"] + info["down"] <= 5
