"""Hand-computed checks of Eq. 4 (initial probabilities), Eq. 5 (Fisher distance) and the
per-class mean helper."""

from __future__ import annotations

import math

import pytest
import torch

from fasa_cli.core import fisher_distance, initial_probs, per_class_mean, squared_euclidean_distance


def test_per_class_mean_and_counts():
    values = torch.tensor([1.0, 3.0, 10.0, 4.0])
    labels = torch.tensor([0, 0, 2, 0])
    means, counts = per_class_mean(values, labels, num_classes=4)
    assert torch.allclose(means, torch.tensor([8.0 / 3.0, 0.0, 10.0, 0.0]))
    assert counts.tolist() == [3, 0, 1, 0]


def test_per_class_mean_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        per_class_mean(torch.ones(2), torch.tensor([0, 3]), num_classes=3)


def test_inverse_frequency_init_eq4_by_hand():
    # 1/N = [1, 1/4, 1/5]; sum = 1.45
    p = initial_probs([1, 4, 5], "inverse_freq")
    assert torch.allclose(p, torch.tensor([1 / 1.45, 0.25 / 1.45, 0.2 / 1.45]))
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-6)


def test_zero_count_classes_get_no_probability_and_no_share():
    p = initial_probs([2, 0, 2], "inverse_freq")
    assert p.tolist() == pytest.approx([0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="all zero"):
        initial_probs([0, 0], "inverse_freq")


def test_uniform_init_ignores_counts():
    p = initial_probs([1, 100, 10_000, 0], "uniform")
    assert p.tolist() == pytest.approx([0.25] * 4)


def test_static_scale_and_power_then_clamp():
    # p0 = [0.8, 0.2]; scale 5 -> [4.0, 1.0] -> clamp -> [1.0, 1.0]
    assert initial_probs([1, 4], "inverse_freq", scale=5.0).tolist() == pytest.approx([1.0, 1.0])
    # scale 1.25 -> [1.0, 0.25]
    assert initial_probs([1, 4], "inverse_freq", scale=1.25).tolist() == pytest.approx([1.0, 0.25])
    # power 2: [0.64, 0.04]
    assert initial_probs([1, 4], "inverse_freq", power=2.0).tolist() == pytest.approx([0.64, 0.04])


def test_fisher_distance_eq5_by_hand():
    mean = torch.tensor([[0.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    var = torch.tensor([[1.0, 1.0], [1.0, 3.0], [2.0, 0.5]])
    d = fisher_distance(mean, var, reduce="mean", eps=0.0)
    # d01 = mean(4/2, 1/4) = 1.125 ; d02 = mean(0/3, 9/1.5) = 3 ; d12 = mean(4/3, 4/3.5)
    assert d[0, 1].item() == pytest.approx(1.125)
    assert d[0, 2].item() == pytest.approx(3.0)
    assert d[1, 2].item() == pytest.approx(0.5 * (4 / 3 + 4 / 3.5))
    assert torch.equal(d, d.T)
    assert torch.all(d.diagonal() == 0)
    pooled = fisher_distance(mean, var, eps=0.0)  # sum of squared gaps over sum of variances
    assert pooled[0, 1].item() == pytest.approx(5 / 6)
    assert pooled[0, 2].item() == pytest.approx(9 / 4.5)
    assert pooled[1, 2].item() == pytest.approx(8 / 6.5)


def test_near_dead_relu_dimensions_do_not_split_classes_that_agree_elsewhere():
    # Review case: two classes identical in 248 of 256 dimensions; in 8 near-dead ones one
    # class fires weakly (mean 0.05, var 1e-4) and the other never (0, 0).
    gen = torch.Generator().manual_seed(0)
    live_mean = torch.rand(248, generator=gen)
    live_var = torch.rand(248, generator=gen) * 0.5 + 0.1
    mean = torch.stack([torch.cat([live_mean, torch.full((8,), 0.05)]), torch.cat([live_mean, torch.zeros(8)])])
    var = torch.stack([torch.cat([live_var, torch.full((8,), 1e-4)]), torch.cat([live_var, torch.zeros(8)])])
    assert fisher_distance(mean, var, reduce="mean")[0, 1].item() > 0.5  # the fragile reading splits them
    assert fisher_distance(mean, var)[0, 1].item() < 0.01                # the pooled one does not


def test_fisher_distance_blocks_match_a_direct_computation(monkeypatch):
    import fasa_cli.core.stats as stats

    monkeypatch.setattr(stats, "_FISHER_BLOCK_ELEMENTS", 64)  # forces many small row blocks
    gen = torch.Generator().manual_seed(0)
    mean, var = torch.randn(23, 5, generator=gen), torch.rand(23, 5, generator=gen) + 0.1
    floor = 1e-6 * var.mean()
    direct = ((mean[:, None] - mean[None]) ** 2 / (var[:, None] + var[None] + floor)).mean(-1)
    direct.fill_diagonal_(0)
    assert torch.allclose(fisher_distance(mean, var, reduce="mean"), direct, atol=1e-6)
    pooled = ((mean[:, None] - mean[None]) ** 2).sum(-1) / ((var[:, None] + var[None]).sum(-1) + 5 * floor)
    pooled.fill_diagonal_(0)
    assert torch.allclose(fisher_distance(mean, var), pooled, atol=1e-6)


def test_fisher_distance_constant_dimensions_do_not_explode():
    mean = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    var = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # dim 0 is constant (e.g. a dead ReLU) in both
    assert fisher_distance(mean, var, reduce="mean")[0, 1].item() == pytest.approx(0.25, rel=1e-5)
    assert fisher_distance(mean, var)[0, 1].item() == pytest.approx(0.5, rel=1e-5)


def test_squared_euclidean_distance():
    mean = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert torch.allclose(squared_euclidean_distance(mean), torch.tensor([[0.0, 25.0], [25.0, 0.0]]))
