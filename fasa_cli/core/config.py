"""FASAConfig: every knob of the FASA method, validated on construction.

Defaults follow the paper; where the official code (yuhangzang/FASA) differs, the
code's behaviour is one switch away and the field's comment says which is which.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from fasa_cli.errors import FasaError


class FASAConfigError(FasaError, ValueError):
    """A bad FASA setting: a ValueError for library callers, a one-line error for the CLI."""


_CHOICES = {
    "spread": ("std", "var"),
    "init": ("inverse_freq", "uniform"),
    "signal": ("loss", "metric"),
    "adapt_by": ("group", "class"),
    "clustering": ("dbscan", "affinity", "meanshift"),
    "affinity_input": ("distance", "similarity"),
    "cluster_distance": ("auto", "fisher", "sq_euclidean"),
    "fisher_reduce": ("pooled", "mean"),
    "single_sample_spread": ("keep", "blend_zero"),
    "group_signal": ("mean", "sum"),
}


@dataclass
class FASAConfig:
    """Settings of one FASA module.

    Paper vs official code (defaults are the paper's):
      spread        "std": Eq. 2 keeps a running standard deviation (paper);
                    "var": keep a running variance and sample with its square root (code).
      clustering    "dbscan": density-based clustering on the Fisher distance, Eq. 5 (paper);
                    "affinity": sklearn AffinityPropagation on squared Euclidean distances
                    between class means (code); "meanshift": Mean-shift (Cheng 1995), the
                    clustering Appendix D names, on the class means in feature space (flat
                    kernel, bandwidth estimated every epoch from the means themselves, see
                    fasa_cli.core.grouping.mean_shift_labels).
      affinity_input "distance": feed the distance matrix as the affinity, as the official
                    code does, although AffinityPropagation expects similarities (higher =
                    closer), so the clusters it gives are not "near classes together";
                    "similarity": feed the negated distance, the correct input.
      cluster_distance "auto": Fisher for dbscan, squared Euclidean for affinity (each as its
                    source does); "fisher" / "sq_euclidean" force one. Mean-shift moves
                    points in the feature space itself, so it takes "auto" / "sq_euclidean"
                    only (Euclidean geometry of the means).
      fisher_reduce "pooled": Eq. 5 as sum of squared mean differences over sum of
                    variances (robust to near-dead dimensions); "mean": the per-dimension
                    ratio averaged over dimensions. The paper writes Eq. 5 for one dimension.
      single_sample_spread  a class with one RoI in a batch has no unbiased spread:
                    "keep" its old spread (paper silent; this suite's choice), or
                    "blend_zero": blend a zero spread in, as the official code's biased
                    per-batch variance of one sample does.
      group_signal  "mean": a group's signal is the mean over its classes valid in both
                    epochs (the paper's "average"); "sum": the sum over all its classes,
                    missing ones counting 0, as the official code sums its per-class losses.
      start_epoch   virtual features are sampled once the host's 0-based epoch reaches it;
                    1 = from the second epoch, as the official code does (paper is silent).

    Sampling probabilities (Eq. 4): p0 = (1/N_c) / sum_k (1/N_k) for "inverse_freq" (classes
    with N_c = 0 get 0 and are left out of the sum), or 1/C for "uniform" (Table 9); then
    p = clamp(scale * p0 ** power, 0, 1). `scale` is the static s of Table 3.

    DBSCAN on the Fisher distance: `fisher_distance` averages the per-dimension ratio, so a
    distance of 0.5 means the two class means are, on average, one within-class standard
    deviation apart in each dimension ((sigma)^2 / (sigma^2 + sigma^2) = 0.5). The default
    eps = 0.5 therefore joins classes whose feature distributions overlap heavily, and
    min_samples = 2 lets any such pair form a group (DBSCAN counts the point itself).
    """

    num_classes: int
    feat_dim: int
    momentum: float = 0.1
    spread: str = "std"
    init: str = "inverse_freq"
    scale: float = 1.0
    power: float = 1.0
    adaptive: bool = True
    alpha: float = 1.1
    beta: float = 0.9
    signal: str = "loss"
    adapt_by: str = "group"
    clustering: str = "dbscan"
    dbscan_eps: float = 0.5
    dbscan_min_samples: int = 2
    affinity_input: str = "distance"
    cluster_distance: str = "auto"
    fisher_reduce: str = "pooled"
    single_sample_spread: str = "keep"
    group_signal: str = "mean"
    virtual_per_class: int = 1
    loss_weight: float = 0.1
    start_epoch: int = 1
    seed: int = 0  # seeds the module's own generator; give each DDP rank its own if wanted

    def __post_init__(self) -> None:
        _require_int(self, "num_classes", minimum=1)
        _require_int(self, "feat_dim", minimum=1)
        _require_int(self, "dbscan_min_samples", minimum=1)
        _require_int(self, "virtual_per_class", minimum=1)
        _require_int(self, "start_epoch", minimum=0)
        _require_int(self, "seed", minimum=0)
        _require_number(self, "momentum", low=0.0, high=1.0, low_open=True)
        _require_number(self, "scale", low=0.0)
        _require_number(self, "power", low=0.0, low_open=True)
        _require_number(self, "alpha", low=1.0)
        _require_number(self, "beta", low=0.0, high=1.0, low_open=True)
        _require_number(self, "dbscan_eps", low=0.0, low_open=True)
        _require_number(self, "loss_weight", low=0.0)
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise FASAConfigError(
                    f"FASA setting {name}={value!r} is not one of {', '.join(choices)}",
                    f"set {name} to one of: {', '.join(choices)}",
                )
        if self.clustering == "meanshift" and self.cluster_distance == "fisher":
            raise FASAConfigError(
                "FASA setting clustering=meanshift cannot use cluster_distance=fisher: mean-shift "
                "moves points in the feature space and needs their coordinates, not a distance matrix",
                "set cluster_distance to auto (or sq_euclidean), or use clustering=dbscan for the Fisher distance",
            )
        if not isinstance(self.adaptive, bool):
            raise FASAConfigError(
                f"FASA setting adaptive={self.adaptive!r} is not a boolean", "set adaptive to true or false"
            )

    @property
    def distance(self) -> str:
        """The class distance the clustering uses ("fisher" or "sq_euclidean")."""
        if self.cluster_distance != "auto":
            return self.cluster_distance
        return "fisher" if self.clustering == "dbscan" else "sq_euclidean"

    @classmethod
    def from_mapping(cls, num_classes: int, feat_dim: int, settings: Mapping[str, Any] | None) -> "FASAConfig":
        """Build from a spec's `fasa:` block; unknown keys are an error, not silently ignored."""
        settings = dict(settings or {})
        known = {f.name for f in fields(cls)} - {"num_classes", "feat_dim"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise FASAConfigError(
                f"unknown FASA setting(s): {', '.join(unknown)}", f"use only: {', '.join(sorted(known))}"
            )
        return cls(num_classes=num_classes, feat_dim=feat_dim, **settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_int(cfg: FASAConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FASAConfigError(
            f"FASA setting {name}={value!r} must be an integer >= {minimum}", f"set {name} to an integer >= {minimum}"
        )


def _require_number(
    cfg: FASAConfig, name: str, low: float, high: float | None = None, low_open: bool = False
) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        lo = f"{'>' if low_open else '>='} {low}"
        hi = f" and <= {high}" if high is not None else ""
        raise FASAConfigError(f"FASA setting {name}={value!r} must be a number {lo}{hi}", f"set {name} {lo}{hi}")
