"""Classification losses of long-tail methods as registered mmdet losses (EQL v1, BAGS's group
softmax, Seesaw counting real RoIs), and the protocol by which FASA's host head
(fasa_cli.mmdet_ext.heads) uses whatever classification loss the box head has:

  roi_cls_loss(loss_cls, cls_score, labels, C)   [N] the loss's own per-RoI values (`roi_loss`),
                                                 or softmax CE for mmdet's CrossEntropyLoss: FASA's
                                                 per-class validation signal
  predicted_labels(loss_cls, cls_score, C)       [N] argmax of the loss's C + 1 test-time scores
  with rois_source(loss_cls, source):            tells a loss with running statistics whose RoIs
                                                 the calls inside see: "real", "virtual" (FASA's
                                                 features) or "validation" (FASA's pass)

The virtual features themselves go through `loss_cls(logits, labels)` like any RoI batch. The
math lives in fasa_cli.methods (plain PyTorch); these classes hold mmdet's conventions: a head
whose loss sets `custom_cls_channels` builds fc_cls with `get_cls_channels(C)` outputs and
scores test RoIs with `get_activation` (C + 1 columns, background last).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from mmdet.models.losses import SeesawLoss, accuracy
from mmdet.models.losses.seesaw_loss import seesaw_ce_loss
from mmdet.registry import MODELS
from torch import Tensor, nn

from fasa_cli.methods.bags import GroupLayout, group_softmax_loss, group_softmax_roi_loss
from fasa_cli.methods.eql import eql_v1_roi_loss, sigmoid_scores

SOURCES = ("real", "virtual", "validation")


@contextmanager
def rois_source(loss_cls: nn.Module, source: str) -> Iterator[None]:
    """Within the block, `loss_cls` sees RoIs of `source` (no-op for a loss without statistics)."""
    if source not in SOURCES:
        raise ValueError(f"RoI source must be one of {SOURCES}; got {source!r}")
    if not hasattr(loss_cls, "rois_source"):
        yield
        return
    previous, loss_cls.rois_source = loss_cls.rois_source, source
    try:
        yield
    finally:
        loss_cls.rois_source = previous


def roi_cls_loss(loss_cls: nn.Module | None, cls_score: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[N] the classification loss of each RoI, as the head's own loss defines it."""
    own = getattr(loss_cls, "roi_loss", None)
    if own is not None:
        return own(cls_score, labels)
    if getattr(loss_cls, "custom_cls_channels", False) or getattr(loss_cls, "use_sigmoid", False):
        raise ValueError(f"{type(loss_cls).__name__} has no per-RoI loss (`roi_loss`) for FASA's "
                         "validation signal; wrap it in a loss that has one")
    return F.cross_entropy(cls_score[:, : num_classes + 1], labels, reduction="none")


def predicted_labels(loss_cls: nn.Module | None, cls_score: Tensor, num_classes: int) -> Tensor:
    """[N] the class (background = C) each RoI's test-time scores put first."""
    if getattr(loss_cls, "custom_activation", False):
        cls_score = loss_cls.get_activation(cls_score)
    return cls_score[:, : num_classes + 1].argmax(dim=1)


def _reduce(per_roi: Tensor, label_weights: Tensor | None, reduction: str, avg_factor: float | None) -> Tensor:
    if label_weights is not None:
        per_roi = per_roi * label_weights.to(per_roi.dtype)
    if reduction == "none":
        return per_roi
    if reduction == "sum":
        return per_roi.sum()
    return per_roi.sum() / (avg_factor if avg_factor is not None else max(per_roi.numel(), 1))


