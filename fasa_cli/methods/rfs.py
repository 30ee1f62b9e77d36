"""Repeat factor sampling (Gupta et al., LVIS, CVPR 2019), mmdet's ClassBalancedDataset.

An image's repeat factor is max over its classes of max(1, sqrt(t / f_c)), f_c the fraction
of training images that contain class c; t = 1e-3 as in the paper (Sec. 4.2)."""

from __future__ import annotations

from pydantic import Field

from fasa_cli.methods.api import MethodArgs, register_method


class RFSArgs(MethodArgs):
    oversample_thr: float = Field(1e-3, gt=0.0, le=1.0)


@register_method("rfs", table="4", summary="Repeat factor sampling, threshold 1e-3 (Gupta et al., 2019)",
                 args=RFSArgs, changes=("training set (sampler)",))
def rfs(edit, args: RFSArgs) -> None:
    edit.wrap_train_set(dict(type="ClassBalancedDataset", oversample_thr=args.oversample_thr))
