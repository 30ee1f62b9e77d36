"""NMS re-sampling (Forest R-CNN, fasa_cli.methods.nms_resample) as mmdet modules: a Mask R-CNN
(or Cascade R-CNN) that hands its RPN the ground truth's class labels for one training forward (mmdet gives the
RPN labels set to 0), and an RPN head whose training-time proposal NMS depends on the frequency
group of the ground truth each proposal is near. Without labels (test time) the RPN is mmdet's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.models.detectors import CascadeRCNN, MaskRCNN
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor, get_box_wh
from mmcv.ops import batched_nms

from fasa_cli.methods.nms_resample import GROUPS, near_groups, resampled_keep


class _LendsLabelsToRPN:
    """A two-stage detector whose training forward lends the RPN head the ground-truth labels."""

    def loss(self, batch_inputs, batch_data_samples):
        self.rpn_head.class_labels = [s.gt_instances.labels for s in batch_data_samples]
        try:
            return super().loss(batch_inputs, batch_data_samples)
        finally:
            self.rpn_head.class_labels = None


@MODELS.register_module()
class NMSResamplingMaskRCNN(_LendsLabelsToRPN, MaskRCNN):
    """MaskRCNN for NMS re-sampling."""


@MODELS.register_module()
class NMSResamplingCascadeRCNN(_LendsLabelsToRPN, CascadeRCNN):
    """CascadeRCNN for NMS re-sampling."""


@MODELS.register_module()
class NMSResamplingRPNHead(RPNHead):
    """RPNHead with Forest R-CNN's discrete NMS re-sampling on training proposals.

    Extra args: `class_frequency` (r / c / f per class), `group_iou_thresholds` (rare, common,
    frequent), `near_iou` (a proposal is near a ground truth from this IoU on)."""

    def __init__(self, *args, class_frequency: Sequence[str], group_iou_thresholds: Sequence[float] = (0.9, 0.8, 0.7),
                 near_iou: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        unknown = sorted(set(class_frequency) - set(GROUPS))
        if unknown:
            raise ValueError(f"class_frequency letters must be r, c or f; got {unknown}")
        if len(group_iou_thresholds) != len(GROUPS):
            raise ValueError("group_iou_thresholds needs one IoU per group: rare, common, frequent")
        self.class_group = torch.tensor([GROUPS.index(f) for f in class_frequency], dtype=torch.long)
        self.group_iou_thresholds = tuple(float(t) for t in group_iou_thresholds)
        self.near_iou = float(near_iou)
        self.class_labels: list[torch.Tensor] | None = None   # set by the detector for one forward
        self._ground_truth: dict[int, tuple] | None = None   # id(img_meta) -> (boxes, labels)

    def loss_and_predict(self, x, batch_data_samples, proposal_cfg=None):
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(batch_data_samples)
        outs = self(x)
        losses = self.loss_by_feat(*outs, gt_instances, img_metas, gt_ignore)
        if self.class_labels is not None:
            self._ground_truth = {id(meta): (get_box_tensor(gt.bboxes), labels)
                                  for meta, gt, labels in zip(img_metas, gt_instances, self.class_labels)}
        try:
            predictions = self.predict_by_feat(*outs, batch_img_metas=img_metas, cfg=proposal_cfg)
        finally:
            self._ground_truth = None
        return losses, predictions

    def _bbox_post_process(self, results, cfg, rescale=False, with_nms=True, img_meta=None):
        truth = None if self._ground_truth is None else self._ground_truth.get(id(img_meta))
        if truth is None or rescale:
            return super()._bbox_post_process(results, cfg, rescale=rescale, with_nms=with_nms, img_meta=img_meta)
        if cfg.get("min_bbox_size", -1) >= 0:  # as mmdet's RPN does before its NMS
            w, h = get_box_wh(results.bboxes)
            results = results[(w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)]
        if results.bboxes.numel() == 0:
            return super()._bbox_post_process(results, cfg, rescale=rescale, with_nms=with_nms, img_meta=img_meta)
        boxes = get_box_tensor(results.bboxes)
        keep = self.resample(boxes, results.scores, results.level_ids, *truth)
        results = results[keep][: cfg.max_per_img]
        results.labels = results.scores.new_zeros(len(results), dtype=torch.long)
        del results.level_ids
        return results

    def resample(self, boxes, scores, level_ids, gt_boxes, gt_labels) -> torch.Tensor:
        """Indices of the proposals kept, best score first."""
        kept = torch.zeros(len(GROUPS), boxes.shape[0], dtype=torch.bool, device=boxes.device)
        for group, threshold in enumerate(self.group_iou_thresholds):  # three NMS passes, one per group
            _, index = batched_nms(boxes, scores, level_ids, dict(type="nms", iou_threshold=threshold))
            kept[group, index] = True
        gt_groups = self.class_group.to(boxes.device)[gt_labels]
        near = near_groups(bbox_overlaps(boxes, gt_boxes.to(boxes.dtype)), gt_groups, self.near_iou)
        chosen = resampled_keep(kept, near).nonzero().squeeze(1)
        order = torch.sort(scores[chosen], descending=True, stable=True).indices
        return chosen[order]
