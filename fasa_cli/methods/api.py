"""The registration API: `@register_method`, the argument schema base, and `RunEdit`, the
view of one run's mmdet config dict through which a method changes the run.

What a method can change, and the RunEdit call for it:
  training set or sampler   edit.wrap_train_set(dict(type="ClassBalancedDataset", ...))
  training pipeline         edit.insert_train_transform(dict(type="InstaBoost"), before="LoadAnnotations")
  box head / classifier     edit.bbox_head (the head's config dict, e.g. its cls_predictor_cfg)
  classifier-level loss     a FeaturePlugin (fasa_cli.methods.feature) hosted by the box head
  hooks                     edit.add_hook(dict(type=...))
  a second training stage   edit.second_stage(from_epoch, trainable=("roi_head.bbox_head.fc_cls",))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

_REGISTERED: dict[str, "Method"] = {}

# The registered host heads (fasa_cli/mmdet_ext/heads.py) for the box heads build_config writes.
HOST_HEADS = {
    "Shared2FCBBoxHead": "PluginShared2FCBBoxHead",
    "FASAShared2FCBBoxHead": "FASAPluginShared2FCBBoxHead",
}


class MethodArgs(BaseModel):
    """Base of a method's hyper-parameter schema: defaults are the paper's values."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(MethodArgs):
    """A method without hyper-parameters."""


@dataclass(frozen=True)
class Method:
    name: str
    table: str                       # paper table(s), e.g. "2" or "4,5"
    summary: str                     # one line: what it is and whose it is
    args: type[MethodArgs]
    edit: Callable[["RunEdit", Any], None] | None = None
    feature: type | None = None      # a FeaturePlugin subclass the box head hosts
    changes: tuple[str, ...] = ()    # what it changes in a run, in words (README status)

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The given keys, checked and normalised by the schema; ValueError('key: problem')."""
        try:
            parsed = self.args.model_validate(args)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "method_args"
            if first["type"] == "extra_forbidden":
                allowed = ", ".join(self.args.model_fields) or "(none: it takes no arguments)"
                raise ValueError(f"{key}: unknown argument '{key}' of method '{self.name}'; "
                                 f"use one of: {allowed}") from None
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"{key}: method '{self.name}' argument '{key}': {message}") from None
        return parsed.model_dump(exclude_unset=True)

    def resolve_args(self, args: dict[str, Any] | None) -> MethodArgs:
        return self.args.model_validate(args or {})


def register_method(name: str, *, table: str, summary: str, args: type[MethodArgs] = NoArgs,
                    changes: tuple[str, ...] = ()):
    """Register a method where it is implemented.

    Decorate either a function `edit(run_edit, args)` that changes the run's config, or a
    FeaturePlugin subclass (the box head hosts it; its static `edit_run` may change the config
    as well). Returns the decorated object unchanged."""

    def decorate(obj):
        if name in _REGISTERED:
            raise ValueError(f"method '{name}' is registered twice")
        if isinstance(obj, type):
            feature, edit = obj, getattr(obj, "edit_run", None)
        else:
            feature, edit = None, obj
        _REGISTERED[name] = Method(name, table, summary, args, edit, feature, tuple(changes))
        return obj

    return decorate


@dataclass
class RunEdit:
    """One run's mmdet config (a plain dict, built by fasa_cli.backend.config) and its facts."""

    cfg: dict
    run: Any                          # the RunConfig
    class_counts: list[int]
    frequency: list[str]              # LVIS group per class: r / c / f
    seed: int
    plugins: list[dict] = field(default_factory=list)
    stage: dict | None = None

    @property
    def train_set(self) -> dict:
        return self.cfg["train_dataloader"]["dataset"]

    def wrap_train_set(self, wrapper: dict) -> None:
        """Wrap the training set (e.g. a repeat-factor sampler): wrapper gets `dataset=`."""
        self.cfg["train_dataloader"]["dataset"] = dict(wrapper, dataset=self.train_set)

    def _innermost_train_set(self) -> dict:
        current = self.train_set
        while "dataset" in current:
            current = current["dataset"]
        return current

    def insert_train_transform(self, transform: dict, before: str) -> None:
        """Insert a transform into the training pipeline only (the validation-loss pass and the
        test pipeline keep theirs: the pipeline list is copied, never edited in place)."""
        inner = self._innermost_train_set()
        pipeline = [dict(t) for t in inner["pipeline"]]
        index = next((i for i, t in enumerate(pipeline) if t["type"] == before), None)
        if index is None:
            raise ValueError(f"the training pipeline has no {before} to insert {transform['type']} before")
        pipeline.insert(index, transform)
        inner["pipeline"] = pipeline

    @property
    def bbox_head(self) -> dict:
        return self.cfg["model"]["roi_head"]["bbox_head"]

    def add_hook(self, hook: dict) -> None:
        """Before the run's last hook (FASAHook or ClassifierNormsHook stays last)."""
        hooks = self.cfg["custom_hooks"]
        hooks.insert(len(hooks) - 1, hook)

    def add_feature_plugin(self, name: str, args: MethodArgs) -> None:
        head = self.bbox_head
        if head["type"] not in HOST_HEADS:
            raise ValueError(f"box head {head['type']} cannot host classifier-level plug-ins")
        self.plugins.append(dict(name=name, args=args.model_dump()))

    def second_stage(self, from_epoch: int, trainable: tuple[str, ...]) -> None:
        """From 0-based epoch `from_epoch` on, train only parameters under these prefixes."""
        self.stage = dict(freeze_from=from_epoch, trainable=list(trainable))

    def finish(self) -> None:
        if self.plugins:
            head = self.bbox_head
            head.update(type=HOST_HEADS[head["type"]], plugins=self.plugins,
                        class_counts=list(self.class_counts), class_frequency=list(self.frequency))
        if self.plugins or self.stage:
            self.add_hook(dict(type="MethodEpochHook", **(self.stage or {})))


def apply_method(cfg: dict, run: Any, *, class_counts: list[int], frequency: list[str], seed: int) -> None:
    """Let the run's method change `cfg` (in place); the baseline changes nothing."""
    from fasa_cli.methods import get_method

    method = get_method(run.method)
    args = method.resolve_args(run.method_args)
    edit = RunEdit(cfg, run, list(class_counts), list(frequency), seed)
    if method.edit is not None:
        method.edit(edit, args)
    if method.feature is not None:
        edit.add_feature_plugin(method.name, args)
    edit.finish()
