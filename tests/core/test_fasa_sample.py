"""Eq. 3 virtual features and their Bernoulli(p_c) sampling; the virtual loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fasa_cli.core import FASA, FASAConfig


def seeded(num_classes=4, feat_dim=3, counts=None, seen=None, **kw) -> FASA:
    """A module in epoch 1 whose classes `seen` have been observed (default: all)."""
    fasa = FASA(FASAConfig(num_classes=num_classes, feat_dim=feat_dim, **kw), counts or [1] * num_classes)
    seen = range(num_classes) if seen is None else seen
    gen = torch.Generator().manual_seed(1)
    for c in seen:
        fasa.update(torch.randn(4, feat_dim, generator=gen) + c, torch.full((4,), c))
    fasa.set_epoch(1)
    return fasa


def test_no_sampling_before_start_epoch_and_no_randomness_used():
    fasa = seeded(scale=100.0)  # p = 1 for every class
    fasa.set_epoch(0)
    feats, labels = fasa.sample()
    assert feats.shape == (0, 3) and feats.dtype == torch.float32
    assert labels.shape == (0,) and labels.dtype == torch.long
    twin = copy.deepcopy(fasa)
    fasa.set_epoch(1)
    twin.set_epoch(1)
    fasa.sample()  # would consume random numbers if epoch 0 had
    assert torch.equal(seeded(scale=100.0).sample()[0], twin.sample()[0])


def test_start_epoch_setting():
    fasa = seeded(scale=100.0, start_epoch=3)
    fasa.set_epoch(2)
    assert fasa.sample()[1].numel() == 0
    fasa.set_epoch(3)
    assert fasa.sample()[1].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        fasa.set_epoch(-1)


def test_unseen_classes_are_never_sampled():
    fasa = seeded(num_classes=5, seen=[1, 3], scale=100.0)
    for _ in range(20):
        assert set(fasa.sample()[1].tolist()) == {1, 3}


def test_selection_frequency_matches_p():
    # inverse frequency of [1, 2, 4, 4] -> p = [0.5, 0.25, 0.125, 0.125] (sum of 1/N = 2)
    fasa = seeded(counts=[1, 2, 4, 4])
    assert fasa.probs.tolist() == pytest.approx([0.5, 0.25, 0.125, 0.125])
    trials = 4000
    hits = torch.zeros(4)
    for _ in range(trials):
        hits += torch.bincount(fasa.sample()[1], minlength=4)
    rate = hits / trials
    # 4 binomial standard deviations at n = 4000
    assert torch.allclose(rate, fasa.probs, atol=4 * (0.25 / trials) ** 0.5)


def test_virtual_per_class_repeats_each_selected_class():
    fasa = seeded(scale=100.0, virtual_per_class=3)
    assert fasa.sample()[1].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("mode", ["std", "var"])
def test_virtual_features_have_the_stored_moments(mode):
    fasa = FASA(FASAConfig(2, 3, spread=mode, scale=100.0, virtual_per_class=20_000), [1, 1])
    fasa.update(torch.tensor([[0.0, 1.0, 5.0], [2.0, 5.0, 5.0]]), torch.tensor([1, 1]))
    fasa.set_epoch(1)
    feats, labels = fasa.sample()
    assert labels.tolist() == [1] * 20_000
    target_std = torch.tensor([2**0.5, 8**0.5, 0.0])  # unbiased std of the two samples
    assert torch.allclose(feats.mean(0), torch.tensor([1.0, 3.0, 5.0]), atol=0.05)
    assert torch.allclose(feats.std(0), target_std, atol=0.05)


def test_virtual_loss_is_weighted_cross_entropy_on_the_sample():
    fasa = seeded(scale=100.0, loss_weight=0.25)
    classifier = torch.nn.Linear(3, 5)
    twin = copy.deepcopy(fasa)
    loss = fasa.virtual_loss(classifier, F.cross_entropy)
    feats, labels = twin.sample()
    assert loss.item() == pytest.approx(0.25 * F.cross_entropy(classifier(feats), labels).item())
    loss.backward()
    assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0


def test_virtual_loss_without_samples_is_a_connected_zero():
    fasa = seeded()
    fasa.set_epoch(0)
    classifier = torch.nn.Linear(3, 5)
    loss = fasa.virtual_loss(classifier, F.cross_entropy)
    assert loss.dim() == 0 and loss.item() == 0.0 and loss.requires_grad
    assert loss.device == classifier.weight.device
    loss.backward()
    assert torch.equal(classifier.weight.grad, torch.zeros_like(classifier.weight))


@settings(max_examples=40, deadline=None)
@given(
    num_classes=st.integers(1, 8),
    feat_dim=st.integers(1, 6),
    per_class=st.integers(1, 3),
    scale=st.sampled_from([0.0, 1.0, 100.0]),
    seen=st.sets(st.integers(0, 7)),
)
def test_sample_shapes_and_labels(num_classes, feat_dim, per_class, scale, seen):
    seen = sorted(c for c in seen if c < num_classes)
    fasa = seeded(num_classes, feat_dim, seen=seen, scale=scale, virtual_per_class=per_class)
    feats, labels = fasa.sample()
    assert feats.shape == (labels.numel(), feat_dim) and labels.dtype == torch.long
    assert labels.numel() % per_class == 0
    assert set(labels.tolist()) <= set(seen)
    if scale == 0.0:
        assert labels.numel() == 0
    if scale == 100.0:
        assert labels.numel() == per_class * len(seen)
    assert torch.isfinite(feats).all()
