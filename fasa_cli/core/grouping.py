"""Super-groups of classes for group-wise sampling adaptation (Sec. 3.2, "Group-wise adaptation").

Runs once per epoch on a C x C matrix (C <= 1203), so sklearn on CPU numpy is fine here.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from fasa_cli.core.config import FASAConfig
from fasa_cli.core.stats import fisher_distance, squared_euclidean_distance

NO_GROUP = -1


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
    distance = class_distance(mean[seen_idx].float(), spread[seen_idx].float(), cfg)
    labels = cluster_labels(distance.cpu().double().numpy(), cfg)
    groups[seen_idx] = torch.from_numpy(labels).to(mean.device)
    return groups
