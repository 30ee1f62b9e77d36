"""Seesaw loss (Wang et al., CVPR 2021) as mmdet 3.3 configures it for LVIS v1
(`configs/seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_sample1e-3-ms-2x_lvis-v1.py`):
`SeesawLoss(p=0.8, q=2.0, eps=1e-2)` on a cosine classifier `NormedLinear(tempearture=20)`
with C + 2 outputs (C classes + a [foreground, background] objectness pair), and repeat factor
sampling (threshold 1e-3), 24 epochs (Table 4).

The loss is mmdet's own, through a registered subclass
(fasa_cli.mmdet_ext.cls_losses.SourceAwareSeesawLoss) that only changes which RoIs its
running class counts (`cum_samples`, the mitigation factor's N) see: the real RoIs by default,
never the per-epoch validation pass of FASA, and FASA's virtual features only with
`count_virtual: true` (the paper is silent; counting them would weaken the mitigation for the
classes FASA oversamples). With FASA, virtual features go through the normalised classifier and
the same Seesaw loss (both terms, objectness with foreground targets), weighted 0.1.
"""

from __future__ import annotations

from pydantic import Field

from fasa_cli.methods.api import register_method
from fasa_cli.methods.rfs import RFSSampling, wrap_with_rfs


class SeesawArgs(RFSSampling):
    p: float = Field(0.8, ge=0.0)
    q: float = Field(2.0, ge=0.0)
    eps: float = Field(1e-2, gt=0.0)
    temperature: float = Field(20.0, gt=0.0)
    count_virtual: bool = False


@register_method("seesaw", table="4,5", summary="Seesaw loss, p=0.8 q=2.0 (Wang et al., 2021)", args=SeesawArgs,
                 changes=("classifier: NormedLinear (temperature 20), C + 2 outputs",
                          "classification loss: Seesaw (mmdet), class counts from real RoIs",
                          "training set: RFS"))
def seesaw(edit, args: SeesawArgs) -> None:
    head = edit.bbox_head
    head["cls_predictor_cfg"] = dict(type="NormedLinear", tempearture=args.temperature)
    head["loss_cls"] = dict(type="SourceAwareSeesawLoss", p=args.p, q=args.q, eps=args.eps,
                            num_classes=len(edit.class_counts), loss_weight=1.0,
                            count_virtual=args.count_virtual)
    wrap_with_rfs(edit, args)
