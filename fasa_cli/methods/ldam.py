"""LDAM-DRW (Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with Label-Distribution-
Aware Margin Loss"), the Table 7 baseline FASA is added to; kaidic/LDAM-DRW read for facts.

  margins   m_j = K / n_j^(1/4), K chosen so the largest margin (the rarest class's) is max_m = 0.5
  loss      cross-entropy on s * (z - m_y e_y): the true class's logit lowered by its margin, s = 30
  classifier cosine: normalised feature times normalised class weights, no bias (LDAM's NormedLinear)
  DRW       deferred re-weighting: class weights (1 - beta) / (1 - beta^n_j), beta = 0.9999, normalised
            to sum to C, from epoch 160 of 200 (`drw_start` = 0.8 of the schedule); all 1 before

Inference takes the cosine logits without margins. The validation signal FASA adapts on is the
per-sample LDAM loss without the DRW weights (weights would make the signal jump at the switch).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.cls_api import ClassifierPart, ClsRunEdit, LossPart

COSINE = f"{__name__}:CosineClassifier"
LDAM_LOSS = f"{__name__}:LDAMLoss"


class LDAMArgs(MethodArgs):
    max_m: float = Field(0.5, gt=0.0)
    s: float = Field(30.0, gt=0.0)
    drw: bool = True
    drw_beta: float = Field(0.9999, ge=0.0, lt=1.0)
    drw_start: float = Field(0.8, ge=0.0, le=1.0)  # share of the schedule before re-weighting


def ldam_margins(class_counts: Sequence[int] | Tensor, max_m: float = 0.5) -> Tensor:
    """[C] margins proportional to n^(-1/4), the largest equal to max_m."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1.0)
    margins = counts.pow(-0.25)
    return (margins * (max_m / margins.max())).float()


def drw_weights(class_counts: Sequence[int] | Tensor, beta: float = 0.9999) -> Tensor:
    """[C] class-balanced weights (1 - beta) / (1 - beta^n), normalised to sum to C."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1.0)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * counts.numel()).float()


class CosineClassifier(ClassifierPart):
    """Cosine logits cos(x, w_c) in [-1, 1]: LDAM's NormedLinear (weights stored [C, d])."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.out_features = in_features, num_classes
        weight = torch.empty(num_classes, in_features).uniform_(-1.0, 1.0)
        self.weight = nn.Parameter(F.normalize(weight, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


class LDAMLoss(LossPart):
    """LDAM on cosine logits, with DRW class weights from epoch `drw_from` (None: never)."""

    def __init__(self, class_counts: Sequence[int], max_m: float = 0.5, s: float = 30.0,
                 drw_from: int | None = None, drw_beta: float = 0.9999):
        super().__init__(class_counts)
        self.s, self.drw_from = float(s), drw_from
        self.register_buffer("margins", ldam_margins(class_counts, max_m), persistent=False)
        self.register_buffer("drw", drw_weights(class_counts, drw_beta), persistent=False)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        deferred = self.drw_from is not None and self.epoch >= self.drw_from
        self.class_weight.copy_(self.drw if deferred else torch.ones_like(self.drw))

    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        shifted = logits.float() - F.one_hot(labels, logits.shape[1]) * self.margins[labels, None]
        return F.cross_entropy(self.s * shifted, labels, reduction="none")


def use_ldam(view: ClsRunEdit, args: LDAMArgs, drw: bool | None = None) -> None:
    """Cosine classifier + LDAM loss (+ DRW unless `drw` says otherwise): also M2m's `loss: ldam`."""
    deferred = args.drw if drw is None else drw
    view.model["classifier"] = dict(type=COSINE)
    view.model["loss"] = dict(type=LDAM_LOSS, max_m=args.max_m, s=args.s, drw_beta=args.drw_beta,
                              drw_from=view.epoch_at(args.drw_start) if deferred else None)


@register_method("ldam", table="7,10,11", summary="LDAM loss with deferred re-weighting (Cao et al., NeurIPS'19)",
                 args=LDAMArgs, task="classification",
                 changes=("classifier: cosine (normalised) classifier", "loss: LDAM margins, scale s",
                          "loss weights: class-balanced (DRW) from 0.8 of the schedule"))
def ldam(view: ClsRunEdit, args: LDAMArgs) -> None:
    use_ldam(view, args)
