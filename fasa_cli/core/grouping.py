"""Super-groups of classes for group-wise sampling adaptation (Sec. 3.2, "Group-wise adaptation").

Three clusterings, as the paper and its code name them: DBSCAN on the Fisher distance
(Sec. 3.2), sklearn AffinityPropagation (official code), both on a C x C distance matrix,
and Mean-shift (Appendix D) on the class means themselves. They run once per epoch
(C <= 1203), so sklearn on CPU numpy is fine for the first two; Mean-shift is plain torch
on the statistics' device.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from fasa_cli.core.config import FASAConfig
from fasa_cli.core.stats import fisher_distance, squared_euclidean_distance

NO_GROUP = -1
# Mean-shift's bandwidth: sklearn's estimate_bandwidth default (the mean distance of a class
# to its 30 % nearest classes). Relative, so it follows the features' scale as training moves
# it; the paper gives no bandwidth.
MEANSHIFT_QUANTILE = 0.3
MEANSHIFT_MAX_ITER = 300


def class_distance(mean: Tensor, spread: Tensor, cfg: FASAConfig) -> Tensor:
    """The [C, C] distance the configured clustering uses; `spread` as stored (std or var)."""
    if cfg.distance == "sq_euclidean":
        return squared_euclidean_distance(mean)
    variance = spread if cfg.spread == "var" else spread.square()
    return fisher_distance(mean, variance, reduce=cfg.fisher_reduce)


def cluster_labels(distance: np.ndarray, cfg: FASAConfig) -> np.ndarray:
    """Cluster ids [n] for n classes from their [n, n] distance matrix.

    Every class ends up in a group: DBSCAN noise points (label -1), and every class when
    AffinityPropagation does not converge (sklearn then labels all -1), become groups of
    their own, so they are still adapted -- by their own signal -- instead of being frozen.
    Ids are 0..G-1, clusters first in the order the algorithm numbered them.
    """
    n = distance.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    if cfg.clustering == "dbscan":
        from sklearn.cluster import DBSCAN

        labels = DBSCAN(eps=cfg.dbscan_eps, min_samples=cfg.dbscan_min_samples, metric="precomputed").fit_predict(
            distance
        )
    else:
        from sklearn.cluster import AffinityPropagation
        from sklearn.exceptions import ConvergenceWarning

        # The official code feeds the distance itself (a bug: larger = "more similar").
        affinity = distance if cfg.affinity_input == "distance" else -distance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = AffinityPropagation(affinity="precomputed", random_state=cfg.seed).fit_predict(affinity)
    labels = np.asarray(labels, dtype=np.int64).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def compute_groups(mean: Tensor, spread: Tensor, seen: Tensor, cfg: FASAConfig) -> Tensor:
    """Group id per class [C] (long, on `mean`'s device); NO_GROUP (-1) for unseen classes.

    Unseen classes (no training feature observed yet) have no statistics to place them by,
    and they produce no virtual features, so they get no group and their p is left alone.
    adapt_by="class" gives every seen class a group of its own.
    """
    groups = torch.full((cfg.num_classes,), NO_GROUP, dtype=torch.long, device=mean.device)
    seen_idx = seen.nonzero().squeeze(1)
    if seen_idx.numel() == 0:
        return groups
    if cfg.adapt_by == "class":
        groups[seen_idx] = torch.arange(seen_idx.numel(), device=mean.device)
        return groups
    if cfg.clustering == "meanshift":
        groups[seen_idx] = mean_shift_labels(mean[seen_idx])
        return groups
    distance = class_distance(mean[seen_idx].float(), spread[seen_idx].float(), cfg)
    labels = cluster_labels(distance.cpu().double().numpy(), cfg)
    groups[seen_idx] = torch.from_numpy(labels).to(mean.device)
    return groups


def mean_shift_bandwidth(points: Tensor, quantile: float = MEANSHIFT_QUANTILE) -> Tensor:
    """sklearn's estimate_bandwidth: the mean over points of the distance to the farthest of
    their k = int(n * quantile) nearest points (the point itself counted, as sklearn does).
    k is at least 2 (the point and its nearest neighbour): sklearn's k = 1 for fewer than
    7 points gives a zero bandwidth, which MeanShift refuses."""
    n = points.shape[0]
    k = min(max(int(n * quantile), 2), n)
    distance = torch.cdist(points, points)
    return distance.topk(k, dim=1, largest=False).values[:, -1].mean()


def mean_shift_labels(points: Tensor, quantile: float = MEANSHIFT_QUANTILE,
                      max_iter: int = MEANSHIFT_MAX_ITER) -> Tensor:
    """Cluster ids [n] (long, on `points`' device) by flat-kernel Mean-shift (Cheng 1995).

    As sklearn.cluster.MeanShift with its defaults: every point seeds a window that moves to
    the mean of the points within `bandwidth` until it moves less than 1e-3 * bandwidth;
    the modes, strongest (most points within) first, suppress weaker modes within one
    bandwidth; every point joins its nearest mode (cluster_all). All windows move at once,
    as one batched step per iteration. Ids are 0..G-1, strongest mode first (ties: lower
    point index), so the result does not depend on the device or a random state.
    """
    n = points.shape[0]
    if n <= 1:
        return torch.zeros(n, dtype=torch.long, device=points.device)
    x = points.detach().double()
    bandwidth = mean_shift_bandwidth(x, quantile)
    if not torch.isfinite(bandwidth) or bandwidth <= 0:  # (nearly) identical means: one group
        return torch.zeros(n, dtype=torch.long, device=points.device)
    stop = 1e-3 * bandwidth
    modes = x.clone()
    moving = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        active = moving.nonzero().squeeze(1)
        if active.numel() == 0:
            break
        within = (torch.cdist(modes[active], x) <= bandwidth).double()
        count = within.sum(dim=1, keepdim=True)
        # A window with no point left in it stays where it is (sklearn stops that seed).
        shifted = torch.where(count > 0, within @ x / count.clamp_min(1), modes[active])
        step = (shifted - modes[active]).norm(dim=1)
        modes[active] = shifted
        moving[active] = step > stop
    strength = (torch.cdist(modes, x) <= bandwidth).sum(dim=1)
    order = torch.sort(-strength, stable=True).indices
    near = (torch.cdist(modes[order], modes[order]) <= bandwidth).cpu().numpy()
    keep = np.ones(n, dtype=bool)
    for i in range(n):  # greedy suppression, strongest mode first (n <= C, once per epoch)
        if keep[i]:
            keep[i + 1:] &= ~near[i, i + 1:]
    centers = modes[order[torch.from_numpy(keep).to(x.device)]]
    nearest = torch.cdist(x, centers).argmin(dim=1)
    # A mode every point of which is nearer another mode leaves a gap: renumber densely.
    return torch.unique(nearest, sorted=True, return_inverse=True)[1]
