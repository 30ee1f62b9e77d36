"""Eq. 2: online per-class mean and spread, by hand, against a per-class loop oracle
(property-based), and converging on a known Gaussian stream."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fasa_cli.core import FASA, FASAConfig


def make(num_classes=3, feat_dim=2, **kw) -> FASA:
    return FASA(FASAConfig(num_classes=num_classes, feat_dim=feat_dim, **kw), [1] * num_classes)


def test_eq2_first_observation_copied_then_momentum_std():
    fasa = make()
    fasa.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), torch.tensor([0, 0]))
    assert fasa.mean[0].tolist() == pytest.approx([2.0, 4.0])
    assert fasa.spread[0].tolist() == pytest.approx([math.sqrt(2), math.sqrt(8)])  # unbiased std
    fasa.update(torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]]), torch.tensor([0, 0, 0]))
    assert fasa.mean[0].tolist() == pytest.approx([0.9 * 2 + 0.1 * 2, 0.9 * 4 + 0.1 * 0])
    assert fasa.spread[0].tolist() == pytest.approx([0.9 * math.sqrt(2) + 0.1 * 2.0, 0.9 * math.sqrt(8)])
    assert fasa.instances_seen.tolist() == [5, 0, 0]


def test_eq2_variance_mode_keeps_variance():
    fasa = make(spread="var")
    fasa.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), torch.tensor([0, 0]))
    fasa.update(torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]]), torch.tensor([0, 0, 0]))
    assert fasa.spread[0].tolist() == pytest.approx([0.9 * 2 + 0.1 * 4, 0.9 * 8 + 0.1 * 0])


@pytest.mark.parametrize("momentum", [0.1, 0.3, 0.33, 0.7])
def test_first_observation_is_copied_exactly(momentum):
    fasa = make(momentum=momentum)
    x = torch.tensor([[0.1234567, 7.654321], [3.3, 1e-3]])
    fasa.update(x, torch.tensor([0, 1]))
    assert torch.equal(fasa.mean[:2], x)


def test_custom_momentum():
    fasa = make(momentum=0.5)
    fasa.update(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
    fasa.update(torch.tensor([[4.0, 2.0]]), torch.tensor([1]))
    assert fasa.mean[1].tolist() == pytest.approx([2.0, 1.0])


def test_single_sample_of_a_class():
    fasa = make()
    fasa.update(torch.tensor([[5.0, 1.0]]), torch.tensor([2]))
    # first sighting with one sample: mean copied, no spread yet (virtual features = mean)
    assert fasa.mean[2].tolist() == [5.0, 1.0]
    assert fasa.spread[2].tolist() == [0.0, 0.0] and fasa.spread_updates[2] == 0
    fasa.update(torch.tensor([[1.0, 1.0], [3.0, 3.0]]), torch.tensor([2, 2]))
    # the first batch with a spread copies it rather than averaging with the 0 placeholder
    assert fasa.spread[2].tolist() == pytest.approx([math.sqrt(2), math.sqrt(2)])
    spread_before = fasa.spread[2].clone()
    fasa.update(torch.tensor([[9.0, 9.0]]), torch.tensor([2]))
    assert torch.equal(fasa.spread[2], spread_before)  # a lone sample says nothing about spread
    assert fasa.mean[2].tolist() == pytest.approx([0.9 * (0.9 * 5 + 0.1 * 2) + 0.9, 0.9 * (0.9 * 1 + 0.1 * 2) + 0.9])


def test_empty_batch_is_a_no_op_and_bad_input_is_rejected():
    fasa = make()
    before = {k: v.clone() for k, v in fasa.state_dict().items() if isinstance(v, torch.Tensor)}
    fasa.update(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    for key, value in before.items():
        assert torch.equal(fasa.state_dict()[key], value)
    with pytest.raises(ValueError, match="background"):
        fasa.update(torch.zeros(1, 2), torch.tensor([3]))  # label == num_classes (mmdet background)
    with pytest.raises(ValueError, match=r"features \[N, 2\]"):
        fasa.update(torch.zeros(1, 5), torch.tensor([0]))


def test_update_detaches_and_accepts_half_precision():
    fasa = make()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    fasa.update(x.half(), torch.tensor([0, 0]))
    assert not fasa.mean.requires_grad and fasa.mean.dtype == torch.float32
    assert fasa.mean[0].tolist() == [2.0, 3.0]


def test_statistics_converge_to_a_known_gaussian_stream():
    gen = torch.Generator().manual_seed(0)
    true_mean = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]])
    true_std = torch.tensor([[0.5, 1.0, 2.0, 0.1], [1.0, 1.0, 1.0, 1.0]])
    for spread in ("std", "var"):
        fasa = make(num_classes=2, feat_dim=4, spread=spread)
        for _ in range(300):
            labels = torch.randint(0, 2, (128,), generator=gen)
            x = true_mean[labels] + true_std[labels] * torch.randn(128, 4, generator=gen)
            fasa.update(x, labels)
        std = fasa.spread if spread == "std" else fasa.spread.sqrt()
        assert torch.allclose(fasa.mean, true_mean, atol=0.1 * true_std.max())
        assert torch.allclose(std, true_std, rtol=0.08)


def reference_update(mean, spread, seen, spread_seen, x, labels, m, mode):
    """Per-class loop oracle of Eq. 2 with this module's single-sample rules."""
    for c in labels.unique().tolist():
        xc = x[labels == c].double()
        bm = xc.mean(0)
        if seen[c] == 0:
            mean[c] = bm
        else:
            mean[c] = (1 - m) * mean[c] + m * bm
        if xc.shape[0] > 1:
            bv = xc.var(0, unbiased=True)
            bs = bv if mode == "var" else bv.sqrt()
            spread[c] = bs if spread_seen[c] == 0 else (1 - m) * spread[c] + m * bs
            spread_seen[c] += 1
        seen[c] += xc.shape[0]


batches = st.lists(
    st.integers(0, 12).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
            st.lists(st.floats(-10, 10, width=32), min_size=n * 3, max_size=n * 3),
        )
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(batches=batches, mode=st.sampled_from(["std", "var"]), momentum=st.sampled_from([0.1, 0.5, 1.0]))
def test_vectorized_update_matches_per_class_loop(batches, mode, momentum):
    num_classes, dim = 5, 3
    fasa = make(num_classes=num_classes, feat_dim=dim, spread=mode, momentum=momentum)
    mean = torch.zeros(num_classes, dim, dtype=torch.float64)
    spread = torch.zeros_like(mean)
    seen, spread_seen = [0] * num_classes, [0] * num_classes
    for labels, values in batches:
        labels_t = torch.tensor(labels, dtype=torch.long)
        x = torch.tensor(values, dtype=torch.float32).reshape(len(labels), dim)
        untouched = [c for c in range(num_classes) if c not in labels]
        before = fasa.mean[untouched].clone(), fasa.spread[untouched].clone()
        fasa.update(x, labels_t)
        reference_update(mean, spread, seen, spread_seen, x, labels_t, momentum, mode)
        # classes absent from the batch are bit-identical
        assert torch.equal(fasa.mean[untouched], before[0]) and torch.equal(fasa.spread[untouched], before[1])
    assert fasa.mean.shape == (num_classes, dim) and fasa.spread.shape == (num_classes, dim)
    assert fasa.instances_seen.tolist() == seen and fasa.spread_updates.tolist() == spread_seen
    assert torch.allclose(fasa.mean.double(), mean, atol=1e-4)
    assert torch.allclose(fasa.spread.double(), spread, atol=1e-3)
    assert torch.isfinite(fasa.spread).all() and (fasa.spread >= 0).all()
