"""The classification run as method plug-ins see it: `ClsRunEdit`, and the parts a classifier
host builds (backbone -> pooled feature x -> classifier `fc_cls` -> logits -> loss).

Plain PyTorch and plain dicts, no mmengine: the host (fasa_cli/cls_ext) turns the finished view
into an mmengine config. A method with a classification form (`register_method(...,
task="classification")`, or `api.add_task_form(name, "classification", edit=...)`) gets
`edit(view, args)`; what it can change, and how:

  the classifier          view.model["classifier"] = dict(type="pkg.module:Class", ...)   LDAM's cosine, TDE's causal
  the loss                view.model["loss"] = dict(type="pkg.module:Class", ...)         LDAM (+ DRW)
  the backbone            view.model["backbone"].update(...)                             TDE's BBN-style ResNet-32
  the model               view.model["type"] = registered model name                     M2m's two networks
  the schedule            view.schedule: lr, batch_size, lr_steps (fractions of the epochs), lr_gamma, ...
  the sampler             view.sampler["balanced_from"] = epoch (class-balanced draws from then on)
  a pre-training phase    view.pretrain_phase()  (the run trains a first network for a whole schedule)
  hooks                   view.add_hook(dict(type=...))
  a feature plug-in       a FeaturePlugin (fasa_cli.methods.feature) is hosted on fc_cls, as on a box head
  a second stage          view.second_stage(from_epoch, trainable=("fc_cls",))

Part types are import paths "package.module:Class", so a method module brings its own parts and
nothing else needs to list them. The protocols:

  backbone    nn.Module; `out_dim`; forward(images [N, 3, H, W]) -> pooled features [N, d]
  classifier  ClassifierPart(in_features, num_classes, **args): forward(x) -> training logits,
              predict(x) -> inference logits, observe(x) -> sees each training batch's real features
  loss        LossPart(class_counts, **args): forward(logits, labels, weights=None) -> mean loss,
              per_sample(logits, labels) -> [N] unweighted loss (the validation signal), set_epoch(e)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LINEAR = "fasa_cli.methods.cls_api:LinearClassifier"
CROSS_ENTROPY = "fasa_cli.methods.cls_api:CrossEntropyLoss"
# A detection plug-in names the box head's classifier; on a plain classifier it is `fc_cls`.
_DETECTION_CLASSIFIER = "roi_head.bbox_head.fc_cls"


class ClassifierPart(nn.Module):
    """Base of a classifier: `weight` [C, d]; the training form is also the inference form."""

    weight: Tensor

    def predict(self, x: Tensor) -> Tensor:
        return self(x)

    def observe(self, x: Tensor) -> None:
        """The real (never virtual) features of a training batch, detached."""


class LinearClassifier(ClassifierPart):
    """y = W x + b, PyTorch's default initialisation (as nn.Linear)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.out_features = in_features, num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.empty(num_classes))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class LossPart(nn.Module):
    """Base of a loss: per-class weights (a buffer, all 1 unless a method re-weights) and the
    host's 0-based epoch."""

    def __init__(self, class_counts: Sequence[int]):
        super().__init__()
        counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
        self.register_buffer("class_counts", counts, persistent=False)
        self.register_buffer("class_weight", torch.ones_like(counts), persistent=False)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """Weighted mean of the per-sample loss: sum(w l) / sum(w), w = class weight x sample
        weight (PyTorch's weighted cross-entropy)."""
        w = self.class_weight[labels]
        if weights is not None:
            w = w * weights
        if labels.numel() == 0:
            return logits.sum() * 0.0
        return (w * self.per_sample(logits, labels)).sum() / w.sum().clamp_min(1e-12)


class CrossEntropyLoss(LossPart):
    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, reduction="none")


@dataclass
class ClsRunEdit:
    """One classification run before it becomes an mmengine config; methods edit it in place."""

    run: Any                          # the RunConfig
    class_counts: list[int]
    frequency: list[str]              # r / c / f per class: few / medium / many-shot
    seed: int
    model: dict                       # type, backbone, classifier, loss
    schedule: dict                    # epochs (per phase), batch_size, lr, lr_steps, lr_gamma, ...
    sampler: dict = field(default_factory=lambda: {"balanced_from": None})
    phases: tuple[str, ...] = ("train",)
    hooks: list[dict] = field(default_factory=list)
    plugins: list[dict] = field(default_factory=list)
    stage: dict | None = None

    @property
    def epochs(self) -> int:
        """Epochs of the schedule (of each phase, when there is a pre-training phase)."""
        return int(self.schedule["epochs"])

    def epoch_at(self, fraction: float) -> int:
        """The 0-based epoch a fraction of the schedule ends at: 0.8 of 200 -> 160."""
        return int(round(fraction * self.epochs))

    def add_hook(self, hook: dict) -> None:
        self.hooks.append(hook)

    def add_feature_plugin(self, name: str, args) -> None:
        self.plugins.append(dict(name=name, args=args.model_dump()))

    def second_stage(self, from_epoch: int, trainable: tuple[str, ...]) -> None:
        """From 0-based epoch `from_epoch` on, train only parameters under these prefixes (a
        detection plug-in's box-head classifier prefix means this model's `fc_cls`)."""
        names = ["fc_cls" if p == _DETECTION_CLASSIFIER else p for p in trainable]
        self.stage = dict(freeze_from=int(from_epoch), trainable=names)

    def pretrain_phase(self) -> None:
        """The run first trains a separate network for a whole schedule (M2m's baseline g)."""
        self.phases = ("pretrain", "train")


def apply_cls_method(view: ClsRunEdit) -> None:
    """Let the run's method change the classification view (in place)."""
    from fasa_cli.methods import get_method

    method = get_method(view.run.method)
    edit = method.edit_for("classification")
    args = method.resolve_args(view.run.method_args)
    if edit is not None:
        edit(view, args)
    if method.feature is not None:
        view.add_feature_plugin(method.name, args)


def build_part(spec: dict, **kwargs) -> Any:
    """Instantiate a part from {"type": "package.module:Class", **args} plus `kwargs`."""
    import importlib

    spec = dict(spec)
    path = spec.pop("type")
    module_name, _, class_name = path.partition(":")
    if not class_name:
        raise ValueError(f"part type '{path}' is not 'package.module:Class'")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**spec, **kwargs)
