"""A batched RoIAlign for CPU, numerically mmcv's `RoIAlign` (avg pooling), plus the RoI
extractor that can use it.

mmcv's CPU kernel walks RoIs, channels and bins one at a time and its backward is single-
threaded; on the compact profile it is a large share of a training step. RoIAlign with
average pooling is separable: a sample's bilinear weight is wy(y) * wx(x), and its
"outside the map" rule (y or x out of range -> 0) is a product of per-axis indicators. So
each RoI's output is Ay @ window @ Ax^T with Ay (P x Ly), Ax (Q x Lx) holding the summed,
1/count-scaled sample weights on the RoI's window of the map, computed with the same float
arithmetic as mmcv's kernel. RoIs are grouped by window size into a few batched matmuls;
autograd gives the exact adjoint as the backward (mmcv, like this op, returns no gradient
for the boxes).
"""

from __future__ import annotations

import math

import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.utils import _pair


def _axis_weights(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, size: int,
                  span: int) -> tuple[Tensor, Tensor]:
    """One axis of every RoI: (K, pooled, span) weights on a window of `span` map cells, and
    the window's first cell (K,). A bin's weight is the sum over its samples / their number.

    Sample positions and clamping mirror mmcv's pre_calc_for_bilinear_interpolate operation
    by operation (same dtype, same order), so they are bit-identical; the window holds every
    cell with a non-zero weight, so dropping the rest changes nothing.
    """
    k = start.shape[0]
    dtype, device = start.dtype, start.device
    g_max = max(int(grid.max()), 1)
    p = torch.arange(pooled, dtype=dtype, device=device).view(1, -1, 1)
    i = (torch.arange(g_max, dtype=dtype, device=device) + 0.5).view(1, 1, -1)
    grid_f = grid.to(dtype).view(-1, 1, 1)
    bin_size = bin_size.view(-1, 1, 1)
    # start + ph * bin + (iy + .5) * bin / grid, evaluated left to right as in C.
    pos = (start.view(-1, 1, 1) + p * bin_size) + (i * bin_size) / grid_f
    used = torch.arange(g_max, device=device).view(1, 1, -1) < grid.view(-1, 1, 1)
    valid = used & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.to(torch.int64).clamp(max=size - 1)  # trunc == floor here (pos >= 0)
    at_edge = low >= size - 1
    pos = torch.where(at_edge, low.to(dtype), pos)
    high = torch.where(at_edge, low, low + 1)
    frac = pos - low.to(dtype)
    zero = torch.zeros((), dtype=dtype, device=device)
    w_high = torch.where(valid, frac, zero)
    w_low = torch.where(valid, 1.0 - frac, zero)
    big = torch.iinfo(torch.int64).max
    first = torch.where(valid, low, big).amin(dim=(1, 2))
    first = torch.where(first == big, 0, first).clamp(max=size - span)  # window inside the map
    weights = torch.zeros(k, pooled, span, dtype=dtype, device=device)
    # Invalid samples carry weight 0; clamp their (unused) indices into the window.
    weights.scatter_add_(2, (low - first.view(-1, 1, 1)).clamp(0, span - 1), w_low)
    weights.scatter_add_(2, (high - first.view(-1, 1, 1)).clamp(0, span - 1), w_high)
    return weights / grid_f.clamp(min=1), first


def _spans(start: Tensor, length: Tensor, size: int) -> Tensor:
    """Upper bound of each RoI's cell span along one axis (samples lie in [start, start+length])."""
    lo = start.clamp(min=0).floor()
    hi = (start + length).clamp(max=size - 1).floor() + 1
    return (hi - lo + 2).clamp(min=1, max=size).to(torch.int64)


def _bucket(span: Tensor) -> Tensor:
    """Window sizes from a short ladder (multiples of 4, then x1.5) so few buckets run."""
    small = (span + 3) // 4 * 4
    big = torch.pow(1.5, torch.ceil(torch.log(span.double() / 16) / math.log(1.5))) * 16
    return torch.where(span <= 16, small, torch.ceil(big).to(torch.int64))


class _GatherRows(torch.autograd.Function):
    """rows[index] with an index_add_ backward (autograd's default scatters element-wise)."""

    @staticmethod
    def forward(ctx, rows: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.num_rows = rows.shape[0]
        return rows.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.num_rows, grad.shape[1])
        return out.index_add_(0, index, grad.contiguous()), None


