"""Cascade Mask R-CNN from the one box head the config template writes.

The template (fasa_cli/backend/config.py) writes a single box head and a single RCNN training
config for every detector, so methods and FASA edit one dict whatever the detector.
`StagedCascadeRoIHead` expands them into the cascade's stages: each stage is the written head
deep-merged with its overrides (box-delta stds), each stage's training config the written one
with its assigner's IoU threshold. Nothing in mmdet's CascadeRoIHead is changed.

FASA on a cascade (`fasa_stages`; the paper is silent, so it is a switch, a run's
`fasa.cascade_stages`):
  "all"  (default) every stage head runs FASA, each with its own feature statistics and
         sampling probabilities (each stage sees RoIs of another IoU quality, so one shared
         set of statistics would mix three feature distributions), its virtual-feature loss
         weighted like the stage's other losses (1, 0.5, 0.25). Chosen because at test time
         the cascade averages the three stages' class scores: with FASA in the last stage
         only, two thirds of the averaged score would come from classifiers that never saw
         a virtual tail feature.
  "last" only the last stage runs FASA; the earlier stages are the plain (or plug-in host) head.
"""

from __future__ import annotations

import copy
from typing import Sequence

from mmengine.config import ConfigDict
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS

FASA_STAGES = ("all", "last")

# A FASA head's type without FASA (the plug-in host keeps hosting its method's plug-ins).
WITHOUT_FASA = {
    "FASAShared2FCBBoxHead": "Shared2FCBBoxHead",
    "FASAConvFCBBoxHead": "ConvFCBBoxHead",
    "FASAPluginShared2FCBBoxHead": "PluginShared2FCBBoxHead",
}


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def stage_bbox_heads(bbox_head: dict, overrides: Sequence[dict], fasa_stages: str = "all") -> list[dict]:
    """The per-stage box head configs of a cascade built from one head config."""
    if fasa_stages not in FASA_STAGES:
        raise ValueError(f"fasa_stages must be one of {FASA_STAGES}, got {fasa_stages!r}")
    heads = []
    last = len(overrides) - 1
    for stage, override in enumerate(overrides):
        head = _merge(copy.deepcopy(dict(bbox_head)), dict(override))
        if "fasa" in head:
            if fasa_stages == "last" and stage < last:
                head["type"] = WITHOUT_FASA[head["type"]]
                del head["fasa"]
                if "plugins" not in head:
                    head.pop("class_counts", None)
            elif "seed" in head["fasa"]:
                # Each stage draws its own virtual features; stage 0 keeps the run's seed.
                head["fasa"] = dict(head["fasa"], seed=int(head["fasa"]["seed"]) + stage)
        heads.append(head)
    return heads


@MODELS.register_module()
class StagedCascadeRoIHead(CascadeRoIHead):
    """CascadeRoIHead whose stages are one box head / training config plus per-stage overrides."""

    def __init__(self, num_stages: int, stage_loss_weights: Sequence[float], bbox_head: dict,
                 stage_bbox_overrides: Sequence[dict], stage_train_overrides: Sequence[dict],
                 fasa_stages: str = "all", train_cfg: dict | None = None, **kwargs):
        if not len(stage_bbox_overrides) == len(stage_train_overrides) == num_stages:
            raise ValueError(f"{num_stages} stages need {num_stages} box and training overrides")
        heads = stage_bbox_heads(bbox_head, stage_bbox_overrides, fasa_stages)
        if train_cfg is not None and not isinstance(train_cfg, (list, tuple)):
            train_cfg = [ConfigDict(_merge(copy.deepcopy(dict(train_cfg)), dict(o)))
                         for o in stage_train_overrides]
        super().__init__(num_stages=num_stages, stage_loss_weights=list(stage_loss_weights),
                         bbox_head=heads, train_cfg=train_cfg, **kwargs)
