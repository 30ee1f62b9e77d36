"""Balanced group softmax, BAGS (Li et al., CVPR 2020), as FASA's Table 4 runs it: 12+12
epochs, stage 1 softmax CE with uniform sampling, stage 2 re-trains the (re-initialised)
classifier with the group softmax and RFS, everything else frozen (METHODS.md, Part 2 A).

Groups: classes binned by training *instance* count, [0,10), [10,100), [100,1000), [1000,inf)
on LVIS, plus a background group. Each group has its own softmax with an extra "others" entry;
the background group has two entries, foreground ("others") and background.

  training   an RoI's target in its class's group is that class; in every other group it is
             "others"; in the background group it is background or foreground. In each
             object group the "others" RoIs are subsampled to `others_ratio` (8) times the
             group's positives (all kept if fewer), a group without positives contributes 0,
             the background group keeps every RoI; the loss is the sum over groups of each
             group's mean cross-entropy over its kept RoIs.
  inference  p(c) = p_group(c)(c) * p_bg-group(foreground), p(background) = p_bg-group(background)
             (FishYuLi gs_bbox_head_with0 `_merge_score`; eqlv2 GroupSoftmax.get_activation).

fc_cls layout (ours; the papers' code orders it group by group): columns 0..C-1 are the class
logits in class order (so weight-norm plots read the first C rows, as for softmax CE), then the
"others" logit of each object group, then the background group's [foreground, background].
Width C + K + 2 for K non-empty object groups (LVIS v1: 1203 + 4 + 2 = 1209, as eqlv2's).
Empty bins (possible on small data) are dropped.

On data other than LVIS the bin edges are scaled (fasa_cli.methods._scaling): each edge sits
at LVIS v1's cumulative class share below it (200, 612, 946 of 1203 classes) on the data's log
instance-count range. `thresholds: lvis` uses `bins` as they are.

With FASA: virtual features go through the same group softmax (fc_cls, then this loss) as a
batch of their own: all foreground, so the background group sees only "foreground" targets and
a group's "others" are the other virtual classes. FASA runs in stage 2 only (stage 1 is the
plain baseline, the same as cRT's), its start epoch counted from stage 2's first epoch.
Per-RoI loss for FASA's validation signal: the sum over every group of the RoI's cross-entropy,
without subsampling (a per-class mean needs no balancing, and draws no random numbers).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

import torch
from pydantic import Field
from torch import Tensor

from fasa_cli.methods._scaling import BAGS_BIN_SHARES, class_share_threshold, resolve_rule
from fasa_cli.methods.api import register_method
from fasa_cli.methods.rfs import RFSSampling, wrap_with_rfs

CLASSIFIER = "roi_head.bbox_head.fc_cls"


class BAGSArgs(RFSSampling):
    bins: tuple[float, ...] = Field((10, 100, 1000), min_length=1)      # instance-count edges (LVIS)
    bin_shares: tuple[float, ...] = Field(BAGS_BIN_SHARES, min_length=1)  # scaled: class share below each edge
    others_ratio: float = Field(8.0, gt=0.0)
    first_epochs: int | None = Field(None, ge=1)   # stage 1 length; default half the run's epochs


def class_groups(instance_counts: Sequence[int], args: BAGSArgs, dataset: str) -> list[int]:
    """Object group per class (0..K-1, in bin order, empty bins dropped)."""
    if resolve_rule(args.thresholds, dataset) == "lvis":
        edges = sorted(args.bins)
    else:
        edges = sorted(class_share_threshold(instance_counts, s) for s in args.bin_shares)
    bins = [bisect_right(edges, c) for c in instance_counts]
    used = {b: i for i, b in enumerate(sorted(set(bins)))}
    return [used[b] for b in bins]


class GroupLayout:
    """Where each group's entries sit in fc_cls's output, and the group softmax math on it."""

    def __init__(self, class_groups: Sequence[int], device=None):
        groups = torch.as_tensor(list(class_groups), dtype=torch.long, device=device)
        num_classes = groups.numel()
        num_groups = int(groups.max()) + 1
        if sorted(set(groups.tolist())) != list(range(num_groups)):
            raise ValueError(f"class groups must number 0..K-1 without gaps; got {sorted(set(groups.tolist()))}")
        self.num_classes, self.num_groups = num_classes, num_groups
        self.class_group = groups
        sizes = torch.bincount(groups, minlength=num_groups)
        # 1-based slot of each class in its group (slot 0 is "others"), in class order.
        order = torch.argsort(groups, stable=True)
        starts = sizes.cumsum(0) - sizes
        slot = torch.empty_like(groups)
        slot[order] = torch.arange(num_classes, device=groups.device) - starts[groups[order]] + 1
        self.class_slot = slot
        length = max(int(sizes.max()) + 1, 2)
        # [K + 1, length] fc_cls column of every (group, slot); -1 pads short groups.
        columns = torch.full((num_groups + 1, length), -1, dtype=torch.long, device=groups.device)
        columns[torch.arange(num_groups, device=groups.device), 0] = num_classes + torch.arange(num_groups, device=groups.device)
        columns[groups, slot] = torch.arange(num_classes, device=groups.device)
        columns[num_groups, 0] = num_classes + num_groups       # background group: foreground
        columns[num_groups, 1] = num_classes + num_groups + 1   # background group: background
        self.columns = columns

    @property
    def width(self) -> int:
        return self.num_classes + self.num_groups + 2

    def to(self, device) -> "GroupLayout":
        if self.columns.device != torch.device(device):
            self.class_group, self.class_slot, self.columns = (
                t.to(device) for t in (self.class_group, self.class_slot, self.columns))
        return self

    def group_logits(self, logits: Tensor) -> Tensor:
        """[N, K + 1, L] each group's logits, -inf in the padding."""
        if logits.shape[-1] != self.width:
            raise ValueError(f"group softmax expects {self.width} logits per RoI; got {logits.shape[-1]}")
        pad = self.columns < 0
        gathered = logits[:, self.columns.clamp_min(0)]
        return gathered.masked_fill(pad, float("-inf"))

    def targets(self, labels: Tensor) -> Tensor:
        """[N, K + 1] each RoI's slot in each group (0 = others / foreground)."""
        num_classes = self.num_classes
        foreground = (labels >= 0) & (labels < num_classes)
        safe = labels.clamp(0, num_classes - 1)
        targets = torch.zeros(labels.shape[0], self.num_groups + 1, dtype=torch.long, device=labels.device)
        rows = torch.arange(labels.shape[0], device=labels.device)
        own = torch.where(foreground, self.class_slot[safe], 0)
        targets[rows, self.class_group[safe]] = own
        targets[:, self.num_groups] = (~foreground).long()
        return targets

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """([N, K + 1] cross-entropy of every RoI in every group, [N, K + 1] targets)."""
        targets = self.targets(labels)
        log_probs = self.group_logits(logits).log_softmax(dim=2)
        return -log_probs.gather(2, targets[:, :, None]).squeeze(2), targets

    def scores(self, logits: Tensor) -> Tensor:
        """[N, C + 1] test-time probabilities: in-group probability x the foreground probability."""
        probs = self.group_logits(logits).softmax(dim=2)
        foreground = probs[:, self.num_groups, 0:1]
        classes = probs[:, self.class_group, self.class_slot] * foreground
        return torch.cat([classes, probs[:, self.num_groups, 1:2]], dim=1)


