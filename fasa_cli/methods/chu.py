"""Chu et al., ECCV 2020, "Feature Space Augmentation for Long-Tailed Data", re-implemented
on RoI features as FASA describes it (no official code).

A tail sample's class-specific features are fused with the class-generic features of samples
from its most confusing classes; the fused feature is classified as the tail class. Class
activation maps split a feature into the two parts: with T_s = 0.3 (class-specific: activation
above it) and T_g = 0.6 (class-generic: activation below it), Table 14.

Choices where the papers are silent, or where an RoI head differs from an image classifier:
  - the box head's fc_cls input is a vector, with no spatial map to take a CAM over; the map is
    taken over its channels instead: cam_k = ReLU(w_{y,k} * x_k), min-max normalised to [0, 1]
    per RoI (for a linear classifier on pooled features this is the CAM's per-channel term);
  - fused = x_t where cam_t > T_s, else x_p where cam_p < T_g (the partner's own class-specific
    channels dropped), else 0;
  - confusing classes: the N_f = 3 classes with the highest running-mean softmax score on the
    positives of each class (momentum 0.1), its own class excluded;
  - partners: up to N_a = 3 positives of those classes drawn from the same batch, as FASA's
    re-implementation does ("no guarantee that the top confusing categories will appear in the
    same batch"); `partners: bank` draws them from a per-class FIFO bank instead;
  - tail = LVIS rare + common; fused features are detached and weighted 0.1, like FASA's;
  - the two phases share one schedule: phase I (epoch 0) trains normally, phase II (from
    `start_epoch` = 1) adds the fused features while every layer keeps training (the same total
    epochs as the baseline); `freeze_in_phase_two: true` trains only fc_cls in phase II, as
    Chu's phase II fine-tunes the classifier.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.feature import ClassBank, ClassifierBatch, FeaturePlugin


class ChuArgs(MethodArgs):
    T_s: float = Field(0.3, ge=0.0, le=1.0)
    T_g: float = Field(0.6, ge=0.0, le=1.0)
    n_f: int = Field(3, ge=1)
    n_a: int = Field(3, ge=1)
    momentum: float = Field(0.1, gt=0.0, le=1.0)
    loss_weight: float = Field(0.1, ge=0.0)
    start_epoch: int = Field(1, ge=0)
    partners: Literal["batch", "bank"] = "batch"
    bank_size: int = Field(8, ge=1)
    freeze_in_phase_two: bool = False


def channel_cam(x: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """[N, d] activation of each channel for each row's class, min-max normalised per row."""
    act = (x * weight[labels]).relu()
    low = act.min(dim=1, keepdim=True).values
    high = act.max(dim=1, keepdim=True).values
    return (act - low) / (high - low).clamp_min(1e-12)


def fuse(x_tail: Tensor, cam_tail: Tensor, x_partner: Tensor, cam_partner: Tensor, t_s: float, t_g: float) -> Tensor:
    """The tail's class-specific channels, the partner's class-generic ones elsewhere, else 0."""
    generic = torch.where(cam_partner < t_g, x_partner, torch.zeros_like(x_partner))
    return torch.where(cam_tail > t_s, x_tail, generic)


def pick_partners(valid: Tensor, n_a: int) -> tuple[Tensor, Tensor]:
    """Up to n_a random True columns per row of valid [A, K]: (anchor rows, columns) of the pairs."""
    keys = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, -1.0)
    top, cols = keys.topk(min(n_a, valid.shape[1]), dim=1)
    rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(cols)
    chosen = top >= 0
    return rows[chosen], cols[chosen]


@register_method("chu", table="2", summary="Feature space augmentation for long-tailed data (Chu et al., ECCV'20)",
                 args=ChuArgs, changes=("classifier loss: fused tail features (box head plug-in)",
                                        "optional second stage: only fc_cls trains in phase II"))
class Chu(FeaturePlugin):
    def __init__(self, args: ChuArgs, num_classes, feat_dim, class_counts, class_frequency=None):
        super().__init__(args, num_classes, feat_dim, class_counts, class_frequency)
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes))
        self.register_buffer("confusion_seen", torch.zeros(num_classes, dtype=torch.bool))
        self.bank = ClassBank(num_classes, args.bank_size, feat_dim) if args.partners == "bank" else None
        self.fused = 0

    @staticmethod
    def edit_run(edit, args: ChuArgs) -> None:
        if args.freeze_in_phase_two:
            edit.second_stage(args.start_epoch, trainable=("roi_head.bbox_head.fc_cls",))

    @torch.no_grad()
    def _update_confusion(self, scores: Tensor, labels: Tensor) -> None:
        probs = scores[:, : self.num_classes].float().softmax(dim=1)
        counts = torch.bincount(labels, minlength=self.num_classes)
        present = counts > 0
        mean = torch.zeros_like(self.confusion).index_add_(0, labels, probs) / counts.clamp_min(1)[:, None]
        m = torch.where(self.confusion_seen, self.args.momentum, 1.0)[:, None]
        self.confusion.copy_(torch.where(present[:, None], torch.lerp(self.confusion, mean, m), self.confusion))
        self.confusion_seen |= present

    def confusing_classes(self) -> Tensor:
        """[C, N_f] the most confused-with classes of each class (itself excluded)."""
        scores = self.confusion.clone()
        scores.fill_diagonal_(-1.0)
        return scores.topk(min(self.args.n_f, self.num_classes - 1), dim=1).indices

    def losses(self, batch: ClassifierBatch) -> dict[str, Tensor]:
        positive = batch.positive
        x, labels = batch.features[positive].detach(), batch.labels[positive]
        self._update_confusion(batch.cls_score.detach()[positive], labels)
        zero = batch.classifier(x[:0]).sum() * 0.0
        if self.epoch < self.args.start_epoch or self.num_classes < 2:
            self._push(x, labels)
            return {"chu": zero}
        anchor = (self.tail[labels] & self.confusion_seen[labels]).nonzero().squeeze(1)
        confusing = self.confusing_classes()[labels[anchor]]                      # [A, N_f]
        if self.bank is None:   # partners from the batch's positives of a confusing class
            valid = (labels[None, :, None] == confusing[:, None, :]).any(dim=2)  # [A, P]
            rows, cols = pick_partners(valid, self.args.n_a)
            partner_x, partner_y = x[cols], labels[cols]
        else:                   # partners from the bank slots of the confusing classes
            valid = self.bank.valid(confusing).flatten(1)                         # [A, N_f * M]
            rows, cols = pick_partners(valid, self.args.n_a)
            cls = confusing[rows, cols // self.bank.size]
            partner_x, partner_y = self.bank.features[cls, cols % self.bank.size], cls
        self._push(x, labels)
        if rows.numel() == 0:
            return {"chu": zero}
        weight = batch.classifier.weight.detach()
        tail_x, tail_y = x[anchor[rows]], labels[anchor[rows]]
        fused = fuse(tail_x, channel_cam(tail_x, weight, tail_y), partner_x,
                     channel_cam(partner_x, weight, partner_y), self.args.T_s, self.args.T_g)
        self.fused += int(tail_y.numel())
        logits = batch.classifier(fused)
        return {"chu": self.args.loss_weight * batch.samples_loss(logits, tail_y)}

    def _push(self, x: Tensor, labels: Tensor) -> None:
        if self.bank is not None:
            self.bank.push(x, labels)
