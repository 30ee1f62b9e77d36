"""Liu et al., CVPR 2020 (LEAP, "learnable embedding augmentation"), re-implemented as FASA
describes it: ArcFace-style normalised logits (Eq. 7 of the FASA appendix) where a tail
class's target angle is enlarged by an extra angle alpha_y transferred from the head classes,
plus the additive angular margin m_a. Table 14: s = 20, m_a = 0.1. No public code exists.

  logit_j = s * cos(theta_j)                       (non-target classes, and background RoIs)
  logit_y = s * cos(min(theta_y + alpha_y + m_a, pi))   (the target class of a positive RoI)

Choices where the papers are silent:
  - alpha_y ~ |N(0, max(var_head - var_y, 0))| per positive RoI of a tail class (LVIS rare +
    common), 0 for head classes: each class's angular variance var_y is a running average
    (momentum 0.1) of the variance of theta_y over its positives, var_head the mean over head
    classes; "learnable" is read as "estimated online", not meta-learned. Eq. 7 as printed also
    adds alpha_y to the non-target angles; we read that as a slip (LEAP perturbs the target);
  - the background class has a weight row like any class and gets neither margin nor alpha;
  - the classifier is mmdet's NormedLinear (cosine, temperature s, no bias) at training and
    test time, so test scores are softmax(s * cos); with m_a = 0 and no transfer the training
    logits are exactly the cosine classifier's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.feature import ClassifierBatch, FeaturePlugin


class LiuArgs(MethodArgs):
    s: float = Field(20.0, gt=0.0)
    m_a: float = Field(0.1, ge=0.0, lt=math.pi)
    transfer: bool = True
    momentum: float = Field(0.1, gt=0.0, le=1.0)


def cosine(x: Tensor, weight: Tensor) -> Tensor:
    """[N, K] cosine between every row of x [N, d] and every weight row [K, d]."""
    return F.normalize(x, dim=1) @ F.normalize(weight, dim=1).T


def margin_logits(cos: Tensor, labels: Tensor, positive: Tensor, extra: Tensor, s: float, m_a: float) -> Tensor:
    """s * cos, with the target entry of positive rows replaced by s * cos(theta_y + extra + m_a)."""
    rows = positive.nonzero().squeeze(1)
    logits = s * cos
    if rows.numel():
        target = cos[rows, labels[rows]].clamp(-1 + 1e-7, 1 - 1e-7)
        angle = (torch.acos(target) + extra[rows] + m_a).clamp_max(math.pi)
        logits = logits.index_put((rows, labels[rows]), s * torch.cos(angle))
    return logits


@register_method("liu", table="2", summary="Deep feature augmentation with margins (Liu et al., CVPR'20)",
                 args=LiuArgs, changes=("classifier: cosine (NormedLinear, temperature s)",
                                        "classifier loss: angular margin + transferred angle (box head plug-in)"))
class Liu(FeaturePlugin):
    def __init__(self, args: LiuArgs, num_classes, feat_dim, class_counts, class_frequency=None):
        super().__init__(args, num_classes, feat_dim, class_counts, class_frequency)
        self.register_buffer("angle_mean", torch.zeros(num_classes))
        self.register_buffer("angle_var", torch.zeros(num_classes))
        self.register_buffer("angle_seen", torch.zeros(num_classes, dtype=torch.bool))

    @staticmethod
    def edit_run(edit, args: LiuArgs) -> None:
        edit.bbox_head["cls_predictor_cfg"] = dict(type="NormedLinear", tempearture=args.s, bias=False)

    @torch.no_grad()
    def _update_angles(self, angle: Tensor, labels: Tensor) -> None:
        counts = torch.bincount(labels, minlength=self.num_classes)
        present = counts > 1  # a variance needs two angles
        total = torch.zeros(self.num_classes, device=angle.device).index_add_(0, labels, angle)
        mean = total / counts.clamp_min(1)
        sq = torch.zeros(self.num_classes, device=angle.device).index_add_(0, labels, (angle - mean[labels]) ** 2)
        var = sq / (counts - 1).clamp_min(1)
        m = torch.where(self.angle_seen, torch.full_like(mean, self.args.momentum), torch.ones_like(mean))
        self.angle_mean.copy_(torch.where(present, torch.lerp(self.angle_mean, mean, m), self.angle_mean))
        self.angle_var.copy_(torch.where(present, torch.lerp(self.angle_var, var, m), self.angle_var))
        self.angle_seen |= present

    def transferred_angle(self, labels: Tensor) -> Tensor:
        """alpha per RoI: |N(0, max(var_head - var_y, 0))| for tail classes, else 0."""
        head = ~self.tail & self.angle_seen
        if not bool(head.any()):
            return torch.zeros(labels.shape, device=labels.device)
        var_head = self.angle_var[head].mean()
        gap = (var_head - self.angle_var).clamp_min(0) * (self.tail & self.angle_seen)
        std = gap.sqrt()[labels.clamp_max(self.num_classes - 1)]
        return (torch.randn(labels.shape, device=labels.device) * std).abs()

    def cls_loss(self, batch: ClassifierBatch) -> Tensor:
        cos = cosine(batch.features, batch.classifier.weight)
        positive = batch.positive
        labels = batch.labels
        pos_rows = positive.nonzero().squeeze(1)
        self._update_angles(torch.acos(cos.detach()[pos_rows, labels[pos_rows]].clamp(-1, 1)), labels[pos_rows])
        extra = self.transferred_angle(labels) * positive if self.args.transfer else torch.zeros_like(cos[:, 0])
        logits = margin_logits(cos, labels, positive, extra, self.args.s, self.args.m_a)
        return batch.rois_loss(logits, labels, batch.weights)