def batched_roi_align(
    input: Tensor, rois: Tensor, output_size, spatial_scale: float = 1.0,
    sampling_ratio: int = 0, aligned: bool = True,
) -> Tensor:
    """mmcv.ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio, 'avg', aligned)."""
    ph, pw = _pair(output_size)
    n, c, h, w = input.shape
    k = rois.shape[0]
    if k == 0:
        return input.new_zeros(0, c, ph, pw)
    dtype, device = input.dtype, input.device
    with torch.no_grad():
        boxes = rois.detach().to(dtype)
        # mmcv passes spatial_scale as a C float, then casts it to the tensor's type.
        scale = torch.tensor(spatial_scale, dtype=torch.float32).to(dtype)
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (boxes[:, j] * scale - offset for j in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # mmcv's backward-compatible minimum size
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        if sampling_ratio > 0:
            grid_h = grid_w = torch.full((k,), sampling_ratio, dtype=torch.int64, device=device)
        else:  # adaptive: ceil(roi size / bins) samples per bin, as mmcv (ceilf, then int)
            grid_h = torch.ceil(roi_h / ph).to(torch.int64).clamp(min=0)
            grid_w = torch.ceil(roi_w / pw).to(torch.int64).clamp(min=0)
        span = torch.maximum(_spans(y1, roi_h, h), _spans(x1, roi_w, w))
        bucket = _bucket(span)
        batch = boxes[:, 0].to(torch.int64)

    # RoIs with similar window sizes share one pass; a RoI's features are
    # Ay (ph x Ly) @ window (Ly x Lx) @ Ax^T (Lx x pw), per channel.
    flat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)  # rows of C channels
    outs, members = [], []
    for size in torch.unique(bucket).tolist():  # a handful of sizes, not RoIs
        idx = torch.nonzero(bucket == size).squeeze(1)
        span_h, span_w = min(size, h), min(size, w)
        with torch.no_grad():
            a_y, y0 = _axis_weights(y1[idx], roi_h[idx] / ph, grid_h[idx], ph, h, span_h)
            a_x, x0 = _axis_weights(x1[idx], roi_w[idx] / pw, grid_w[idx], pw, w, span_w)
            # Window cells in (x, y) order, so the window comes out as (K, Lx, Ly*C).
            cell = ((batch[idx] * h + y0).view(-1, 1, 1) + torch.arange(span_h, device=device).view(1, 1, -1)) * w \
                + (x0.view(-1, 1, 1) + torch.arange(span_w, device=device).view(1, -1, 1))
        window = _GatherRows.apply(flat, cell.reshape(-1)).view(len(idx), span_w, span_h * c)
        cols = torch.bmm(a_x, window).view(len(idx), pw * span_h, c)  # (K, pw, Ly, C)
        cols = cols.view(len(idx), pw, span_h, c).transpose(1, 2).reshape(len(idx), span_h, pw * c)
        outs.append(torch.bmm(a_y, cols).view(len(idx), ph, pw, c))
        members.append(idx)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if len(outs) > 1:
        order = torch.empty_like(batch)
        order[torch.cat(members)] = torch.arange(k, device=device)
        out = out.index_select(0, order)
    return out.permute(0, 3, 1, 2).contiguous()


class BatchedRoIAlign(nn.Module):
    """Drop-in for mmcv.ops.RoIAlign(pool_mode='avg'): same arguments, same numbers (to float
    rounding), batched matmuls instead of a per-RoI loop; runs on the input's device."""

    def __init__(self, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                 pool_mode: str = "avg", aligned: bool = True, use_torchvision: bool = False):
        super().__init__()
        if pool_mode != "avg" or use_torchvision:
            raise ValueError("BatchedRoIAlign implements pool_mode='avg' without torchvision only")
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        return batched_roi_align(input, rois, self.output_size, self.spatial_scale,
                                 self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


ROI_OPS = {"BatchedRoIAlign": BatchedRoIAlign}


@MODELS.register_module()
class FASARoIExtractor(SingleRoIExtractor):
    """SingleRoIExtractor that also knows this package's RoI ops by name (mmdet resolves
    `roi_layer.type` in mmcv.ops only); mmcv names behave exactly as in the parent."""

    def build_roi_layers(self, layer_cfg, featmap_strides):
        if layer_cfg.get("type") not in ROI_OPS:
            return super().build_roi_layers(layer_cfg, featmap_strides)
        cfg = dict(layer_cfg)
        layer_cls = ROI_OPS[cfg.pop("type")]
        return nn.ModuleList([layer_cls(spatial_scale=1 / s, **cfg) for s in featmap_strides])
