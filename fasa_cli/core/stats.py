"""Vectorized per-class statistics: means, Eq. 4 initial probabilities, Eq. 5 distances."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# Elements of the [rows, C, d] block fisher_distance builds at a time (16 MiB in float32):
# the full [C, C, d] tensor at LVIS scale would be 6 GB.
_FISHER_BLOCK_ELEMENTS = 1 << 22


def per_class_mean(values: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mean of `values` [N] per label and the label counts, both [num_classes].

    A class with no entry gets mean 0 and count 0; use `count > 0` as its validity mask.
    Hosts use this to turn per-RoI validation losses into the per-class signal of `FASA.adapt`.
    """
    if values.shape != labels.shape or values.dim() != 1:
        raise ValueError(f"values and labels must both be [N]; got {tuple(values.shape)} and {tuple(labels.shape)}")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(labels.min())}, {int(labels.max())}]")
    dtype = values.dtype if values.is_floating_point() else torch.float32
    sums = torch.zeros(num_classes, dtype=dtype, device=values.device).index_add_(0, labels, values.to(dtype))
    counts = torch.bincount(labels, minlength=num_classes)
    means = sums / counts.clamp_min(1).to(dtype)
    return means, counts


def initial_probs(
    class_counts: Sequence[int] | Tensor, init: str, scale: float = 1.0, power: float = 1.0
) -> Tensor:
    """Eq. 4 at the start of training: p = clamp(scale * p0 ** power, 0, 1), float32 [C].

    "inverse_freq": p0_c = (1/N_c) / sum_k (1/N_k). A class with N_c = 0 has no training
    data to augment: it gets p0 = 0 and is left out of the sum (rather than counted as the
    rarest class, which would take probability mass from classes that do occur).
    "uniform": p0_c = 1/C for every class (Table 9), so both schemes give about the same
    expected number of virtual features per iteration (sum of p0 = 1).
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0 or (counts < 0).any() or not torch.isfinite(counts).all():
        raise ValueError("class_counts must be a non-empty sequence of finite counts >= 0")
    if init == "uniform":
        p0 = torch.full_like(counts, 1.0 / counts.numel())
    elif init == "inverse_freq":
        inverse = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
        if inverse.sum() == 0:
            raise ValueError("class_counts are all zero, so inverse-frequency probabilities are undefined")
        p0 = inverse / inverse.sum()
    else:
        raise ValueError(f"unknown init {init!r}; use 'inverse_freq' or 'uniform'")
    return (scale * p0.pow(power)).clamp(0.0, 1.0).to(torch.float32)


def fisher_distance(mean: Tensor, spread_var: Tensor, reduce: str = "pooled", eps: float = 1e-6) -> Tensor:
    """Eq. 5 between every pair of classes, from per-class means and *variances* [C, d].

    reduce="pooled" (default): D[i, j] = sum_k (mu_ik - mu_jk)^2 / sum_k (var_ik + var_jk),
    the multivariate reading of Eq. 5. Dimensions weigh by their variance, so a few
    near-dead ReLU units (tiny variance in both classes) cannot make two classes that agree
    everywhere else look far apart. If every dimension has the same ratio r, D = r.
    reduce="mean": D[i, j] = mean_k (mu_ik - mu_jk)^2 / (var_ik + var_jk + eps), the
    per-dimension ratio averaged (this suite's first reading; fragile on sparse features).
    `eps` is relative: eps times the mean variance of the two classes (never 0/0).
    Returns a symmetric [C, C] matrix with a zero diagonal. Built in blocks of rows to bound
    memory; each block is one broadcast expression (no loop over classes).
    """
    if mean.shape != spread_var.shape or mean.dim() != 2:
        raise ValueError(f"mean and spread_var must both be [C, d]; got {tuple(mean.shape)}, {tuple(spread_var.shape)}")
    if reduce not in ("pooled", "mean"):
        raise ValueError(f"unknown reduce {reduce!r}; use 'pooled' or 'mean'")
    num_classes, dim = mean.shape
    out = mean.new_zeros(num_classes, num_classes)
    # A floor relative to the features' own scale (absolute 1e-6 means nothing for features
    # of variance 1e-4 or 1e4); a tiny absolute one only guards all-zero statistics.
    floor = eps * spread_var.mean().clamp_min(1e-12)
    rows = max(1, _FISHER_BLOCK_ELEMENTS // max(1, num_classes * dim))
    for start in range(0, num_classes, rows):
        # D is symmetric: each block of rows only needs the columns from its first row on.
        stop = min(start + rows, num_classes)
        diff = (mean[start:stop, None, :] - mean[None, start:, :]).square_()
        denom = spread_var[start:stop, None, :] + spread_var[None, start:, :]
        if reduce == "pooled":
            out[start:stop, start:] = diff.sum(dim=-1) / denom.sum(dim=-1).add_(floor * dim)
        else:
            out[start:stop, start:] = diff.div_(denom.add_(floor)).mean(dim=-1)
    out = torch.triu(out, diagonal=1)
    return out + out.T


def squared_euclidean_distance(mean: Tensor) -> Tensor:
    """||mu_i - mu_j||^2 for every pair of rows of `mean` [C, d] (the official code's distance)."""
    sq_norm = mean.square().sum(dim=1)
    dist = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * (mean @ mean.T)).clamp_min_(0.0)
    dist.fill_diagonal_(0.0)
    return dist
