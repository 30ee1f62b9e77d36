"""NMS re-sampling (Forest R-CNN, Wu et al., ACM MM 2020; JialianW/Forest_RCNN), Table 15, in
its discrete form `['discrete', 0.9, 0.8, 0.7]`: during training only, the RPN's proposals
go through NMS three times, with IoU thresholds 0.9 / 0.8 / 0.7 (per FPN level, like the RPN's
own NMS). From the 0.9 set it keeps the proposals with IoU >= 0.3 to some rare-class ground
truth, from the 0.8 set those with IoU >= 0.3 to a common-class one, from the 0.7 set all others
(those near no rare or common ground truth), and takes the union, best scores first, up to the
RPN's max_per_img. Rare / common / frequent are the dataset's own frequency letters (Forest
R-CNN hard-codes LVIS v0.5 ids); the embedded data's letters already come from its scaled
thresholds, so nothing else needs scaling. Test-time proposals are unchanged.

mmdet glue (fasa_cli.mmdet_ext.nms_resampling): the detector hands the RPN its class labels
(mmdet zeroes them for the RPN) and the RPN head applies `resampled_keep` in its post-process.
With FASA: independent (proposals vs. classifier features); both run.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from fasa_cli.methods.api import MethodArgs, register_method

GROUPS = ("r", "c", "f")  # group index per frequency letter
# The registered detectors (fasa_cli.mmdet_ext.nms_resampling) that lend their RPN the labels.
DETECTORS = {"MaskRCNN": "NMSResamplingMaskRCNN", "CascadeRCNN": "NMSResamplingCascadeRCNN"}


class NMSResamplingArgs(MethodArgs):
    thresholds: tuple[float, float, float] = (0.9, 0.8, 0.7)   # rare, common, frequent
    near_iou: float = Field(0.3, gt=0.0, le=1.0)


def near_groups(ious: Tensor, gt_groups: Tensor, near_iou: float) -> Tensor:
    """[P, 2] bool: proposal near (IoU >= near_iou) some rare / some common ground truth.

    ious [P, G] proposal-to-ground-truth IoU; gt_groups [G] 0 rare, 1 common, 2 frequent."""
    near = ious >= near_iou
    rare = (near & (gt_groups == 0)[None, :]).any(dim=1)
    common = (near & (gt_groups == 1)[None, :]).any(dim=1)
    return torch.stack([rare, common], dim=1)


def resampled_keep(kept: Tensor, near: Tensor) -> Tensor:
    """[P] bool: the proposals NMS re-sampling keeps.

    kept [3, P]: survived the rare / common / frequent threshold's NMS; near [P, 2]: near a
    rare / common ground truth."""
    rare, common = near[:, 0], near[:, 1]
    return (kept[0] & rare) | (kept[1] & common) | (kept[2] & ~rare & ~common)


@register_method("nms_resampling", table="15", summary="NMS re-sampling (Wu et al., 2020)", args=NMSResamplingArgs,
                 changes=("RPN proposals in training: NMS IoU 0.9 / 0.8 / 0.7 near rare / common / other ground truth",))
def nms_resampling(edit, args: NMSResamplingArgs) -> None:
    model = edit.cfg["model"]
    if model["type"] not in DETECTORS or model["rpn_head"]["type"] != "RPNHead":
        raise ValueError(f"NMS re-sampling is built for {', '.join(DETECTORS)} with an RPNHead; got "
                         f"{model['type']} with {model['rpn_head']['type']}")
    model["type"] = DETECTORS[model["type"]]
    model["rpn_head"].update(type="NMSResamplingRPNHead", class_frequency=list(edit.frequency),
                             group_iou_thresholds=list(args.thresholds), near_iou=args.near_iou)
