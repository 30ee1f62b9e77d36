"""Repeat factor sampling (Gupta et al., LVIS, CVPR 2019), mmdet's ClassBalancedDataset.

An image's repeat factor is max over its classes of max(1, sqrt(t / f_c)), f_c the fraction
of training images that contain class c; t = 1e-3 as in the paper (Sec. 4.2).

On LVIS v1, t = 1e-3 is an image count of about 100 of the ~100k training images: the
common / frequent boundary, so the 798 rare and common classes of 1203 are repeated. On other
data (the embedded set: 60 classes, the rarest in 2 of 1200 images, f = 1.7e-3 > t) the
paper's t would repeat no image, so it is scaled like EQL's and BAGS's thresholds
(fasa_cli.methods._scaling): the image count below which 798/1203 of the classes fall on the
data's log image-count range, divided by the training images. `thresholds: lvis` keeps t.
cRT, BAGS and Seesaw sample with the same rule (RFSSampling).
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field

from fasa_cli.methods._scaling import RFS_REPEAT_SHARE, ThresholdRule, class_share_threshold, resolve_rule
from fasa_cli.methods.api import MethodArgs, register_method


class RFSSampling(MethodArgs):
    """Repeat factor sampling settings, shared by every method that trains with RFS."""
    sampler: Literal["rfs", "uniform"] = "rfs"
    oversample_thr: float = Field(1e-3, gt=0.0, le=1.0)              # t on LVIS v1 (image frequency)
    rfs_share: float = Field(RFS_REPEAT_SHARE, ge=0.0, le=1.0)       # scaled: share of classes below t
    thresholds: ThresholdRule = "auto"


def repeat_threshold(image_counts: Sequence[int], train_images: int, args: RFSSampling, dataset: str) -> float:
    """RFS's t for this data: the paper's on LVIS, else the class-share scaled image frequency."""
    if resolve_rule(args.thresholds, dataset) == "lvis":
        return args.oversample_thr
    if train_images <= 0:
        raise ValueError("RFS's scaled threshold needs the number of training images")
    return min(1.0, class_share_threshold(image_counts, args.rfs_share) / train_images)


def wrap_with_rfs(edit, args: RFSSampling) -> None:
    """Wrap the training set in ClassBalancedDataset when the method samples with RFS."""
    if args.sampler != "rfs":
        return
    thr = repeat_threshold(edit.image_counts, edit.train_images, args, edit.run.dataset)
    edit.wrap_train_set(dict(type="ClassBalancedDataset", oversample_thr=thr))


class RFSArgs(RFSSampling):
    sampler: Literal["rfs"] = "rfs"


@register_method("rfs", table="4", summary="Repeat factor sampling, threshold 1e-3 (Gupta et al., 2019)",
                 args=RFSArgs, changes=("training set (sampler)",))
def rfs(edit, args: RFSArgs) -> None:
    wrap_with_rfs(edit, args)
