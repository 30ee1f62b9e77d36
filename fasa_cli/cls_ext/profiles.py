"""Classification profiles: a backbone and a schedule, as data (one config template reads them).

The paper's CIFAR-100-LT protocol (LDAM-DRW's, FACTS.md section 4): 200 epochs, batch 128, SGD
lr 0.1, momentum 0.9, weight decay 2e-4, a 5-epoch linear warm-up, lr x0.01 at epoch 160 and again
at 180. Methods change it through their edit (TDE: lr 0.2, batch 256, steps at 120 / 160), with
steps written as shares of the epochs so every profile keeps a method's shape.

The compact CPU profiles keep the architecture's depth (ResNet-32: 3 x 5 blocks; ResNet-34:
3-4-6-3) with narrower layers, 16 px inputs (the 32 px images area-down-sampled after the crop
and flip) and fewer epochs, sized so one Table 7 run on the embedded data takes at most about
10 minutes on 2 cores (README, "The classification path").
"""

from __future__ import annotations

from dataclasses import dataclass

from fasa_cli.registry import lookup


@dataclass(frozen=True)
class ClsProfile:
    name: str
    depth: int                       # 32 or 34 (fasa_cli.cls_ext.backbones.CifarResNet)
    width: int                       # channels of the first stage
    input_size: int | None           # images are down-sampled to this side (None: as stored)
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: int
    lr_steps: tuple[float, ...]      # shares of the epochs where lr is multiplied by lr_gamma
    lr_gamma: float
    val_images: int | None = None    # cap on FASA's per-epoch validation pass (None = the whole split)
    test_batch_size: int = 500
    pad: int = 4                     # random-crop padding (pixels of the stored image)


_PAPER = dict(epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=2e-4, warmup_epochs=5,
              lr_steps=(0.8, 0.9), lr_gamma=0.01, input_size=None)

PROFILES: dict[str, ClsProfile] = {
    "cifar-resnet32": ClsProfile("cifar-resnet32", depth=32, width=16, **_PAPER),
    "cifar-resnet34": ClsProfile("cifar-resnet34", depth=34, width=64, **_PAPER),
    "cpu-compact-cls": ClsProfile("cpu-compact-cls", depth=32, width=8, input_size=16, epochs=40, batch_size=128,
                                  lr=0.1, momentum=0.9, weight_decay=2e-4, warmup_epochs=2, lr_steps=(0.8, 0.9),
                                  lr_gamma=0.01),
    "cpu-compact-cls-r34": ClsProfile("cpu-compact-cls-r34", depth=34, width=8, input_size=16, epochs=40,
                                      batch_size=128, lr=0.1, momentum=0.9, weight_decay=2e-4, warmup_epochs=2,
                                      lr_steps=(0.8, 0.9), lr_gamma=0.01),
}


def get_cls_profile(name: str) -> ClsProfile:
    lookup("profile", name)  # unknown or unbuilt names fail with the registry's message
    if name not in PROFILES:
        from fasa_cli.errors import FasaError

        raise FasaError(f"profile '{name}' is not a classification profile", f"use one of: {', '.join(PROFILES)}")
    return PROFILES[name]
