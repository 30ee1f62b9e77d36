"""BatchedPasteMaskHead's test-time masks equal mmdet's FCNMaskHead's bit for bit on CPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from mmengine.config import ConfigDict  # noqa: E402
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead  # noqa: E402

from fasa_cli.mmdet_ext.mask_head import BatchedPasteMaskHead, paste_masks  # noqa: E402


def _boxes(n: int, img_h: int, img_w: int, g: torch.Generator) -> torch.Tensor:
    """Boxes of every size starting inside the image (mmdet's paste fails on a box wholly
    outside it; the box head clips them), some running past its edges, some degenerate."""
    x1y1 = torch.rand(n, 2, generator=g)
    wh = torch.rand(n, 2, generator=g) ** 2
    boxes = torch.cat([x1y1, x1y1 + wh], 1) * torch.tensor([img_w, img_h, img_w, img_h])
    boxes[0, 2:] = boxes[0, :2]                                   # zero width and height
    boxes[1] = torch.tensor([-5.0, -5.0, img_w + 5.0, img_h + 5.0])  # past every edge
    boxes[2] = torch.tensor([3.0, 4.0, 3.5, 4.25])                 # sub-pixel
    return boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("img_hw", [(128, 128), (97, 143)])
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_masks_equal_mmdets_one_by_one_paste(seed, img_hw, class_agnostic):
    g = torch.Generator().manual_seed(seed)
    n, classes = 60, 7
    head_args = dict(num_convs=0, in_channels=8, num_classes=classes, class_agnostic=class_agnostic)
    ours, theirs = BatchedPasteMaskHead(**head_args), FCNMaskHead(**head_args)
    logits = torch.randn(n, 1 if class_agnostic else classes, 28, 28, generator=g) * 4
    labels = torch.randint(0, classes, (n,), generator=g)
    img_h, img_w = img_hw
    boxes = _boxes(n, img_h, img_w, g)
    for threshold in (0.5, -1):  # binary masks, and the uint8 probabilities of debugging
        cfg = ConfigDict(mask_thr_binary=threshold)
        # rescale: boxes in the resized input (x0.5, x0.75) go back to the original image
        for rescale, scale in ((True, (0.5, 0.75)), (False, (1.0, 1.0))):
            meta = dict(scale_factor=scale, ori_shape=img_hw)
            fed = boxes * torch.tensor(scale).repeat(2)
            expected = theirs._predict_by_feat_single(logits, fed.clone(), labels, meta, cfg, rescale)
            got = ours._predict_by_feat_single(logits, fed.clone(), labels, meta, cfg, rescale)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert torch.equal(got, expected)
            assert expected.any()  # the comparison saw real masks


def test_small_chunks_paste_the_same_masks():
    """Chunking only changes how many detections share one grid_sample call."""
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(25, 1, 28, 28, generator=g)
    boxes = _boxes(25, 64, 80, g)
    whole = paste_masks(masks, boxes, 64, 80, 0.5)
    for chunk_pixels in (1, 64 * 80 * 3, 64 * 80 * 7):
        assert torch.equal(paste_masks(masks, boxes, 64, 80, 0.5, chunk_pixels), whole)
    assert paste_masks(masks[:0], boxes[:0], 64, 80, 0.5).shape == (0, 64, 80)
