"""FASA under data parallelism (fasa_cli.core.dist): two gloo ranks that each see half of the
positives hold, after every iteration, the statistics of one process that saw all of them;
a sharded validation signal summed over ranks gives both ranks the same p and groups."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as tmp_mp

from fasa_cli.core import FASA, FASAConfig
from fasa_cli.core import dist

NUM_CLASSES, DIM, ITERS, WORLD = 9, 6, 12, 2
COUNTS = [500, 400, 300, 200, 100, 50, 20, 10, 5]
CFG = dict(num_classes=NUM_CLASSES, feat_dim=DIM, start_epoch=0, scale=20.0, dbscan_eps=0.5)


def _centre(label: torch.Tensor) -> torch.Tensor:
    # Three well separated blobs of three classes each: DBSCAN finds groups, not noise.
    blob = (label // 3).double()[:, None] * 12.0
    return blob + (label % 3).double()[:, None] * 0.05


def rank_batch(rank: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s positives at `iteration`: rank 0 mostly classes 0-5, rank 1 classes 3-8,
    class 8 once on each rank (one sample alone, two pooled), rank 1 empty at iteration 4."""
    if rank == 1 and iteration == 4:
        return torch.zeros(0, DIM), torch.zeros(0, dtype=torch.long)
    g = torch.Generator().manual_seed(1000 * iteration + rank)
    low = 0 if rank == 0 else 3
    n = 7 + 5 * rank + iteration % 3
    labels = torch.randint(low, low + 6 if rank == 0 else 8, (n,), generator=g)
    labels = torch.cat([labels, torch.tensor([8])])
    features = _centre(labels) + torch.randn(labels.numel(), DIM, generator=g, dtype=torch.float64)
    return features.float(), labels


