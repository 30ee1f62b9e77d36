"""Model + schedule profiles. A profile is data: one detector template (config.py) reads it,
so the compact CPU model and the paper's LVIS protocol share one code path.

A profile names its detector (`detector`: a key of DETECTORS, Mask R-CNN or Cascade Mask
R-CNN); the detector is data too (its model and RoI-head types and its box-head stages), so
the template has no per-detector branches. Larger models are written as small deltas of a
base profile (`dataclasses.replace`), never as copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    # --- additions for Tables 5, 6 and 13 (defaults keep every earlier profile as it was) ---
    detector: str = "mask_rcnn"       # a key of DETECTORS
    backbone: str = "ResNet"          # mmdet backbone type ("ResNeXt" for X101)
    backbone_args: dict = field(default_factory=dict)  # e.g. ResNeXt's groups / base_width
    bn_requires_grad: bool = True     # False for the Caffe2-converted ResNeXt weights
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    bgr_to_rgb: bool = True
    class_agnostic_box: bool = False  # one box regressor for all classes (COCO-LT protocol)
    class_agnostic_mask: bool = False  # one mask for all classes (COCO-LT protocol)
    # AP-fixed / AP-pool (Dave et al., 2021; Table 13): K detections per class over the split.
    # None = the profile does not evaluate them. When set, the detector's test-time budget
    # becomes `fixed_max_per_img` per image above `fixed_score_thr`, so classes can reach K;
    # the standard metrics still see exactly what `max_per_img` / `score_thr` would give
    # (each image's top `max_per_img` above `score_thr`: NMS is per class and greedy, so the
    # detections above a threshold do not depend on those below it).
    fixed_dets_per_class: int | None = None
    fixed_max_per_img: int | None = None
    fixed_score_thr: float | None = None
    # Total batch (images per iteration over all GPUs) that `lr` and `warmup_iters` are tuned
    # for: mmengine's auto_scale_lr scales lr linearly to the real total batch, and the
    # warm-up is stretched to cover the same number of images. None: lr and warm-up are used
    # as they are at any batch (the CPU profiles: AdamW, tuned for their own batch).
    base_batch_size: int | None = None


@dataclass(frozen=True)
class Stage:
    """One box-head stage: its RoI assigner's IoU threshold, box-delta stds and loss weight."""

    iou_thr: float
    target_stds: tuple[float, float, float, float]
    loss_weight: float = 1.0


@dataclass(frozen=True)
class Detector:
    """A two-stage detector as data: one stage = Mask R-CNN, several = Cascade Mask R-CNN."""

    name: str
    model_type: str                  # mmdet detector class
    roi_head_type: str               # registered RoI head (StagedCascadeRoIHead: fasa_cli.mmdet_ext.cascade)
    stages: tuple[Stage, ...]
    reg_class_agnostic: bool = False
    match_low_quality: bool = True
    bbox_loss: dict = field(default_factory=lambda: dict(type="L1Loss", loss_weight=1.0))
    rpn_bbox_loss: dict = field(default_factory=lambda: dict(type="L1Loss", loss_weight=1.0))

    def roi_head_args(self, fasa_stages: str = "all") -> dict:
        """The RoI head's extra arguments: none for one stage; per-stage overrides of the one
        box head and training config the template writes, for a cascade."""
        if len(self.stages) == 1:
            return {}
        return dict(
            num_stages=len(self.stages),
            stage_loss_weights=[s.loss_weight for s in self.stages],
            stage_bbox_overrides=[dict(bbox_coder=dict(target_stds=list(s.target_stds)))
                                  for s in self.stages],
            stage_train_overrides=[dict(assigner=dict(pos_iou_thr=s.iou_thr, neg_iou_thr=s.iou_thr,
                                                      min_pos_iou=s.iou_thr))
                                   for s in self.stages],
            fasa_stages=fasa_stages)


DETECTORS: dict[str, Detector] = {
    "mask_rcnn": Detector("mask_rcnn", "MaskRCNN", "StandardRoIHead",
                          (Stage(0.5, (0.1, 0.1, 0.2, 0.2)),)),
    # mmdet 3.3 configs/_base_/models/cascade-mask-rcnn_r50_fpn.py: IoU 0.5 / 0.6 / 0.7, stds
    # halved per stage, stage loss weights 1 / 0.5 / 0.25, class-agnostic regression,
    # smooth-L1 box losses, no low-quality matches.
    "cascade_mask_rcnn": Detector(
        "cascade_mask_rcnn", "CascadeRCNN", "StagedCascadeRoIHead",
        (Stage(0.5, (0.1, 0.1, 0.2, 0.2), 1.0), Stage(0.6, (0.05, 0.05, 0.1, 0.1), 0.5),
         Stage(0.7, (0.033, 0.033, 0.067, 0.067), 0.25)),
        reg_class_agnostic=True, match_low_quality=False,
        bbox_loss=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0),
        rpn_bbox_loss=dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)),
}


