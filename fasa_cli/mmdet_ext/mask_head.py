"""FCNMaskHead with a faster test-time paste on CPU, bit-identical to mmdet's.

On CPU, mmdet pastes each detection's mask on its own: one `_do_paste_mask` call per
detection, each restricted to the box's region. On the compact profile that Python loop is a
large share of inference. Here detections are pasted in chunks through mmdet's own
`_do_paste_mask` over the chunk's common region, and each detection then keeps only the
pixels of its own region, as the one-by-one paste does. A pixel's grid value and bilinear
sample depend on that pixel alone (basic IEEE arithmetic, no transcendental), so every kept
value is the same float; tests/backend/test_mask_paste.py checks it.
"""

from __future__ import annotations

import torch
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead, _do_paste_mask
from mmdet.registry import MODELS
from torch import Tensor

# Pixels of one chunk's pasted masks (float32): 2^20 is 4 MB. A 128 x 128 image pastes 64
# detections per chunk; an image above 1024 x 1024 pastes one at a time, as mmdet does.
PASTE_CHUNK_PIXELS = 1 << 20


def own_regions(boxes: Tensor, img_h: int, img_w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each box's paste region (x0, y0, x1, y1) as `_do_paste_mask` computes it for that box alone."""
    x0 = torch.clamp(boxes[:, 0].floor() - 1, min=0).to(torch.int32)
    y0 = torch.clamp(boxes[:, 1].floor() - 1, min=0).to(torch.int32)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w).to(torch.int32)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h).to(torch.int32)
    return x0, y0, x1, y1


def paste_masks(masks: Tensor, boxes: Tensor, img_h: int, img_w: int, threshold: float,
                chunk_pixels: int = PASTE_CHUNK_PIXELS) -> Tensor:
    """(N, img_h, img_w) pasted masks, equal to mmdet's one-by-one CPU paste: bool above
    `threshold` when it is >= 0, else uint8 probabilities x 255."""
    n = len(masks)
    dtype = torch.bool if threshold >= 0 else torch.uint8
    out = torch.zeros(n, img_h, img_w, device=masks.device, dtype=dtype)
    if n == 0:
        return out
    regions = own_regions(boxes, img_h, img_w)
    per_chunk = max(1, chunk_pixels // max(1, img_h * img_w))
    for start in range(0, n, per_chunk):
        inds = slice(start, min(start + per_chunk, n))
        values, (rows, cols) = _do_paste_mask(masks[inds], boxes[inds], img_h, img_w, skip_empty=True)
        if threshold >= 0:
            values = values >= threshold
        else:
            values = (values * 255).to(torch.uint8)
        x0, y0, x1, y1 = (r[inds].view(-1, 1, 1) for r in regions)
        ys = torch.arange(rows.start, rows.stop, device=masks.device).view(1, -1, 1)
        xs = torch.arange(cols.start, cols.stop, device=masks.device).view(1, 1, -1)
        inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        out[inds, rows, cols] = torch.where(inside, values, torch.zeros((), dtype=dtype))
    return out


@MODELS.register_module()
class BatchedPasteMaskHead(FCNMaskHead):
    """mmdet's FCNMaskHead; on CPU its test-time paste goes through `paste_masks`."""

    def _predict_by_feat_single(self, mask_preds: Tensor, bboxes: Tensor, labels: Tensor,
                                img_meta: dict, rcnn_test_cfg, rescale: bool = False,
                                activate_map: bool = False) -> Tensor:
        if bboxes.device.type != "cpu" or activate_map:
            return super()._predict_by_feat_single(mask_preds, bboxes, labels, img_meta,
                                                   rcnn_test_cfg, rescale, activate_map)
        # Sigmoid before the class pick, as mmdet: torch's vector and scalar exp may differ
        # in the last bit, and which elements fall in a vector's tail depends on the shape.
        mask_preds = mask_preds.sigmoid()
        if not self.class_agnostic:
            mask_preds = mask_preds[torch.arange(len(mask_preds)), labels][:, None]
        scale_factor = bboxes.new_tensor(img_meta["scale_factor"]).repeat((1, 2))
        img_h, img_w = (int(v) for v in img_meta["ori_shape"][:2])
        if rescale:
            bboxes /= scale_factor  # in place, as mmdet does
        else:
            img_h = int(round(img_h * scale_factor[0, 1].item()))
            img_w = int(round(img_w * scale_factor[0, 0].item()))
        return paste_masks(mask_preds, bboxes, img_h, img_w, rcnn_test_cfg.mask_thr_binary)
