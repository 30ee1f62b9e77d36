"""SimCal (Wang et al., ECCV 2020) for the box head: a calibration branch trained on the frozen
detector, and dual-head inference (fasa_cli/methods/simcal.py sets up the two stages).

- `SimCalBBoxHead`: Shared2FCBBoxHead plus a calibration branch of the same shape (copies of
  the two shared FCs and of fc_cls: SimCal's "3fc" head). In training its loss is a softmax CE
  on the positive RoIs and as many background RoIs (`bg_ratio`), `loss_simcal`; at test time
  the head returns both heads' logits side by side.
- `SimCalDualLoss`: the classification loss (plain softmax CE in training) whose activation,
  which mmdet asks for at test time, turns the side-by-side logits into scores: each head's
  softmax, the calibrated head's column for the tail classes, the original head's for the
  others and for background (SimCal's dual-head inference).
- `SimCalInitHook`: at the start of the calibration stage (not on a resume) copies the trained
  box head into the calibration branch ("3fc_ft", SimCal's best), or leaves it random.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import HOOKS, MODELS


def _tail_mask(num_classes: int, tail_classes: Sequence[int]) -> torch.Tensor:
    mask = torch.zeros(num_classes + 1, dtype=torch.bool)  # the last column is background
    mask[list(tail_classes)] = True
    return mask


@MODELS.register_module()
class SimCalDualLoss(CrossEntropyLoss):
    """Softmax CE whose test-time activation merges the original and calibrated heads."""

    custom_cls_channels = True  # mmdet then asks get_activation for the test scores
    custom_activation = False   # training accuracy stays mmdet's own

    def __init__(self, num_classes: int, tail_classes: Sequence[int] = (), **kwargs):
        super().__init__(use_sigmoid=False, **kwargs)
        self.num_classes = num_classes
        self.register_buffer("tail", _tail_mask(num_classes, tail_classes), persistent=False)

    def get_cls_channels(self, num_classes: int) -> int:
        return num_classes + 1

    def get_activation(self, cls_score: torch.Tensor) -> torch.Tensor:
        width = self.num_classes + 1
        if cls_score.shape[-1] != 2 * width:  # only the original head's logits
            return F.softmax(cls_score, dim=-1)
        original = F.softmax(cls_score[:, :width], dim=-1)
        calibrated = F.softmax(cls_score[:, width:], dim=-1)
        return torch.where(self.tail.to(cls_score.device), calibrated, original)


@MODELS.register_module()
class SimCalBBoxHead(Shared2FCBBoxHead):
    """Shared2FCBBoxHead with SimCal's calibration branch. Extra args: `tail_classes` (label
    indices scored by the calibrated head at test time), `bg_ratio`."""

    def __init__(self, *args, tail_classes: Sequence[int] = (), bg_ratio: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.num_shared_convs or self.num_cls_convs or self.num_cls_fcs:
            raise ValueError("SimCalBBoxHead expects the 2-FC box head")
        self.cal_fcs = torch.nn.ModuleList(copy.deepcopy(fc) for fc in self.shared_fcs)
        self.cal_fc_cls = copy.deepcopy(self.fc_cls)
        self.tail_classes = list(tail_classes)
        self.bg_ratio = float(bg_ratio)
        self._cal_logits: torch.Tensor | None = None

    def calibrated_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for fc in self.cal_fcs:
            x = self.relu(fc(x))
        return self.cal_fc_cls(x)

    def forward(self, x):
        cls_score, bbox_pred = super().forward(x)
        calibrated = self.calibrated_logits(x)
        if not self.training:  # dual-head inference: both heads' logits, merged by the loss's activation
            return torch.cat([cls_score, calibrated], dim=1), bbox_pred
        self._cal_logits = calibrated
        return cls_score, bbox_pred

    def copy_original_into_calibration(self) -> None:
        with torch.no_grad():
            for source, target in zip(self.shared_fcs, self.cal_fcs):
                target.load_state_dict(source.state_dict())
            self.cal_fc_cls.load_state_dict(self.fc_cls.state_dict())

    def loss_and_target(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg,
                        concat: bool = True, reduction_override=None) -> dict:
        out = super().loss_and_target(cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg,
                                      concat=concat, reduction_override=reduction_override)
        calibrated, self._cal_logits = self._cal_logits, None
        labels = out["bbox_targets"][0]
        positive = torch.nonzero((labels >= 0) & (labels < self.num_classes)).squeeze(1)
        background = torch.nonzero(labels == self.num_classes).squeeze(1)
        # SimCal pairs a sampled class's proposals with as many background ones.
        keep = min(len(background), int(round(self.bg_ratio * max(len(positive), 1))))
        background = background[torch.randperm(len(background), device=labels.device)[:keep]]
        chosen = torch.cat([positive, background])
        out["loss_bbox"]["loss_simcal"] = (F.cross_entropy(calibrated[chosen], labels[chosen]) if len(chosen)
                                           else calibrated.sum() * 0.0)
        return out


@HOOKS.register_module()
class SimCalInitHook(Hook):
    """Before the calibration stage trains: "ft" copies the trained box head into the
    calibration branch (only when the stage starts, iteration 0; a resume keeps its own)."""

    priority = "HIGH"

    def __init__(self, init: str = "ft"):
        if init not in ("ft", "rand"):
            raise ValueError(f"init must be 'ft' or 'rand', got {init!r}")
        self.init = init

    def before_train(self, runner) -> None:
        if self.init != "ft" or runner.iter != 0:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        heads = [m for m in model.modules() if isinstance(m, SimCalBBoxHead)]
        if not heads:
            raise ValueError("SimCalInitHook found no SimCalBBoxHead in the model")
        for head in heads:
            head.copy_original_into_calibration()
