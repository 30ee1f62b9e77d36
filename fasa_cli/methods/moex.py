"""MoEx, moment exchange (Li et al., CVPR 2021), "applied in the classifier" as FASA does.

With probability p per batch, the classifier input of every sampled RoI is normalised by its
own moments and given those of another RoI of the batch (a random permutation):
x_mix = (x_i - mu_i) / sigma_i * sigma_j + mu_j, sigma = sqrt(var + eps); the classification
loss becomes lam * L(fc_cls(x_mix), y_i) + (1 - lam) * L(fc_cls(x_mix), y_j) and replaces the
clean one (as in MoEx's own code). Table 14: p = 1.0, eps = 1e-5. Choices where the papers are
silent:
  - the moments are taken over the feature dimensions of each RoI's fc_cls input (PONO on a
    1x1 map, i.e. LayerNorm statistics; MoEx's advice for non-image features);
  - every sampled RoI takes part, background included (the classification loss covers them);
  - lam = 0.9, MoEx's ImageNet default (FASA does not report it);
  - the box regression branch is untouched; the accuracy logged is the clean one.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.feature import ClassifierBatch, FeaturePlugin


class MoExArgs(MethodArgs):
    p: float = Field(1.0, ge=0.0, le=1.0)
    eps: float = Field(1e-5, gt=0.0)
    lam: float = Field(0.9, ge=0.0, le=1.0)


def moment_exchange(x: Tensor, perm: Tensor, eps: float) -> Tensor:
    """x [N, d] with each row's mean and std (over d) swapped for those of row perm[i]."""
    mean = x.mean(dim=1, keepdim=True)
    std = (x.var(dim=1, keepdim=True, unbiased=False) + eps).sqrt()
    return (x - mean) / std * std[perm] + mean[perm]


@register_method("moex", table="2", summary="MoEx moment exchange in the classifier (Li et al., CVPR'21)",
                 args=MoExArgs, changes=("classifier loss: exchanged moments, mixed targets (box head plug-in)",))
class MoEx(FeaturePlugin):
    def cls_loss(self, batch: ClassifierBatch) -> Tensor | None:
        p, n = self.args.p, batch.features.shape[0]
        if p == 0.0 or n < 2 or (p < 1.0 and bool(torch.rand((), device=batch.features.device) >= p)):
            return None  # the clean loss stays
        perm = torch.randperm(n, device=batch.features.device)
        logits = batch.classifier(moment_exchange(batch.features, perm, self.args.eps))
        lam = self.args.lam
        return (lam * batch.rois_loss(logits, batch.labels, batch.weights)
                + (1.0 - lam) * batch.rois_loss(logits, batch.labels[perm], batch.weights[perm]))
