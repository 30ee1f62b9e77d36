"""CIFAR backbones (plain PyTorch): each returns the globally pooled feature that feeds the
classifier, the feature FASA models (`out_dim` wide).

  ResNet-32 (LDAM-DRW, M2m, TDE): a 3x3 stem of w channels, three stages of 5 basic blocks with
      w, 2w, 4w channels (w = 16: 64-d feature), parameter-free "option A" shortcuts (stride-2
      subsampling + zero channel padding), Kaiming-normal convolutions.
      variant "bbn" (TDE's ResNet32Feature): the last stage has 4 blocks, then two parallel
      blocks whose outputs are concatenated (8w = 128-d feature).
  ResNet-34 (Chu et al.'s setting): a 3x3 stem (no max-pool), stages of 3, 4, 6, 3 basic blocks
      with w, 2w, 4w, 8w channels (w = 64: 512-d), 1x1-convolution shortcuts.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: Literal["A", "B"]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride, self.pad = stride, (out_ch - in_ch) // 2
        self.projection = None
        if (stride != 1 or in_ch != out_ch) and shortcut == "B":
            self.projection = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.identity = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.identity:
            skip = x
        elif self.projection is not None:
            skip = self.projection(x)
        else:  # option A: subsample, then zero-pad the new channels on both sides
            skip = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(y + skip)


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    return nn.Sequential(*(BasicBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, shortcut)
                           for i in range(blocks)))


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """ResNet-32 or ResNet-34 for 32 px images; forward -> [N, out_dim] pooled features."""

    def __init__(self, depth: int = 32, width: int = 16, variant: Literal["plain", "bbn"] = "plain"):
        super().__init__()
        if depth not in (32, 34):
            raise ValueError(f"CIFAR ResNet depth {depth} is not built; use 32 or 34")
        if variant == "bbn" and depth != 32:
            raise ValueError("the BBN-style variant is a ResNet-32")
        self.depth, self.width, self.variant = depth, width, variant
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        if depth == 32:
            last = 4 if variant == "bbn" else 5
            self.stages = nn.Sequential(_stage(width, width, 5, 1, "A"), _stage(width, 2 * width, 5, 2, "A"),
                                        _stage(2 * width, 4 * width, last, 2, "A"))
            self.out_dim = 4 * width
        else:
            widths, blocks = (width, 2 * width, 4 * width, 8 * width), (3, 4, 6, 3)
            self.stages = nn.Sequential(*(_stage(widths[max(i - 1, 0)], widths[i], blocks[i], 1 if i == 0 else 2, "B")
                                          for i in range(4)))
            self.out_dim = 8 * width
        self.branches = None
        if variant == "bbn":  # two parallel blocks on the last stage's map, concatenated
            self.branches = nn.ModuleList(BasicBlock(4 * width, 4 * width, 1, "A") for _ in range(2))
            self.out_dim = 8 * width
        _init(self)

    def forward(self, images: Tensor) -> Tensor:
        x = self.stages(self.stem(images))
        if self.branches is not None:
            x = torch.cat([branch(x) for branch in self.branches], dim=1)
        return x.mean(dim=(2, 3))