def keep_subsampled_others(targets: Tensor, num_groups: int, ratio: float) -> Tensor:
    """[N, K + 1] bool: the RoIs each group's loss uses. In object groups: every positive and
    at most floor(ratio * positives) random "others" (none if the group has no positive); the
    background group keeps all. Random numbers from the global torch generator."""
    positive = targets[:, :num_groups] > 0
    others = ~positive
    budget = (positive.sum(dim=0).float() * ratio).floor()                      # [K]
    keys = torch.rand(positive.shape, device=targets.device).masked_fill(positive, 2.0)
    rank = keys.argsort(dim=0, stable=True).argsort(dim=0, stable=True)  # others rank first
    keep_others = others & (rank < budget[None, :])
    keep = (positive | keep_others) & (budget > 0)[None, :]
    return torch.cat([keep, torch.ones_like(keep[:, :1])], dim=1)


def group_softmax_loss(layout: GroupLayout, logits: Tensor, labels: Tensor, label_weights: Tensor | None,
                       ratio: float) -> Tensor:
    """Sum over groups of the mean (label-weighted) cross-entropy over the group's kept RoIs."""
    ce, targets = layout.cross_entropy(logits, labels)
    keep = keep_subsampled_others(targets, layout.num_groups, ratio).to(ce.dtype)
    weights = keep if label_weights is None else keep * label_weights.to(ce.dtype)[:, None]
    per_group = (ce * weights).sum(dim=0) / keep.sum(dim=0).clamp_min(1.0)
    return per_group.sum()


def group_softmax_roi_loss(layout: GroupLayout, logits: Tensor, labels: Tensor) -> Tensor:
    """[N] an RoI's cross-entropy summed over every group (no subsampling)."""
    return layout.cross_entropy(logits, labels)[0].sum(dim=1)


@register_method("bags", table="4", summary="Balanced group softmax (Li et al., 2020)", args=BAGSArgs,
                 changes=("two stages: stage 1 the baseline, stage 2 only a re-initialised fc_cls trains",
                          "stage 2 classifier: group softmax with 'others' outputs (C + K + 2)",
                          "stage 2 training set: RFS"))
def bags(edit, args: BAGSArgs) -> None:
    groups = class_groups(edit.class_counts, args, edit.run.dataset)
    edit.two_stage(args.first_epochs, reinit=(CLASSIFIER,), trainable=(CLASSIFIER,))
    edit.bbox_head["loss_cls"] = dict(type="GroupSoftmaxLoss", class_groups=groups,
                                      others_ratio=args.others_ratio, loss_weight=1.0)
    wrap_with_rfs(edit, args)
