"""FASAConfig validation: every bad field is a ValueError that is also a one-line FasaError."""

from __future__ import annotations

import pytest

from fasa_cli.core import FASAConfig, FASAConfigError
from fasa_cli.errors import FasaError


def test_defaults_follow_the_paper():
    cfg = FASAConfig(num_classes=1203, feat_dim=1024)
    assert (cfg.momentum, cfg.alpha, cfg.beta, cfg.loss_weight) == (0.1, 1.1, 0.9, 0.1)
    assert (cfg.spread, cfg.init, cfg.signal, cfg.adapt_by, cfg.clustering) == (
        "std",
        "inverse_freq",
        "loss",
        "group",
        "dbscan",
    )
    assert cfg.distance == "fisher"
    assert FASAConfig(3, 4, clustering="affinity").distance == "sq_euclidean"
    assert FASAConfig(3, 4, clustering="affinity", cluster_distance="fisher").distance == "fisher"


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_classes", 0),
        ("feat_dim", 2.5),
        ("momentum", 0.0),
        ("momentum", 1.5),
        ("spread", "variance"),
        ("init", "balanced"),
        ("scale", -1.0),
        ("scale", float("nan")),
        ("power", 0.0),
        ("adaptive", "yes"),
        ("alpha", 0.9),
        ("beta", 1.1),
        ("beta", 0.0),
        ("signal", "accuracy"),
        ("adapt_by", "image"),
        ("clustering", "kmeans"),
        ("affinity_input", "both"),
        ("dbscan_eps", 0.0),
        ("dbscan_min_samples", 0),
        ("virtual_per_class", 0),
        ("loss_weight", -0.1),
        ("start_epoch", -1),
        ("start_epoch", True),
    ],
)
def test_bad_field_is_rejected_with_its_name(field, value):
    with pytest.raises(ValueError) as info:
        FASAConfig(**{"num_classes": 3, "feat_dim": 4, field: value})
    assert isinstance(info.value, FasaError)
    assert field in info.value.line() and "Fix:" in info.value.line()


def test_from_mapping_rejects_unknown_keys():
    cfg = FASAConfig.from_mapping(5, 8, {"scale": 5.0, "adaptive": False})
    assert cfg.scale == 5.0 and cfg.adaptive is False and cfg.num_classes == 5
    with pytest.raises(FASAConfigError, match="momentun"):
        FASAConfig.from_mapping(5, 8, {"momentun": 0.2})
    assert FASAConfig.from_mapping(5, 8, None) == FASAConfig(5, 8)
