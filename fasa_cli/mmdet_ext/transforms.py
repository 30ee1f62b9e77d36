"""Pipeline transforms the suite's methods need around mmdet's own."""

from __future__ import annotations

import copy

import numpy as np
import pycocotools.mask as mask_utils
from mmdet.datasets.transforms import InstaBoost
from mmdet.registry import TRANSFORMS


def uncompressed_rle(rle: dict) -> dict:
    """A compressed COCO RLE (string counts) as the same mask with list counts (lossless)."""
    binary = mask_utils.decode(rle).flatten(order="F")
    changes = np.flatnonzero(np.diff(binary)) + 1
    bounds = np.concatenate([[0], changes, [binary.size]])
    counts = np.diff(bounds).tolist()
    if binary.size and binary[0] == 1:
        counts = [0, *counts]  # RLE counts start with a run of zeros
    return {"size": list(rle["size"]), "counts": counts}


@TRANSFORMS.register_module()
class GuardedInstaBoost(InstaBoost):
    """mmdet's InstaBoost, made safe for two instaboostfast 0.1.2 bugs on this stack:
    compressed-RLE masks (string counts; it passes the RLE dict where pycocotools expects a
    list) are first uncompressed, losslessly; and an image it cannot augment (numpy 2 rejects
    the ragged contour array it builds for a mask in several parts) is passed on unaugmented,
    as for the 1 - aug_ratio share of images. `fallbacks` counts those images per process."""

    fallbacks = 0

    def transform(self, results: dict) -> dict:
        for instance in results.get("instances", []):
            mask = instance.get("mask")
            if isinstance(mask, dict) and isinstance(mask.get("counts"), (str, bytes)):
                instance["mask"] = uncompressed_rle(mask)
        original = dict(results, instances=copy.deepcopy(results.get("instances", [])))
        try:
            return super().transform(results)
        except (ValueError, TypeError, IndexError):
            GuardedInstaBoost.fallbacks += 1
            return original
