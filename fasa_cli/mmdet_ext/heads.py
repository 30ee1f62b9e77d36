"""Box heads that add FASA's virtual features to the classification loss, and the host of
classifier-level method plug-ins (fasa_cli.methods: SMOTE, MoEx, Yin, Liu, Chu).

The classifier input (`x_cls`, the features right before `fc_cls`) is captured with a
forward pre-hook, so the same mixin serves Shared2FC, Shared4Conv1FC and Cascade's stage
heads without re-implementing their forward passes. A run with FASA only builds
FASAShared2FCBBoxHead exactly as before; a run with a plug-in method (with or without FASA)
builds a PluginShared2FCBBoxHead / FASAPluginShared2FCBBoxHead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead, Shared2FCBBoxHead
from mmdet.registry import MODELS

from fasa_cli.core import FASA, FASAConfig
from fasa_cli.mmdet_ext.cls_losses import predicted_labels, roi_cls_loss, rois_source


class ValidationLossCollector:
    """Per-class sums of the classification loss and of correct predictions over RoIs."""

    def __init__(self, num_classes: int, device: torch.device):
        self.loss_sum = torch.zeros(num_classes, device=device, dtype=torch.float64)
        self.correct = torch.zeros(num_classes, device=device, dtype=torch.float64)
        self.count = torch.zeros(num_classes, device=device, dtype=torch.float64)
        self.all_rois = 0  # background included: the official code's normaliser

    def add(self, cls_score: torch.Tensor, labels: torch.Tensor, loss_cls: torch.nn.Module | None = None) -> None:
        """`loss_cls`: the head's classification loss; its own per-RoI values and test-time
        scores make the signal (softmax CE on the first C + 1 logits without one)."""
        # Foreground RoIs only: the adaptive update concerns the C object classes.
        num_classes = self.count.numel()
        self.all_rois += int(labels.numel())
        fg = (labels >= 0) & (labels < num_classes)
        if not fg.any():
            return
        scores, labels = cls_score[fg].float(), labels[fg]
        loss = roi_cls_loss(loss_cls, scores, labels, num_classes)
        hit = (predicted_labels(loss_cls, scores, num_classes) == labels).double()
        self.loss_sum.index_add_(0, labels, loss.double())
        self.correct.index_add_(0, labels, hit)
        self.count.index_add_(0, labels, torch.ones_like(hit))

    def signal(self, kind: str, norm: str = "class_mean") -> tuple[torch.Tensor, torch.Tensor]:
        """(per-class signal, valid mask): mean loss, or RoI accuracy for kind='metric'.

        norm="class_mean": over the class's own foreground RoIs (this suite's default);
        "official": the class's loss sum over every RoI of the pass, background included,
        as the official code normalises it."""
        valid = self.count > 0
        total = self.loss_sum if kind == "loss" else self.correct
        if norm == "official":
            return (total / max(self.all_rois, 1)).float(), valid
        return (total / self.count.clamp(min=1)).float(), valid


class FASAHeadMixin:
    """FASA for any bbox head whose classifier is `self.fc_cls`."""

    def _init_fasa(self, fasa: dict, class_counts: Sequence[int]) -> None:
        if len(class_counts) != self.num_classes:
            raise ValueError(
                f"class_counts has {len(class_counts)} entries for {self.num_classes} classes"
            )
        cfg = FASAConfig(num_classes=self.num_classes, feat_dim=self.fc_cls.in_features, **fasa)
        self.fasa = FASA(cfg, class_counts)
        self.val_collector: ValidationLossCollector | None = None
        self.virtual_used = 0  # virtual features used since the last reset (for the state log)
        self._cls_features: torch.Tensor | None = None
        self.fc_cls.register_forward_pre_hook(self._capture_cls_features)

    def _capture_cls_features(self, module, args) -> None:
        self._cls_features = args[0]

    def set_epoch(self, epoch: int) -> None:
        self.fasa.set_epoch(epoch)

    def _virtual_cls_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with rois_source(self.loss_cls, "virtual"):  # a loss's running counts skip them by default
            loss = self.loss_cls(logits, labels)
        # Losses such as Seesaw return a dict of terms; FASA adds them all.
        return sum(loss.values()) if isinstance(loss, dict) else loss

    def loss_and_target(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg,
                        concat: bool = True, reduction_override=None) -> dict:
        with rois_source(self.loss_cls, "real" if self.val_collector is None else "validation"):
            out = super().loss_and_target(cls_score, bbox_pred, rois, sampling_results,
                                          rcnn_train_cfg, concat=concat,
                                          reduction_override=reduction_override)
        features, self._cls_features = self._cls_features, None
        labels = out["bbox_targets"][0]
        if self.val_collector is not None:  # the per-epoch validation-loss pass
            self.val_collector.add(cls_score.detach(), labels, self.loss_cls)
            return out
        positive = (labels >= 0) & (labels < self.num_classes)
        self.fasa.update(features[positive], labels[positive])
        out["loss_bbox"]["loss_fasa"] = self.fasa.virtual_loss(self._classify_virtual,
                                                               self._virtual_cls_loss)
        return out

    def _classify_virtual(self, features: torch.Tensor) -> torch.Tensor:
        self.virtual_used += features.shape[0]
        return self.fc_cls(features)


@MODELS.register_module()
class FASAShared2FCBBoxHead(FASAHeadMixin, Shared2FCBBoxHead):
    """Shared2FCBBoxHead + FASA. Extra args: `fasa` (FASAConfig fields), `class_counts`."""

    def __init__(self, *args, fasa: dict, class_counts: Sequence[int], **kwargs):
        super().__init__(*args, **kwargs)
        self._init_fasa(dict(fasa), class_counts)


@MODELS.register_module()
class FASAConvFCBBoxHead(FASAHeadMixin, ConvFCBBoxHead):
    """ConvFCBBoxHead (e.g. Shared4Conv1FC) + FASA."""

    def __init__(self, *args, fasa: dict, class_counts: Sequence[int], **kwargs):
        super().__init__(*args, **kwargs)
        self._init_fasa(dict(fasa), class_counts)


def fasa_heads(model: torch.nn.Module) -> list[FASAHeadMixin]:
    """Every FASA head inside a detector (one for Mask R-CNN, one per stage for Cascade)."""
    return [m for m in model.modules() if isinstance(m, FASAHeadMixin)]


class PluginHostMixin:
    """Hosts classifier-level plug-ins (fasa_cli.methods.feature.FeaturePlugin) on `fc_cls`.

    A forward pre-hook on fc_cls, active only inside the head's own forward, passes its input
    through each plug-in's `transform` (training and test time) and keeps the result, the
    classifier input of every sampled RoI. In `loss_and_target`, after the parent's losses
    (and FASA's, when the head has it), each plug-in gets a ClassifierBatch of those features,
    labels, label weights, the real logits and fc_cls; a returned `cls_loss` replaces
    `loss_cls`, returned `losses` are added as `loss_<key>`. The validation-loss pass (FASA's
    `val_collector`) skips the plug-ins. Plug-ins are built before FASA, so FASA models the
    features fc_cls really sees.
    """

    def _init_plugins(self, plugins: Sequence[dict], class_counts: Sequence[int],
                      class_frequency: Sequence[str] | None) -> None:
        from fasa_cli.methods import get_method

        modules = {}
        for spec in plugins:
            method = get_method(spec["name"])
            modules[spec["name"]] = method.feature(method.resolve_args(spec.get("args")), self.num_classes,
                                                   self.fc_cls.in_features, class_counts, class_frequency)
        self.feature_plugins = torch.nn.ModuleDict(modules)
        self._plugin_features: torch.Tensor | None = None
        self._in_head_forward = False
        self.fc_cls.register_forward_pre_hook(self._plugin_pre_hook)

    def _plugin_pre_hook(self, module, args):
        if not self._in_head_forward:  # a plug-in's or FASA's own call of fc_cls
            return None
        x = args[0]
        for plugin in self.feature_plugins.values():
            x = plugin.transform(x)
        self._plugin_features = x
        return None if x is args[0] else (x, *args[1:])

    def forward(self, x):
        self._in_head_forward = True
        try:
            return super().forward(x)
        finally:
            self._in_head_forward = False

    def set_plugin_epoch(self, epoch: int) -> None:
        for plugin in self.feature_plugins.values():
            plugin.set_epoch(epoch)

    def loss_and_target(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg,
                        concat: bool = True, reduction_override=None) -> dict:
        from fasa_cli.methods.feature import ClassifierBatch, add_plugin_losses

        features, self._plugin_features = self._plugin_features, None
        out = super().loss_and_target(cls_score, bbox_pred, rois, sampling_results,
                                      rcnn_train_cfg, concat=concat,
                                      reduction_override=reduction_override)
        if getattr(self, "val_collector", None) is not None or features is None:
            return out
        labels, label_weights = out["bbox_targets"][0], out["bbox_targets"][1]

        def rois_loss(logits, targets, weights):
            avg_factor = max(float((weights > 0).sum()), 1.0)
            return self.loss_cls(logits, targets, weights, avg_factor=avg_factor,
                                 reduction_override=reduction_override)

        batch = ClassifierBatch(features=features, labels=labels, weights=label_weights,
                                cls_score=cls_score, num_classes=self.num_classes,
                                classifier=self.fc_cls, rois_loss=rois_loss,
                                samples_loss=self._plugin_samples_loss)
        add_plugin_losses(self.feature_plugins, batch, out["loss_bbox"])
        return out

    def _plugin_samples_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.loss_cls(logits, labels)
        return sum(loss.values()) if isinstance(loss, dict) else loss


def plugin_hosts(model: torch.nn.Module) -> list[PluginHostMixin]:
    return [m for m in model.modules() if isinstance(m, PluginHostMixin)]


@MODELS.register_module()
class PluginShared2FCBBoxHead(PluginHostMixin, Shared2FCBBoxHead):
    """Shared2FCBBoxHead hosting method plug-ins. Extra args: `plugins` ([{name, args}]),
    `class_counts`, `class_frequency` (LVIS r/c/f per class)."""

    def __init__(self, *args, plugins: Sequence[dict], class_counts: Sequence[int],
                 class_frequency: Sequence[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_plugins(plugins, class_counts, class_frequency)


@MODELS.register_module()
class FASAPluginShared2FCBBoxHead(PluginHostMixin, FASAHeadMixin, Shared2FCBBoxHead):
    """Shared2FCBBoxHead + method plug-ins + FASA (e.g. SMOTE + FASA)."""

    def __init__(self, *args, fasa: dict, plugins: Sequence[dict], class_counts: Sequence[int],
                 class_frequency: Sequence[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_plugins(plugins, class_counts, class_frequency)
        self._init_fasa(dict(fasa), class_counts)
