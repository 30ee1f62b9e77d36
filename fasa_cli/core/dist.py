"""FASA across data-parallel ranks: exact pooled per-class moments and summed signals.

Plain torch.distributed, no mmdet. Under DDP each rank sees its own share of the positive
RoIs; FASA's statistics stay identical on every rank when each iteration's per-class
moments (count, sum, sum of squares) are summed over ranks before Eq. 2 folds them in:
the pooled batch mean and unbiased spread are then exactly those of one process that saw
the union of every rank's positives. Likewise the validation pass is sharded and its
per-class sums added up, so `FASA.adapt` sees the signal of the whole validation set.

Every function here is a no-op (or the identity) in a single process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def is_data_parallel() -> bool:
    return rank_and_world()[1] > 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum `tensor` over every rank, in place; returns it (unchanged in a single process)."""
    if is_data_parallel():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_reduce_sums(*tensors: Tensor) -> list[Tensor]:
    """Sum several tensors over ranks in one all-reduce; returns new tensors, same shapes
    and dtypes. All must lie on one device (gloo: CPU, nccl: the rank's GPU)."""
    if not is_data_parallel():
        return [t.clone() for t in tensors]
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    torch_dist.all_reduce(flat, op=torch_dist.ReduceOp.SUM)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].reshape(t.shape).to(t.dtype))
        start += t.numel()
    return out


def class_moments(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class [count | sum | sum of squares] of `features` [N, d], as one [C, 1 + 2d]
    float64 tensor: summable over ranks (float64 keeps sum-of-squares cancellation far
    below float32 precision at any realistic count)."""
    dim = features.shape[1]
    x = features.detach().to(torch.float64)
    moments = x.new_zeros(num_classes, 1 + 2 * dim)
    if x.shape[0]:
        labels = labels.long()
        moments[:, 0].index_add_(0, labels, torch.ones_like(x[:, 0]))
        moments[:, 1:1 + dim].index_add_(0, labels, x)
        moments[:, 1 + dim:].index_add_(0, labels, x.square())
    return moments


def moments_to_stats(moments: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(counts [C] long, mean [C, d], unbiased variance [C, d]), float64, from `class_moments`
    (summed or not). A class with count 0 gets zeros; with count 1, variance 0."""
    dim = (moments.shape[1] - 1) // 2
    counts = moments[:, 0]
    n = counts.clamp_min(1)[:, None]
    mean = moments[:, 1:1 + dim] / n
    centred_square_sum = (moments[:, 1 + dim:] - moments[:, 1:1 + dim] * mean).clamp_min_(0.0)
    variance = centred_square_sum / (counts - 1).clamp_min(1)[:, None]
    return counts.round().long(), mean, variance


def shard(indices: list[int], rank: int | None = None, world_size: int | None = None) -> list[int]:
    """This rank's share of `indices` (every world_size-th one from `rank` on): the shares
    of all ranks partition the list."""
    if rank is None or world_size is None:
        rank, world_size = rank_and_world()
    return list(indices[rank::world_size])


def ranks_agree(*tensors: Tensor) -> bool:
    """True when every rank holds exactly the same values (an elementwise max and min over
    ranks coincide). Collective: every rank must call it. True in a single process."""
    if not is_data_parallel():
        return True
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    high, low = flat.clone(), flat.clone()
    torch_dist.all_reduce(high, op=torch_dist.ReduceOp.MAX)
    torch_dist.all_reduce(low, op=torch_dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not is_data_parallel():
        return [obj]
    out: list[Any] = [None] * rank_and_world()[1]
    torch_dist.all_gather_object(out, obj)
    return out


def stream_seed(seed: int, stream: int) -> int:
    """A generator seed of its own for each stream (a DDP rank's virtual features); stream 0
    keeps `seed`, so rank 0 draws what a single process would."""
    if stream == 0:
        return seed
    # splitmix64-style mixing: nearby (seed, stream) pairs give unrelated seeds.
    z = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**62 - 1)
