"""Box heads that add FASA's virtual features to the classification loss.

The classifier input (`x_cls`, the features right before `fc_cls`) is captured with a
forward pre-hook, so the same mixin serves Shared2FC, Shared4Conv1FC and Cascade's stage
heads without re-implementing their forward passes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead, Shared2FCBBoxHead
from mmdet.registry import MODELS

from fasa_cli.core import FASA, FASAConfig


class ValidationLossCollector:
    """Per-class sums of the classification loss and of correct predictions over RoIs."""

    def __init__(self, num_classes: int, device: torch.device):
        self.loss_sum = torch.zeros(num_classes, device=device, dtype=torch.float64)
        self.correct = torch.zeros(num_classes, device=device, dtype=torch.float64)
        self.count = torch.zeros(num_classes, device=device, dtype=torch.float64)

    def add(self, cls_score: torch.Tensor, labels: torch.Tensor) -> None:
        # Foreground RoIs only: the adaptive update concerns the C object classes.
        num_classes = self.count.numel()
        fg = (labels >= 0) & (labels < num_classes)
        if not fg.any():
            return
        scores, labels = cls_score[fg][:, : num_classes + 1], labels[fg]
        loss = F.cross_entropy(scores.float(), labels, reduction="none")
        hit = (scores.argmax(dim=1) == labels).double()
        self.loss_sum.index_add_(0, labels, loss.double())
        self.correct.index_add_(0, labels, hit)
        self.count.index_add_(0, labels, torch.ones_like(hit))

    def signal(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-class signal, valid mask): mean loss, or RoI accuracy for kind='metric'."""
        valid = self.count > 0
        total = self.loss_sum if kind == "loss" else self.correct
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
        loss = self.loss_cls(logits, labels)
        # Losses such as Seesaw return a dict of terms; FASA adds them all.
        return sum(loss.values()) if isinstance(loss, dict) else loss

    def loss_and_target(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg,
                        concat: bool = True, reduction_override=None) -> dict:
        out = super().loss_and_target(cls_score, bbox_pred, rois, sampling_results,
                                      rcnn_train_cfg, concat=concat,
                                      reduction_override=reduction_override)
        features, self._cls_features = self._cls_features, None
        labels = out["bbox_targets"][0]
        if self.val_collector is not None:  # the per-epoch validation-loss pass
            self.val_collector.add(cls_score.detach(), labels)
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
