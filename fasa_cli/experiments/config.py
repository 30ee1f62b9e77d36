"""RunConfig: everything one training run needs, as the backend receives it.

`extra="forbid"` everywhere, so a misspelt key in a spec is an error, never ignored.
FASASettings mirrors fasa_cli.core.config.FASAConfig (defaults are the paper's); the run's
seed and the model's class count / feature size are not settings, the backend supplies them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fasa_cli import registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FASASettings(_Strict):
    """A run's `fasa:` block; None in RunConfig means the run has no FASA at all."""

    momentum: float = Field(0.1, gt=0.0, le=1.0)
    spread: Literal["std", "var"] = "std"
    init: Literal["inverse_freq", "uniform"] = "inverse_freq"
    scale: float = Field(1.0, ge=0.0)
    power: float = Field(1.0, gt=0.0)
    adaptive: bool = True
    alpha: float = Field(1.1, ge=1.0)
    beta: float = Field(0.9, gt=0.0, le=1.0)
    signal: Literal["loss", "metric"] = "loss"
    adapt_by: Literal["group", "class"] = "group"
    clustering: Literal["dbscan", "affinity"] = "dbscan"
    dbscan_eps: float = Field(0.5, gt=0.0)
    dbscan_min_samples: int = Field(2, ge=1)
    affinity_input: Literal["distance", "similarity"] = "distance"
    cluster_distance: Literal["auto", "fisher", "sq_euclidean"] = "auto"
    virtual_per_class: int = Field(1, ge=1)
    loss_weight: float = Field(0.1, ge=0.0)
    start_epoch: int = Field(1, ge=0)


class TrainOverrides(_Strict):
    """Schedule overrides; None keeps the profile's default."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0.0)
    val_loss_images: int | None = Field(None, ge=1)  # cap on the validation-loss pass
    val_split: Literal["val", "train_holdout"] | None = None
    max_iters: int | None = Field(None, ge=1)


class RunConfig(_Strict):
    task: Literal["detection", "classification"] = "detection"
    dataset: str
    profile: str
    method: str = "baseline"
    fasa: FASASettings | None = None
    train: TrainOverrides = TrainOverrides()

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return _known("dataset", name)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        return _known("profile", name)

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        return _known("method", name)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """Short, stable identity of the config (same settings -> same hash, across runs)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def require_built(self) -> None:
        """Raise NotBuiltError if the run names a method/profile/dataset that is not built."""
        registry.lookup("method", self.method)
        registry.lookup("profile", self.profile)
        registry.lookup("dataset", self.dataset)


_NAMES = {"method": registry.METHODS, "profile": registry.PROFILES, "dataset": registry.DATASETS}


def _known(kind: str, name: str) -> str:
    # A ValueError here becomes a pydantic error with the field's location (and so a line).
    if name not in _NAMES[kind]:
        raise ValueError(f"unknown {kind} '{name}'; use one of: {', '.join(_NAMES[kind])}")
    return name