def validation_losses(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-RoI validation losses and labels of one epoch's pass (the whole set)."""
    g = torch.Generator().manual_seed(77 + epoch)
    labels = torch.arange(NUM_CLASSES).repeat(5)
    # The first blob's loss drops from epoch 0 to 1, the last one's rises.
    trend = torch.tensor([-1.0] * 3 + [0.0] * 3 + [1.0] * 3)[labels] * epoch
    return 2.0 + trend + 0.1 * torch.rand(labels.numel(), generator=g), labels


def summed_signal(losses: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean loss from this rank's shard, summed over ranks (the host's recipe)."""
    loss_sum = torch.zeros(NUM_CLASSES, dtype=torch.float64).index_add_(0, labels, losses.double())
    count = torch.zeros(NUM_CLASSES, dtype=torch.float64).index_add_(0, labels, torch.ones_like(losses, dtype=torch.float64))
    loss_sum, count = dist.all_reduce_sums(loss_sum, count)
    return (loss_sum / count.clamp_min(1)).float(), count > 0


def train_and_adapt(fasa: FASA, batches, shard_of) -> list[dict]:
    """Two epochs of updates, each followed by the validation pass and `adapt`."""
    infos = []
    for epoch in range(2):
        fasa.set_epoch(epoch)
        for iteration in range(epoch * ITERS // 2, (epoch + 1) * ITERS // 2):
            fasa.update(*batches(iteration))
        losses, labels = validation_losses(epoch)
        keep = torch.tensor(shard_of(list(range(labels.numel()))), dtype=torch.long)
        infos.append(fasa.adapt(*summed_signal(losses[keep], labels[keep])))
    return infos


def _state(fasa: FASA) -> dict:
    return {k: v.clone() for k, v in fasa.state_dict().items() if isinstance(v, torch.Tensor)}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        out = {}
        for mode in ("synced", "per_rank"):
            fasa = FASA(FASAConfig(**CFG), COUNTS)
            if mode == "synced":
                fasa.moment_reducer = dist.all_reduce_sum
            fasa.stream = rank
            train_and_adapt(fasa, lambda it: rank_batch(rank, it), dist.shard)
            agree = dist.ranks_agree(fasa.mean, fasa.spread, fasa.instances_seen, fasa.p, fasa.groups)
            out[mode] = {"state": _state(fasa), "agree": agree, "virtual": fasa.sample()[0]}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of two gloo ranks ends with, in both modes (one spawn for the module)."""
    folder = tmp_path_factory.mktemp("ddp")
    tmp_mp.spawn(_worker, args=(str(folder / "pg"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


def _union_reference() -> FASA:
    fasa = FASA(FASAConfig(**CFG), COUNTS)

    def union(iteration):
        parts = [rank_batch(r, iteration) for r in range(WORLD)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    train_and_adapt(fasa, union, lambda indices: indices)
    return fasa


@pytest.fixture(scope="module")
def synced_ranks(ranks):
    return [r["synced"] for r in ranks]


def test_synced_ranks_hold_one_state_equal_to_the_union_process(synced_ranks):
    first, second = (r["state"] for r in synced_ranks)
    for name in first:
        assert torch.equal(first[name], second[name]), name  # bit-identical across ranks
    assert all(r["agree"] for r in synced_ranks)
    reference = _state(_union_reference())
    for name in ("mean", "spread"):
        torch.testing.assert_close(first[name], reference[name], rtol=1e-5, atol=1e-5)
    for name in ("instances_seen", "spread_updates", "groups"):
        assert torch.equal(first[name], reference[name]), name
    # Class 8 has one positive per rank: only pooled does it get a spread.
    assert first["spread_updates"][8] == ITERS - 1 and (first["spread"][8] > 0).all()


def test_after_adaptation_both_ranks_hold_the_same_p_as_the_union_process(synced_ranks):
    first, second = (r["state"] for r in synced_ranks)
    reference = _state(_union_reference())
    assert torch.equal(first["p"], second["p"]) and torch.equal(first["groups"], second["groups"])
    torch.testing.assert_close(first["p"], reference["p"], rtol=1e-6, atol=0)
    assert not torch.equal(first["p"], first["init_p"])  # the second adapt did move p
    assert int(first["groups"].max()) + 1 == 3         # the three blobs
    # Each rank draws its own virtual features from the shared statistics.
    assert not torch.equal(synced_ranks[0]["virtual"], synced_ranks[1]["virtual"])


def test_per_rank_switch_keeps_each_ranks_own_statistics(ranks):
    first, second = (r["per_rank"]["state"] for r in ranks)
    assert not torch.equal(first["mean"], second["mean"])
    assert not all(r["per_rank"]["agree"] for r in ranks)
    assert first["instances_seen"][0] > 0 and second["instances_seen"][0] == 0  # class 0 only on rank 0


@pytest.mark.parametrize("settings", [dict(), dict(spread="var"), dict(single_sample_spread="blend_zero")])
def test_pooled_path_in_one_process_matches_the_plain_update(settings):
    plain, pooled = (FASA(FASAConfig(**CFG, **settings), COUNTS) for _ in range(2))
    calls = []
    pooled.moment_reducer = lambda moments: calls.append(moments.shape) or moments
    for iteration in range(ITERS):
        batch = rank_batch(iteration % 2, iteration)
        plain.update(*batch)
        pooled.update(*batch)
    assert len(calls) == ITERS  # the empty batch joins the reduction too
    for name in ("mean", "spread"):
        torch.testing.assert_close(getattr(pooled, name), getattr(plain, name), rtol=1e-5, atol=1e-6)
    assert torch.equal(pooled.instances_seen, plain.instances_seen)
    assert torch.equal(pooled.spread_updates, plain.spread_updates)


def test_moments_give_the_exact_unbiased_statistics():
    features, labels = rank_batch(0, 3)
    counts, mean, variance = dist.moments_to_stats(dist.class_moments(features, labels, NUM_CLASSES))
    for c in range(NUM_CLASSES):
        rows = features[labels == c].double()
        assert counts[c] == rows.shape[0]
        if rows.shape[0]:
            torch.testing.assert_close(mean[c], rows.mean(0))
        if rows.shape[0] > 1:
            torch.testing.assert_close(variance[c], rows.var(0, unbiased=True))


def test_shards_partition_and_streams_differ():
    indices = list(range(11))
    shards = [dist.shard(indices, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == indices and all(shards)
    assert dist.stream_seed(5, 0) == 5
    assert len({dist.stream_seed(5, s) for s in range(8)}) == 8
    assert dist.rank_and_world() == (0, 1) and dist.ranks_agree(torch.ones(3))


def test_extra_state_is_one_tensor_mmengine_can_broadcast_and_old_checkpoints_load():
    fasa = FASA(FASAConfig(**CFG), COUNTS)
    fasa.update(*rank_batch(0, 0))
    assert dist.stream_seed(0, 0) == 0 and isinstance(fasa.state_dict()["_extra_state"], torch.Tensor)
    fasa.sample()
    state = fasa.state_dict()
    # Format 1 (a dict) as older checkpoints hold it: the same generator comes back.
    old = dict(state, _extra_state={"version": 1, "generator_device": "cpu",
                                    "generator_state": fasa._generator.get_state()})
    a, b = FASA(FASAConfig(**CFG), COUNTS), FASA(FASAConfig(**CFG), COUNTS)
    a.load_state_dict(state)
    b.load_state_dict(old)
    expected = fasa.sample()[0]
    assert torch.equal(a.sample()[0], expected) and torch.equal(b.sample()[0], expected)
