"""BatchedRoIAlign equals mmcv's CPU RoIAlign (avg) to 1e-5 in float32, forward and backward."""

from __future__ import annotations

import pytest
import torch

mmcv_ops = pytest.importorskip("mmcv.ops")

from fasa_cli.mmdet_ext.roi_align import BatchedRoIAlign, FASARoIExtractor  # noqa: E402

TOL = 1e-5
GRAD_RTOL = 1e-5  # gradient sums: see test_matches_mmcv_forward_and_backward


def _rois(n_images: int, h: int, w: int, scale: float, k: int, seed: int) -> torch.Tensor:
    """Boxes in image coordinates: ordinary, partly or wholly outside the map, tiny, zero-size,
    with shuffled (unsorted) batch indices."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([w, h, w, h], dtype=torch.float32) / scale
    x1y1 = torch.rand(k, 2, generator=g) * 1.4 - 0.2  # some start left of / above the map
    wh = torch.rand(k, 2, generator=g) ** 2 * 0.8
    boxes = torch.cat([x1y1, x1y1 + wh], 1) * size
    tiny = torch.rand(k, generator=g) < 0.15
    boxes[tiny, 2:] = boxes[tiny, :2] + torch.rand(int(tiny.sum()), 2, generator=g) * 0.5
    boxes[0, 2:] = boxes[0, :2]  # zero width and height
    boxes[1] = torch.tensor([-30.0, -30.0, -5.0, -5.0])  # entirely outside
    boxes[2] = torch.tensor([0.0, 0.0, w / scale, h / scale])  # the whole map
    boxes[3, 2:] = size[:2] + 20  # runs past the bottom-right edge
    batch = torch.randint(0, n_images, (k, 1), generator=g).float()
    return torch.cat([batch, boxes], 1)


def _run(op, feats, rois, grad_seed=5):
    x = feats.clone().requires_grad_()
    out = op(x, rois)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.dtype)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("level", [(4, 32, 32), (8, 16, 20), (16, 8, 8), (32, 5, 3)])
@pytest.mark.parametrize("output_size", [7, 14])
def test_matches_mmcv_forward_and_backward(sampling_ratio, aligned, level, output_size):
    stride, h, w = level
    scale = 1.0 / stride
    torch.manual_seed(stride + output_size)
    feats = torch.randn(3, 6, h, w)
    rois = _rois(3, h, w, scale, k=40, seed=stride * 31 + output_size)
    ours = BatchedRoIAlign(output_size, scale, sampling_ratio, aligned=aligned)
    ref = mmcv_ops.RoIAlign(output_size, scale, sampling_ratio, aligned=aligned)

    out, grad = _run(ours, feats, rois)
    out_ref, grad_ref = _run(ref, feats, rois)
    assert out.shape == out_ref.shape == (40, 6, output_size, output_size)
    torch.testing.assert_close(out, out_ref, atol=TOL, rtol=0)
    # Input gradients sum thousands of contributions per pixel on coarse maps, where mmcv's own
    # float32 result is off its float64 result by up to ~6e-5; allow 1e-5 (scaled by |grad|)
    # beyond mmcv's own rounding error, measured per element against mmcv in float64.
    _, grad_ref64 = _run(ref, feats.double(), rois.double())
    slack = TOL * (1 + grad_ref64.abs()) + (grad_ref.double() - grad_ref64).abs()
    assert bool(((grad.double() - grad_ref.double()).abs() <= slack).all())
    # ... and ours is no less accurate than mmcv's float32 kernel (overall, against float64).
    ours_err = (grad.double() - grad_ref64).abs().max()
    assert ours_err <= max((grad_ref.double() - grad_ref64).abs().max(), 2 * TOL)

    # In float64 the two agree to rounding: the same positions, weights and clamping.
    out64, grad64 = _run(ours, feats.double(), rois.double())
    out_ref64, _ = _run(ref, feats.double(), rois.double())
    torch.testing.assert_close(out64, out_ref64, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad64, grad_ref64, atol=1e-10, rtol=0)


def test_no_rois_and_no_box_gradient():
    feats = torch.randn(2, 3, 8, 8, requires_grad=True)
    op = BatchedRoIAlign(7, 0.25, 2)
    assert op(feats, torch.zeros(0, 5)).shape == (0, 3, 7, 7)
    rois = torch.tensor([[1.0, 2.0, 2.0, 20.0, 24.0]], requires_grad=True)
    op(feats, rois).sum().backward()
    assert rois.grad is None and feats.grad[0].abs().sum() == 0 and feats.grad[1].abs().sum() > 0


@pytest.mark.parametrize("output_size", [7, 14])
def test_extractor_matches_mmdet_single_roi_extractor(output_size):
    """Several FPN levels through mmdet's level mapping: same features and gradients."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    strides = [4, 8, 16, 32]
    common = dict(out_channels=8, featmap_strides=strides)
    ours = FASARoIExtractor(roi_layer=dict(type="BatchedRoIAlign", output_size=output_size,
                                           sampling_ratio=2), **common)
    ref = SingleRoIExtractor(roi_layer=dict(type="RoIAlign", output_size=output_size,
                                            sampling_ratio=2), **common)
    assert ours.roi_layers[0].output_size == ref.roi_layers[0].output_size
    torch.manual_seed(0)
    feats = [torch.randn(4, 8, 256 // s, 192 // s) for s in strides]
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(120, 2, generator=g) * torch.tensor([192.0, 256.0])
    wh = torch.rand(120, 2, generator=g) ** 3 * 400 + 0.5  # spans all four levels
    rois = torch.cat([torch.randint(0, 4, (120, 1), generator=g).float(), xy, xy + wh], 1)
    a = [f.clone().requires_grad_() for f in feats]
    b = [f.clone().requires_grad_() for f in feats]
    out_a, out_b = ours(a, rois), ref(b, rois)
    torch.testing.assert_close(out_a, out_b, atol=TOL, rtol=0)
    grad = torch.randn_like(out_b)
    out_a.backward(grad)
    out_b.backward(grad)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga.grad, gb.grad, atol=TOL, rtol=GRAD_RTOL)


def test_mmcv_names_still_build_mmcv_ops():
    ext = FASARoIExtractor(roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=2),
                           out_channels=4, featmap_strides=[4, 8])
    assert all(isinstance(layer, mmcv_ops.RoIAlign) for layer in ext.roi_layers)


def test_profile_roi_op_selects_the_extractor():
    import dataclasses

    from fasa_cli.backend.config import _model
    from fasa_cli.backend.profiles import get_profile

    compact = get_profile("cpu-compact")
    assert _model(compact, 3, None, [1, 1, 1])["roi_head"]["bbox_roi_extractor"]["type"] == "SingleRoIExtractor"
    model = _model(dataclasses.replace(compact, roi_op="BatchedRoIAlign"), 3, None, [1, 1, 1])
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        cfg = model["roi_head"][key]
        assert cfg["type"] == "FASARoIExtractor" and cfg["roi_layer"]["type"] == "BatchedRoIAlign"
