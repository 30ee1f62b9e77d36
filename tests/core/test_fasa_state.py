"""Checkpointing: state_dict() holds every piece of state, and a fresh module that loads it
continues bit-identically (same future samples, probabilities and groups)."""

from __future__ import annotations

import io

import pytest
import torch

from fasa_cli.core import FASA, FASAConfig

COUNTS = [1, 2, 3, 50, 200, 7]


def new_module(**kw) -> FASA:
    return FASA(FASAConfig(num_classes=6, feat_dim=5, scale=3.0, **kw), COUNTS)


def batch(step: int):
    gen = torch.Generator().manual_seed(1000 + step)
    labels = torch.randint(0, 6, (16,), generator=gen)
    return torch.randn(16, 5, generator=gen) + labels[:, None].float(), labels


def run_epoch(fasa: FASA, epoch: int, steps: int = 5):
    """One epoch of host calls; returns everything the module produced."""
    fasa.set_epoch(epoch)
    outputs = []
    for step in range(steps):
        fasa.update(*batch(epoch * 100 + step))
        outputs.append(fasa.sample())
    gen = torch.Generator().manual_seed(epoch)
    signal = torch.rand(6, generator=gen)
    outputs.append(fasa.adapt(signal, signal > 0.2))
    return outputs


def through_bytes(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # plain tensors and dicts only


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, dict):
            assert x == y
        else:
            assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


@pytest.mark.parametrize("kw", [{}, {"spread": "var", "clustering": "affinity"}, {"adapt_by": "class"}])
def test_resume_is_bit_identical(kw):
    original = new_module(**kw)
    for epoch in range(3):
        run_epoch(original, epoch)
    resumed = new_module(**kw)
    resumed.set_epoch(1)
    resumed.sample()  # a fresh module's own generator must be replaced by the checkpoint's
    resumed.load_state_dict(through_bytes(original.state_dict()))
    for epoch in range(3, 6):
        assert_same(run_epoch(original, epoch), run_epoch(resumed, epoch))
        assert torch.equal(original.probs, resumed.probs)
        assert torch.equal(original.groups, resumed.groups)
    assert int(resumed.epoch) == 5


def test_state_dict_holds_every_piece_of_state():
    fasa = new_module()
    run_epoch(fasa, 0)
    run_epoch(fasa, 1)
    state = fasa.state_dict()
    expected = {"mean", "spread", "instances_seen", "spread_updates", "p", "init_p", "prev_signal",
                "prev_valid", "has_prev", "groups", "epoch", "class_counts", "_extra_state"}
    assert set(state) == expected
    assert state["_extra_state"].numel() > 2  # [format, device length, device, generator state]
    assert bool(state["has_prev"]) and int(state["epoch"]) == 1


def test_resume_before_any_sampling_matches_an_uninterrupted_run():
    original = new_module()
    resumed = new_module()
    resumed.load_state_dict(through_bytes(original.state_dict()))
    for epoch in range(2):
        assert_same(run_epoch(original, epoch), run_epoch(resumed, epoch))


def test_seed_changes_the_stream_and_same_seed_repeats_it():
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        fasa = new_module(seed=seed, virtual_per_class=2)
        run_epoch(fasa, 0)
        runs[name] = run_epoch(fasa, 1)
    assert_same(runs["a"], runs["b"])
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(runs["a"][:-1], runs["c"][:-1]))


def test_bad_extra_state_is_rejected():
    fasa = new_module()
    state = fasa.state_dict()
    state["_extra_state"] = {"version": 99}
    with pytest.raises(ValueError, match="unknown format"):
        fasa.load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_and_follows_the_device():
    fasa = new_module()
    run_epoch(fasa, 0)
    fasa = fasa.to("cuda")
    fasa.set_epoch(1)
    feats, labels = batch(7)
    fasa.update(feats.cuda(), labels.cuda())
    virtual, virtual_labels = fasa.sample()
    assert virtual.is_cuda and virtual_labels.is_cuda
    classifier = torch.nn.Linear(5, 7).cuda()
    assert fasa.virtual_loss(classifier, torch.nn.functional.cross_entropy).is_cuda
    resumed = new_module().to("cuda")
    resumed.load_state_dict(fasa.state_dict())
    assert torch.equal(resumed.sample()[0], fasa.sample()[0])