@MODELS.register_module()
class EQLv1Loss(nn.Module):
    """EQL v1 (fasa_cli.methods.eql): C sigmoid outputs, tail classes (`tail`, [C] bool) get no
    negative gradient from other classes' foreground RoIs. 'mean' divides by the number of RoIs
    (avg_factor, as the box head passes it), like eqlv2's sum / n_i."""

    def __init__(self, num_classes: int, tail: Sequence[bool], loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        if len(tail) != num_classes:
            raise ValueError(f"EQL's tail mask has {len(tail)} entries for {num_classes} classes")
        self.num_classes, self.loss_weight, self.reduction = num_classes, loss_weight, reduction
        self.register_buffer("tail", torch.tensor(list(tail), dtype=torch.bool), persistent=False)
        self.custom_cls_channels = self.custom_activation = self.custom_accuracy = True

    def get_cls_channels(self, num_classes: int) -> int:
        if num_classes != self.num_classes:
            raise ValueError(f"EQL was configured for {self.num_classes} classes, the head has {num_classes}")
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        return sigmoid_scores(cls_score)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> dict[str, Tensor]:
        positive = labels < self.num_classes
        return {"acc_fg": accuracy(cls_score[positive], labels[positive])}

    def roi_loss(self, cls_score: Tensor, labels: Tensor) -> Tensor:
        return self.loss_weight * eql_v1_roi_loss(cls_score, labels, self.tail)

    def forward(self, cls_score: Tensor, labels: Tensor, label_weights: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None, **kwargs) -> Tensor:
        reduction = reduction_override or self.reduction
        return self.loss_weight * _reduce(eql_v1_roi_loss(cls_score, labels, self.tail), label_weights,
                                          reduction, avg_factor)


@MODELS.register_module()
class GroupSoftmaxLoss(nn.Module):
    """BAGS's balanced group softmax (fasa_cli.methods.bags): `class_groups` gives each class's
    object group; fc_cls has C + K + 2 outputs. Each group averages over its own kept RoIs, so
    the box head's avg_factor is not used."""

    def __init__(self, class_groups: Sequence[int], others_ratio: float = 8.0, loss_weight: float = 1.0):
        super().__init__()
        self.layout = GroupLayout(class_groups)
        self.others_ratio, self.loss_weight = others_ratio, loss_weight
        self.custom_cls_channels = self.custom_activation = self.custom_accuracy = True

    def _layout(self, cls_score: Tensor) -> GroupLayout:
        return self.layout.to(cls_score.device)

    def get_cls_channels(self, num_classes: int) -> int:
        if num_classes != self.layout.num_classes:
            raise ValueError(f"BAGS groups cover {self.layout.num_classes} classes, the head has {num_classes}")
        return self.layout.width

    def get_activation(self, cls_score: Tensor) -> Tensor:
        return self._layout(cls_score).scores(cls_score)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {"acc": accuracy(self.get_activation(cls_score), labels)}

    def roi_loss(self, cls_score: Tensor, labels: Tensor) -> Tensor:
        return self.loss_weight * group_softmax_roi_loss(self._layout(cls_score), cls_score, labels)

    def forward(self, cls_score: Tensor, labels: Tensor, label_weights: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None, **kwargs) -> Tensor:
        if reduction_override == "none":
            return _reduce(self.roi_loss(cls_score, labels), label_weights, "none", None)
        return self.loss_weight * group_softmax_loss(self._layout(cls_score), cls_score, labels, label_weights,
                                                     self.others_ratio)


@MODELS.register_module()
class SourceAwareSeesawLoss(SeesawLoss):
    """mmdet's SeesawLoss whose class counts (`cum_samples`) follow real RoIs only: calls inside
    `rois_source(loss, "validation")` never count, calls inside `rois_source(loss, "virtual")`
    count only with `count_virtual=True`. A call that does not count computes its weights from
    the counts as they are and leaves them unchanged. Everything else is mmdet's."""

    def __init__(self, *args, count_virtual: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.count_virtual = count_virtual
        self.rois_source = "real"

    def counts_this_call(self) -> bool:
        return self.rois_source == "real" or (self.rois_source == "virtual" and self.count_virtual)

    def forward(self, cls_score: Tensor, labels: Tensor, label_weights: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None):
        if not self.counts_this_call():
            if cls_score.size(-1) != self.num_classes + 2 or reduction_override not in (None, "none", "mean", "sum"):
                raise ValueError(f"Seesaw expects {self.num_classes + 2} logits and a known reduction")
            # mmdet adds this call's labels to the counts before weighting: taking them off first
            # leaves the counts, and this call's weights, at the counted RoIs only.
            seen = torch.bincount(labels, minlength=self.num_classes + 1).to(self.cum_samples.dtype)
            self.cum_samples.sub_(seen)
        return super().forward(cls_score, labels, label_weights, avg_factor, reduction_override)

    def roi_loss(self, cls_score: Tensor, labels: Tensor) -> Tensor:
        """Objectness CE plus, for foreground RoIs, the Seesaw class CE; counts unchanged."""
        classes, objectness = self._split_cls_score(cls_score)
        loss = F.cross_entropy(objectness, (labels == self.num_classes).long(), reduction="none")
        positive = labels < self.num_classes
        extra = torch.zeros_like(loss)
        if bool(positive.any()):
            extra[positive] = seesaw_ce_loss(classes[positive], labels[positive], None,
                                             self.cum_samples[: self.num_classes], self.num_classes,
                                             self.p, self.q, self.eps, reduction="none")
        return self.loss_weight * (loss + extra)
