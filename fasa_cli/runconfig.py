"""RunConfig: everything one training run needs, as the backend receives it.

It sits at the package's top level so that both `experiments/` (specs, the store) and
`backend/` (the mmdet config, the child process) import it downwards; neither imports the other
for it. `extra="forbid"` everywhere, so a misspelt key in a spec is an error, never ignored.

FASASettings is derived from fasa_cli.core.config.FASAConfig, the one source of truth for
FASA's knobs: the same names, defaults and choices, and every value is checked by the core's
own validation. The run's seed and the model's class count / feature size are not settings
(the backend supplies them); the three validation-pass fields are the hook's, not the core's.

`method_args` holds a method's hyper-parameters, validated by the schema the method registered
(fasa_cli.methods); left empty, the method runs with the paper's values. An empty
`method_args` is left out of the config's identity, so configs without it hash as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator
from pydantic_core import PydanticCustomError

from fasa_cli import registry
from fasa_cli.core.config import _CHOICES, FASAConfig, FASAConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# FASAConfig fields a spec does not set: the backend supplies them.
_SUPPLIED = ("num_classes", "feat_dim", "seed")
_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


def _core_fields() -> dict[str, tuple[Any, Any]]:
    fields = {}
    for f in dataclasses.fields(FASAConfig):
        if f.name in _SUPPLIED:
            continue
        kind = Literal[_CHOICES[f.name]] if f.name in _CHOICES else _TYPES[str(f.type)]
        fields[f.name] = (kind, f.default)
    return fields


CORE_FIELDS: tuple[str, ...] = tuple(_core_fields())

_CoreSettings = create_model("_CoreSettings", __base__=_Strict, **_core_fields())


class FASASettings(_CoreSettings):
    """A run's `fasa:` block; None in RunConfig means the run has no FASA at all.

    The core fields (momentum, spread, ..., start_epoch) come from FASAConfig; see its
    docstring for their meaning and the paper-vs-code switches."""

    # The validation pass (the host's, not the core's): see README "Fidelity".
    val_signal: Literal["class_mean", "official"] = "class_mean"
    val_balance: Literal["rfs", "none"] = "rfs"
    val_oversample_thr: float = Field(1e-3, gt=0.0, le=1.0)

    HOOK_FIELDS: ClassVar[tuple[str, ...]] = ("val_signal", "val_balance", "val_oversample_thr")

    # Which box-head stages of a Cascade Mask R-CNN run FASA (the paper is silent; see
    # fasa_cli/mmdet_ext/cascade.py). One-stage detectors ignore it. At its default it is left
    # out of the config's identity, so earlier configs hash as before.
    cascade_stages: Literal["all", "last"] = "all"
    HOST_FIELDS: ClassVar[tuple[str, ...]] = ("cascade_stages",)

    @field_validator(*CORE_FIELDS)
    @classmethod
    def _core_accepts(cls, value: Any, info: ValidationInfo) -> Any:
        # The core's own check of this one value (bounds, integer-ness), so bounds live once.
        try:
            FASAConfig(num_classes=1, feat_dim=1, **{info.field_name: value})
        except FASAConfigError as err:
            raise ValueError(err.problem) from None
        return value

    def core_settings(self) -> dict:
        """The fields fasa_cli.core.FASAConfig takes (the validation-pass ones go to the hook)."""
        return self.model_dump(exclude=set(self.HOOK_FIELDS) | set(self.HOST_FIELDS))


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
    method_args: dict[str, Any] = {}
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

    @field_validator("method_args")
    @classmethod
    def _valid_method_args(cls, args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if not args or method is None:  # no args, or the method name itself was bad
            return args
        from fasa_cli.methods import validate_method_args  # lazy: imports the plug-ins

        try:
            return validate_method_args(method, args)
        except ValueError as err:
            key, _, problem = str(err).partition(": ")
            # `key` lets the spec point at the offending key's line (see spec._resolution_problem).
            raise PydanticCustomError("method_args", "{problem}", {"problem": str(err), "key": key}) from None

    @field_validator("dataset", "profile", "method")
    @classmethod
    def _serves_the_task(cls, name: str, info: ValidationInfo) -> str:
        # A classification profile, dataset or method in a detection run (or the reverse)
        # fails at its own key, not in the middle of building the run.
        task = info.data.get("task")
        if task is None:
            return name
        if info.field_name == "method":
            from fasa_cli.methods import registered_methods  # lazy: imports the plug-ins

            method = registered_methods().get(name)
            if method is not None and task not in method.tasks:
                raise ValueError(f"method '{name}' has no {task} form (it runs on: {', '.join(method.tasks)})")
            return name
        serves = _NAMES[info.field_name][name].task
        if serves != task:
            raise ValueError(f"{info.field_name} '{name}' serves {serves} runs, not {task} ones; "
                             f"set task: {serves}, or pick a {task} {info.field_name}")
        return name

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        if not data["method_args"]:
            del data["method_args"]  # configs without method arguments keep their old identity
        if data["fasa"] is not None and data["fasa"].get("cascade_stages") == "all":
            del data["fasa"]["cascade_stages"]  # likewise for the cascade switch at its default
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

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
