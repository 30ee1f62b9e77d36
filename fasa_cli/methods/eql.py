"""Equalization loss v1 (Tan et al., CVPR 2020), as eqlv2's `EQL(version="v1")` configures it
for LVIS v1 (METHODS.md, Part 2 A). mmdet 3.3 has only EQLv2, so v1 is a registered loss
(fasa_cli.mmdet_ext.cls_losses.EQLv1Loss) over this plain-PyTorch math.

Sigmoid cross-entropy over the C class logits, no background logit (a background RoI's targets
are all zero). The weight of RoI i and class j is

    w_ij = 1 - E(i) * T(j) * (1 - y_ij),   E(i) = 1 for a foreground RoI, T(j) = 1 for a tail class,

so a foreground RoI of another class does not push a tail class's logit down; background RoIs
still do. Loss = sum_ij w_ij * BCE_ij / #RoIs. A tail class has an image frequency below
lambda = 0.0011 on LVIS v1 (eqlv2; 815 of 1203 classes). fc_cls has C outputs with its bias
initialised at the prior 0.001 (b = -log((1 - p) / p)); at test time the scores are the
sigmoids plus a zero background column. Uniform image sampling, 24 epochs (Table 4).

On data other than LVIS the threshold is scaled (fasa_cli.methods._scaling): the image count
below which 815/1203 of the classes fall on the data's log image-count range
(`thresholds: class_share`, `tail_share`); `thresholds: lvis` uses lambda on the image
frequency (image count / training images), as on LVIS.

With FASA, virtual features go through the same loss as foreground RoIs (E = 1), so their
negative gradients on tail classes are dropped exactly as for real foreground RoIs; the loss
has no running state.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from fasa_cli.methods._scaling import EQL_TAIL_SHARE, ThresholdRule, class_share_threshold, resolve_rule
from fasa_cli.methods.api import MethodArgs, register_method


class EQLArgs(MethodArgs):
    lambda_: float = Field(0.0011, ge=0.0, le=1.0)      # image-frequency threshold (LVIS v1)
    tail_share: float = Field(EQL_TAIL_SHARE, ge=0.0, le=1.0)  # scaled: share of classes below it
    thresholds: ThresholdRule = "auto"
    bias_prior: float = Field(0.001, gt=0.0, lt=1.0)


def tail_classes(image_counts: Sequence[int], train_images: int, args: EQLArgs, dataset: str) -> list[bool]:
    """T(j) per class: True for the classes whose negative gradients EQL suppresses."""
    if resolve_rule(args.thresholds, dataset) == "lvis":
        if train_images <= 0:
            raise ValueError("EQL's lambda needs the number of training images")
        return [c / train_images < args.lambda_ for c in image_counts]
    threshold = class_share_threshold(image_counts, args.tail_share)
    return [c < threshold for c in image_counts]


def one_hot_targets(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """[N, C] sigmoid targets: one-hot for a foreground label, all zero for background (= C)."""
    return F.one_hot(labels.clamp(0, num_classes), num_classes + 1)[:, :num_classes].to(dtype)


def eql_v1_weights(labels: Tensor, tail: Tensor) -> Tensor:
    """[N, C] w_ij for labels [N] (background = C) and the tail mask [C] (bool)."""
    num_classes = tail.numel()
    foreground = ((labels >= 0) & (labels < num_classes)).float()
    targets = one_hot_targets(labels, num_classes, torch.float32)
    return 1.0 - foreground[:, None] * tail.float()[None, :] * (1.0 - targets)


def eql_v1_roi_loss(logits: Tensor, labels: Tensor, tail: Tensor) -> Tensor:
    """[N] sum over classes of w_ij * BCE_ij for logits [N, C]."""
    targets = one_hot_targets(labels, tail.numel(), logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * eql_v1_weights(labels, tail).to(logits.dtype)).sum(dim=1)


def sigmoid_scores(logits: Tensor) -> Tensor:
    """[N, C + 1] test-time scores: the class sigmoids and a zero background column."""
    probs = logits.sigmoid()
    return torch.cat([probs, probs.new_zeros(probs.shape[0], 1)], dim=1)


def classifier_init_with_prior(prior: float) -> list[dict]:
    """Shared2FCBBoxHead's default init_cfg (mmdet BBoxHead + ConvFCBBoxHead) with fc_cls's
    bias at the prior probability (mmengine: bias = -log((1 - p) / p))."""
    return [dict(type="Normal", std=0.01, bias_prob=prior, override=dict(name="fc_cls")),
            dict(type="Normal", std=0.001, override=dict(name="fc_reg")),
            dict(type="Xavier", distribution="uniform",
                 override=[dict(name="shared_fcs"), dict(name="cls_fcs"), dict(name="reg_fcs")])]


@register_method("eql", table="4", summary="Equalization loss v1 (Tan et al., 2020)", args=EQLArgs,
                 changes=("classifier: C sigmoid outputs, bias prior 0.001",
                          "classification loss: EQL v1 (tail classes get no negative gradient from other classes' RoIs)"))
def eql(edit, args: EQLArgs) -> None:
    head = edit.bbox_head
    tail = tail_classes(edit.image_counts, edit.train_images, args, edit.run.dataset)
    head["loss_cls"] = dict(type="EQLv1Loss", num_classes=len(edit.class_counts), tail=tail, loss_weight=1.0)
    if head.get("init_cfg") is not None:
        raise ValueError("EQL sets the box head's init_cfg; another edit already set it")
    head["init_cfg"] = classifier_init_with_prior(args.bias_prior)
