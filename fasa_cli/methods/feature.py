"""Classifier-level plug-ins: the protocol between a box head (the host) and a method's math.

Plain PyTorch, no mmdet. Per training iteration the host builds a ClassifierBatch from the RoIs
it sampled and hands it to each active plug-in:

  plugin.transform(x)      the classifier's input, in training and at test time (default: x)
  plugin.cls_loss(batch)   a replacement for the real RoIs' classification loss, or None
  plugin.losses(batch)     extra loss terms {"<method>[_<term>]": scalar}, added under "loss_" + key

and once per epoch `plugin.set_epoch(epoch)` (0-based). Plug-ins draw random numbers from the
global torch generator on the features' device (the run's RNGStateHook checkpoints it) and keep
their state in buffers, so a resumed run continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn


@dataclass
class ClassifierBatch:
    features: Tensor        # [N, d] the classifier's input for every sampled RoI (in the graph)
    labels: Tensor          # [N] long, background = num_classes
    weights: Tensor         # [N] the host's label weights
    cls_score: Tensor       # [N, C + 1] the real logits
    num_classes: int
    classifier: nn.Module   # the host's fc_cls
    # (logits [N, C+1], labels [N], weights [N]) -> the host's classification loss, averaged as the real one
    rois_loss: Callable[[Tensor, Tensor, Tensor], Tensor]
    # (logits [M, C+1], labels [M]) -> the host's classification loss averaged over M extra samples
    samples_loss: Callable[[Tensor, Tensor], Tensor]

    @property
    def positive(self) -> Tensor:
        return (self.labels >= 0) & (self.labels < self.num_classes)


def tail_mask(class_frequency: Sequence[str] | None, class_counts: Sequence[int]) -> Tensor:
    """[C] bool: the under-represented classes, LVIS's rare and common groups ("r", "c").

    Without frequency letters, the classes outside the most frequent third by count."""
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if class_frequency:
        return torch.tensor([f in ("r", "c") for f in class_frequency])
    threshold = counts.quantile(2.0 / 3.0)
    return counts < threshold


class FeaturePlugin(nn.Module):
    """Base of a classifier-level method; subclasses override what they change."""

    def __init__(self, args, num_classes: int, feat_dim: int, class_counts: Sequence[int],
                 class_frequency: Sequence[str] | None = None):
        super().__init__()
        if len(class_counts) != num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries for {num_classes} classes")
        self.args = args
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.epoch = 0
        self.register_buffer("class_counts", torch.as_tensor(list(class_counts), dtype=torch.long), persistent=False)
        self.register_buffer("tail", tail_mask(class_frequency, class_counts), persistent=False)

    @staticmethod
    def edit_run(edit, args) -> None:
        """Config changes besides hosting the plug-in (e.g. a cosine classifier); none by default."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def transform(self, x: Tensor) -> Tensor:
        return x

    def cls_loss(self, batch: ClassifierBatch) -> Tensor | None:
        return None

    def losses(self, batch: ClassifierBatch) -> dict[str, Tensor]:
        return {}


def add_plugin_losses(plugins, batch: ClassifierBatch, losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every active plug-in's losses into `losses` (named `loss_<plugin>...`); a plug-in's
    `cls_loss` replaces the host's classification loss. Shared by every host head."""
    for name, plugin in plugins.items():
        replaced = plugin.cls_loss(batch)
        if replaced is not None:
            losses["loss_cls"] = replaced
        for key, value in plugin.losses(batch).items():
            if not key.startswith(name):
                raise ValueError(f"plug-in '{name}' returned loss '{key}': keys must start with its name")
            losses[f"loss_{key}"] = value
    return losses


class ClassBank(nn.Module):
    """A bounded per-class FIFO of detached features: `size` slots per class, [C, size, d]."""

    def __init__(self, num_classes: int, size: int, feat_dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("features", torch.zeros(num_classes, size, feat_dim))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("next_slot", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, features: Tensor, labels: Tensor) -> None:
        """Append a batch (vectorised); a class with more than `size` features keeps its last ones."""
        if labels.numel() == 0:
            return
        labels = labels.long()
        num_classes = self.filled.numel()
        counts = torch.bincount(labels, minlength=num_classes)
        order = torch.argsort(labels, stable=True)
        starts = counts.cumsum(0) - counts
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(labels.numel(), device=labels.device) - starts[labels[order]]
        dropped = (counts[labels] - self.size).clamp_min(0)
        keep = rank >= dropped
        slot = (self.next_slot[labels] + rank - dropped) % self.size
        self.features[labels[keep], slot[keep]] = features.detach()[keep].to(self.features.dtype)
        self.next_slot.add_(counts).remainder_(self.size)
        self.filled.add_(counts).clamp_(max=self.size)

    def valid(self, classes: Tensor) -> Tensor:
        """[..., size] bool: which slots of these classes hold a feature."""
        slots = torch.arange(self.size, device=classes.device)
        return slots < self.filled[classes].unsqueeze(-1)
