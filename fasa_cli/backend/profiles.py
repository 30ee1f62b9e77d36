"""Model + schedule profiles. A profile is data: one Mask R-CNN template (config.py) reads it,
so the compact CPU model and the paper's LVIS protocol share one code path."""

from __future__ import annotations

from dataclasses import dataclass, field

from fasa_cli.registry import lookup


@dataclass(frozen=True)
class Profile:
    name: str
    depth: int                      # ResNet depth
    base_channels: int              # ResNet stem width (64 = standard)
    fpn_channels: int
    pretrained: str | None          # backbone init checkpoint, None = from scratch
    frozen_stages: int
    norm_eval: bool                 # freeze BN statistics (only sensible when pretrained)
    train_scales: tuple[tuple[int, int], ...]
    test_scale: tuple[int, int]
    anchor_scales: tuple[int, ...]
    rpn_samples: int
    rpn_proposals_train: int
    rpn_proposals_test: int
    roi_samples: int                # sampled RoIs per image for the box head
    roi_sampling_ratio: int
    fc_channels: int                # box head FC width: FASA's feature dimension
    mask_convs: int
    mask_channels: int
    batch_size: int                 # images per device
    epochs: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_iters: int
    lr_steps: tuple[int, ...]       # epochs at which lr drops x0.1
    score_thr: float
    max_per_img: int
    val_loss_images: int | None     # cap on FASA's validation-loss pass (None = all)
    num_workers: int
    extra: dict = field(default_factory=dict)
    # RoI feature op: mmcv's "RoIAlign", or "BatchedRoIAlign" (fasa_cli.mmdet_ext.roi_align:
    # the same numbers to float rounding; faster only with 1 torch thread so far, see issue 12).
    roi_op: str = "RoIAlign"


PROFILES: dict[str, Profile] = {
    # FACTS.md section 3: about 0.5 s per iteration at batch 8 on 2 CPU cores.
    "cpu-compact": Profile(
        name="cpu-compact", depth=18, base_channels=32, fpn_channels=64, pretrained=None,
        frozen_stages=-1, norm_eval=False, train_scales=((128, 128),), test_scale=(128, 128),
        anchor_scales=(4,), rpn_samples=128, rpn_proposals_train=200, rpn_proposals_test=100,
        roi_samples=32, roi_sampling_ratio=2, fc_channels=256, mask_convs=2, mask_channels=64,
        batch_size=8, epochs=4, optimizer="AdamW", lr=1e-3, weight_decay=0.05, warmup_iters=100,
        lr_steps=(3,), score_thr=1e-4, max_per_img=50, val_loss_images=128, num_workers=0,
    ),
    # The paper's LVIS v1 protocol (FACTS.md section 1): R50-FPN, 24 epochs, 2 images x 8 GPUs.
    "lvis-r50": Profile(
        name="lvis-r50", depth=50, base_channels=64, fpn_channels=256,
        pretrained="torchvision://resnet50", frozen_stages=1, norm_eval=True,
        train_scales=tuple((1333, s) for s in (640, 672, 704, 736, 768, 800)),
        test_scale=(1333, 800), anchor_scales=(8,), rpn_samples=256, rpn_proposals_train=1000,
        rpn_proposals_test=1000, roi_samples=512, roi_sampling_ratio=0, fc_channels=1024,
        mask_convs=4, mask_channels=256, batch_size=2, epochs=24, optimizer="SGD", lr=0.02,
        weight_decay=1e-4, warmup_iters=500, lr_steps=(16, 22), score_thr=1e-4,
        max_per_img=300, val_loss_images=None, num_workers=2,
    ),
}


def get_profile(name: str) -> Profile:
    lookup("profile", name)  # unknown or unbuilt names fail with the registry's message
    return PROFILES[name]
