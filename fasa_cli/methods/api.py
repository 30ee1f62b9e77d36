"""The registration API: `@register_method`, the argument schema base, and `RunEdit`, the
view of one run's mmdet config dict through which a method changes the run.

What a method can change, and the RunEdit call for it:
  training set or sampler   edit.wrap_train_set(dict(type="ClassBalancedDataset", ...))
  training pipeline         edit.insert_train_transform(dict(type="InstaBoost"), before="LoadAnnotations")
  box head / classifier     edit.bbox_head (the head's config dict, e.g. its cls_predictor_cfg)
  classifier-level loss     a FeaturePlugin (fasa_cli.methods.feature) hosted by the box head
  hooks                     edit.add_hook(dict(type=...))
  a second training stage   edit.second_stage(from_epoch, trainable=("roi_head.bbox_head.fc_cls",))
  two stages (12+12 style)  edit.two_stage(first_epochs, reinit=(...,), trainable=(...,))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from fasa_cli.errors import FasaError

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
    task: str = "detection"          # the kind of run (RunConfig.task) whose config `edit` changes
    # Further tasks the method also runs on (add_task_form): task -> (edit of that task's run
    # view, changes). A FeaturePlugin speaks ClassifierBatch, so any classifier host can hold it.
    forms: dict = field(default_factory=dict, compare=False)

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task, *self.forms)

    def edit_for(self, task: str) -> Callable[[Any, Any], None] | None:
        """The edit of this task's run view; ValueError if the method has no form for it."""
        if task == self.task:
            return self.edit
        if task in self.forms:
            return self.forms[task][0]
        raise ValueError(f"method '{self.name}' has no {task} form (it runs on: {', '.join(self.tasks)})")

    def changes_for(self, task: str) -> tuple[str, ...]:
        return self.changes if task == self.task else tuple(self.forms.get(task, (None, ()))[1])

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The given keys that differ from the defaults, checked and normalised by the schema
        (so spelling a default out leaves the config, and its hash, unchanged); ValueError('key: problem')."""
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
        return parsed.model_dump(exclude_defaults=True)

    def resolve_args(self, args: dict[str, Any] | None) -> MethodArgs:
        return self.args.model_validate(args or {})


def register_method(name: str, *, table: str, summary: str, args: type[MethodArgs] = NoArgs,
                    changes: tuple[str, ...] = (), task: str = "detection"):
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
        _REGISTERED[name] = Method(name, table, summary, args, edit, feature, tuple(changes), task)
        return obj

    return decorate


def add_task_form(name: str, task: str, *, edit: Callable[[Any, Any], None] | None = None,
                  changes: tuple[str, ...] = ()) -> None:
    """Let a registered method run on another task (e.g. Chu et al.'s plug-in on a plain
    classifier): `edit(view, args)` changes that task's run view (fasa_cli.methods.cls_api for
    classification); the method's FeaturePlugin, if any, is hosted by that task's classifier."""
    method = _REGISTERED.get(name)
    if method is None:
        raise ValueError(f"method '{name}' is not registered (import its module first)")
    if task in method.tasks:
        raise ValueError(f"method '{name}' already has a {task} form")
    method.forms[task] = (edit, tuple(changes))


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
    image_counts: list[int] = field(default_factory=list)  # training images per class
    train_images: int = 0                                   # training images with annotations
    first_stage: dict | None = None                         # set by two_stage

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

    def two_stage(self, first_epochs: int | None, *, reinit: tuple[str, ...], trainable: tuple[str, ...],
                  first_method: str = "baseline") -> None:
        """A 12+12-style run (cRT, BAGS). Stage 1: `first_method` without FASA for `first_epochs`
        epochs (default half the run's) in <run>/stage1. Stage 2, this config as the method edits
        it further: the remaining epochs, starting from stage 1's last weights without the
        `reinit` parameters (so the model's init re-initialises them), training only the
        `trainable` ones, everything else frozen. Each stage gets the run's learning-rate
        schedule scaled to its length (fasa_cli.backend.stages runs the stages)."""
        total = self.cfg["train_cfg"]["max_epochs"]
        first = total // 2 if first_epochs is None else first_epochs
        if not 1 <= first < total:
            raise FasaError(f"method '{self.run.method}' trains two stages: it needs 1 <= first_epochs < "
                            f"epochs ({total}); got first_epochs {first}",
                            "set train.epochs to 2 or more, or method_args.first_epochs below it")
        self.first_stage = dict(method=first_method, epochs=first, reinit=list(reinit))
        scale_schedule(self.cfg, total - first)
        self.add_hook(dict(type="FrozenStageHook", trainable=list(trainable)))

    def finish(self) -> None:
        if self.plugins:
            head = self.bbox_head
            head.update(type=HOST_HEADS[head["type"]], plugins=self.plugins,
                        class_counts=list(self.class_counts), class_frequency=list(self.frequency))
        if self.plugins or self.stage:
            self.add_hook(dict(type="MethodEpochHook", **(self.stage or {})))


def scale_schedule(cfg: dict, epochs: int) -> None:
    """Shorten a built config's schedule to `epochs`, its learning-rate steps scaled with it
    (rounded down: LVIS's steps 16, 22 of 24 epochs become 8, 11 of 12, eqlv2's 1x)."""
    total = cfg["train_cfg"]["max_epochs"]
    cfg["train_cfg"].update(max_epochs=epochs, val_interval=epochs + 1)
    for scheduler in cfg["param_scheduler"]:
        if scheduler["type"] == "MultiStepLR":
            steps = [m * epochs // total for m in scheduler["milestones"]]
            scheduler.update(end=epochs, milestones=[s for s in steps if 0 < s < epochs])


def apply_method(cfg: dict, run: Any, *, class_counts: list[int], frequency: list[str], seed: int,
                 image_counts: list[int] | None = None, train_images: int = 0) -> "RunEdit":
    """Let the run's method change `cfg` (in place); the baseline changes nothing. Returns the
    edit: its `first_stage` is set for a two-stage method (fasa_cli.backend.stages)."""
    from fasa_cli.methods import get_method

    method = get_method(run.method)
    method_edit = method.edit_for("detection")
    args = method.resolve_args(run.method_args)
    # Without image counts (a hand-made DatasetInfo) instance counts stand in for them.
    edit = RunEdit(cfg, run, list(class_counts), list(frequency), seed,
                   image_counts=list(image_counts or class_counts), train_images=int(train_images or 0))
    if method_edit is not None:
        method_edit(edit, args)
    if method.feature is not None:
        edit.add_feature_plugin(method.name, args)
    edit.finish()
    return edit