def detection_budget(p: Profile) -> tuple[int, float]:
    """(max detections per image, score threshold) the detector emits at test time: the
    standard budget, or the larger AP-fixed one when the profile evaluates AP-fixed/pool."""
    if p.fixed_dets_per_class is None:
        return p.max_per_img, p.score_thr
    return (p.fixed_max_per_img or p.max_per_img,
            p.score_thr if p.fixed_score_thr is None else p.fixed_score_thr)


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
        base_batch_size=16,  # lr 0.02 and 500 warm-up iterations are for 8 GPUs x 2 images
    ),
}


# Larger models and other protocols: deltas of a base profile.
_R50, _COMPACT = PROFILES["lvis-r50"], PROFILES["cpu-compact"]
# AP-fixed on LVIS v1 val: 10,000 per class (Dave et al.) x 1203 classes over 19,809 images is
# about 600 per image on average; 1000 per image above 1e-7 (their MIN_SCORE) leaves room.
_LVIS_FIXED = dict(fixed_dets_per_class=10_000, fixed_max_per_img=1000, fixed_score_thr=1e-7)
# The embedded data: K = 1000 per class is 2/3 of a detection per validation image per class
# on embedded-small (1500 images), LVIS's ratio being 1/2; 100 per image leaves room for it.
_COMPACT_FIXED = dict(fixed_dets_per_class=1000, fixed_max_per_img=100, fixed_score_thr=1e-7)
PROFILES.update({
    # Table 5 / 13, Mask R-CNN R101-FPN (mmdet configs/lvis/mask-rcnn_r101_fpn_sample1e-3_ms-1x).
    "lvis-r101": replace(_R50, name="lvis-r101", depth=101, pretrained="torchvision://resnet101",
                         **_LVIS_FIXED),
    # Table 5, X101-32x8d (mmdet configs/mask_rcnn/mask-rcnn_x101-32x8d_fpn_1x_coco.py): Caffe2
    # weights, so BGR input with their mean/std and frozen BN affine parameters.
    "lvis-x101": replace(_R50, name="lvis-x101", backbone="ResNeXt", depth=101,
                         backbone_args=dict(groups=32, base_width=8), bn_requires_grad=False,
                         pretrained="open-mmlab://detectron2/resnext101_32x8d",
                         pixel_mean=(103.530, 116.280, 123.675), pixel_std=(57.375, 57.120, 58.395),
                         bgr_to_rgb=False),
    # Table 5 / 13, Cascade Mask R-CNN R101-FPN.
    "lvis-cascade-r101": replace(_R50, name="lvis-cascade-r101", depth=101,
                                 pretrained="torchvision://resnet101", detector="cascade_mask_rcnn",
                                 **_LVIS_FIXED),
    # Table 6, COCO-LT (SimCal's protocol, paper Sec 4.3): single scale 800, class-agnostic
    # box and mask heads, 12 epochs with steps at 8 and 11, score 0.05, 100 per image.
    "coco-lt-r50": replace(_R50, name="coco-lt-r50", train_scales=((1333, 800),), epochs=12,
                           lr_steps=(8, 11), score_thr=0.05, max_per_img=100,
                           class_agnostic_box=True, class_agnostic_mask=True),
    # CPU counterparts with the same structure, for the embedded data.
    "cpu-compact-deep": replace(_COMPACT, name="cpu-compact-deep", depth=34, **_COMPACT_FIXED),
    "cpu-compact-x": replace(_COMPACT, name="cpu-compact-x", backbone="ResNeXt", depth=50,
                             base_channels=16, backbone_args=dict(groups=4, base_width=4)),
    "cpu-compact-cascade": replace(_COMPACT, name="cpu-compact-cascade", depth=34,
                                   detector="cascade_mask_rcnn", **_COMPACT_FIXED),
    # Score threshold kept at 1e-4 (not the protocol's 0.05): a compact model trained for 4
    # epochs scores tail classes far lower, and 0.05 would zero AP1 by construction.
    "cpu-compact-coco-lt": replace(_COMPACT, name="cpu-compact-coco-lt", max_per_img=100,
                                   class_agnostic_box=True, class_agnostic_mask=True),
})


def get_profile(name: str) -> Profile:
    lookup("profile", name)  # unknown or unbuilt names fail with the registry's message
    return PROFILES[name]
