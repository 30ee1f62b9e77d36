"""One Mask R-CNN config template for every profile, method and FASA setting.

`build_config` turns (RunConfig, dataset, profile) into a plain mmengine config dict; nothing
else in the suite writes mmdet configs, so every table's rows differ only in data. A run's
method changes the finished dict through its plug-in (fasa_cli.methods.apply_method).
"""

from __future__ import annotations

from pathlib import Path

from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.backend.launch import Launch, dist_backend
from fasa_cli.backend.profiles import DETECTORS, Profile, detection_budget, get_profile
from fasa_cli.backend.stages import FIRST_STAGE_KEY, STAGE_DIR, first_stage_config
from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.methods import apply_method
from fasa_cli.registry import lookup
from fasa_cli.runconfig import RunConfig
from fasa_cli.rundir import engine_default_hooks

# Share of the training images held out when train.val_split is "train_holdout".
HOLDOUT_FRACTION = 0.1


def _resnet_channels(p: Profile) -> list[int]:
    expansion = 1 if p.depth in (18, 34) else 4
    return [p.base_channels * expansion * 2**i for i in range(4)]


def _roi_extractor(p: Profile) -> str:
    # mmdet resolves roi_layer types in mmcv.ops only; FASARoIExtractor also knows ours.
    return "SingleRoIExtractor" if p.roi_op == "RoIAlign" else "FASARoIExtractor"


def _model(p: Profile, num_classes: int, fasa: dict | None, class_counts: list[int],
           fasa_stages: str = "all") -> dict:
    """The detector. Its kind is data (`DETECTORS[p.detector]`): the template writes one box
    head (the first stage's) and one RCNN training config; a cascade's RoI head expands them
    into its stages (fasa_cli/mmdet_ext/cascade.py), so methods edit one head either way."""
    ch = p.fpn_channels
    det = DETECTORS[p.detector]
    bbox_head = dict(
        type="Shared2FCBBoxHead", in_channels=ch, fc_out_channels=p.fc_channels,
        roi_feat_size=7, num_classes=num_classes,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                        target_stds=list(det.stages[0].target_stds)),
        reg_class_agnostic=p.class_agnostic_box or det.reg_class_agnostic,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(det.bbox_loss))
    if fasa is not None:
        bbox_head.update(type="FASAShared2FCBBoxHead", fasa=fasa, class_counts=class_counts)
    init = dict(type="Pretrained", checkpoint=p.pretrained) if p.pretrained else None
    test_max_per_img, test_score_thr = detection_budget(p)
    return dict(
        type=det.model_type,
        data_preprocessor=dict(type="DetDataPreprocessor", mean=list(p.pixel_mean),
                               std=list(p.pixel_std), bgr_to_rgb=p.bgr_to_rgb, pad_mask=True,
                               pad_size_divisor=32),
        backbone=dict(type=p.backbone, depth=p.depth, base_channels=p.base_channels,
                      num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=p.frozen_stages,
                      norm_cfg=dict(type="BN", requires_grad=p.bn_requires_grad), norm_eval=p.norm_eval,
                      style="pytorch", init_cfg=init, **p.backbone_args),
        neck=dict(type="FPN", in_channels=_resnet_channels(p), out_channels=ch, num_outs=5),
        rpn_head=dict(
            type="RPNHead", in_channels=ch, feat_channels=ch,
            anchor_generator=dict(type="AnchorGenerator", scales=list(p.anchor_scales),
                                  ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(det.rpn_bbox_loss)),
        roi_head=dict(
            type=det.roi_head_type, **det.roi_head_args(fasa_stages),
            bbox_roi_extractor=dict(
                type=_roi_extractor(p), out_channels=ch, featmap_strides=[4, 8, 16, 32],
                roi_layer=dict(type=p.roi_op, output_size=7,
                               sampling_ratio=p.roi_sampling_ratio)),
            bbox_head=bbox_head,
            mask_roi_extractor=dict(
                type=_roi_extractor(p), out_channels=ch, featmap_strides=[4, 8, 16, 32],
                roi_layer=dict(type=p.roi_op, output_size=14,
                               sampling_ratio=p.roi_sampling_ratio)),
            mask_head=dict(type="BatchedPasteMaskHead", num_convs=p.mask_convs, in_channels=ch,
                           conv_out_channels=p.mask_channels, num_classes=num_classes,
                           class_agnostic=p.class_agnostic_mask,
                           loss_mask=dict(type="CrossEntropyLoss", use_mask=True,
                                          loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3,
                                   min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                     sampler=dict(type="RandomSampler", num=p.rpn_samples, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=2 * p.rpn_proposals_train,
                              max_per_img=p.rpn_proposals_train,
                              nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=det.stages[0].iou_thr,
                                    neg_iou_thr=det.stages[0].iou_thr, min_pos_iou=det.stages[0].iou_thr,
                                    match_low_quality=det.match_low_quality, ignore_iof_thr=-1),
                      sampler=dict(type="RandomSampler", num=p.roi_samples, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=p.rpn_proposals_test, max_per_img=p.rpn_proposals_test,
                     nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(score_thr=test_score_thr, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=test_max_per_img, mask_thr_binary=0.5)),
    )


_DATASET_TYPES = {"lvis": "FASALVISDataset", "coco": "CocoDataset"}


def _evaluator(p: Profile, data: DatasetInfo, work_dir: Path) -> dict:
    """LVIS AP; plus AP-fixed / AP-pool when the profile evaluates them (its test budget is
    then the larger one, and the LVIS metrics see each image's standard budget); COCO AP with
    COCO-LT's AP1..AP4 bins for COCO-format data."""
    common = dict(ann_file=str(data.root / data.val_ann), iou_types=("segm", "bbox"), max_dets=300,
                  outfile=str(work_dir / "detections.json.gz"))
    if data.format == "coco":
        return dict(type="FASACocoMetric", bins=data.bins, **common)
    if p.fixed_dets_per_class is not None:
        return dict(type="FASALVISFixedPoolMetric", dets_per_class=p.fixed_dets_per_class,
                    standard_max_per_img=p.max_per_img, standard_score_thr=p.score_thr, **common)
    return dict(type="FASALVISMetric", **common)


def _pipelines(p: Profile) -> tuple[list, list]:
    if len(p.train_scales) == 1:
        resize = dict(type="Resize", scale=p.train_scales[0], keep_ratio=True)
    else:
        resize = dict(type="RandomChoiceResize", scales=list(p.train_scales), keep_ratio=True)
    train = [dict(type="LoadImageFromFile"),
             dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
             resize, dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]
    test = [dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=p.test_scale, keep_ratio=True),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
            dict(type="PackDetInputs",
                 meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))]
    return train, test


def _optimizer(p: Profile, lr: float) -> dict:
    if p.optimizer == "SGD":
        return dict(type="SGD", lr=lr, momentum=0.9, weight_decay=p.weight_decay)
    return dict(type=p.optimizer, lr=lr, weight_decay=p.weight_decay)


def build_config(run: RunConfig, data: DatasetInfo, work_dir: Path, seed: int,
                 launch: Launch | None = None) -> dict:
    """The full mmengine config of one run (`launch`: its processes, default one)."""
    if run.task != "detection":
        raise NotBuiltError("the classification path (CIFAR-100-LT, Tables 7, 10, 11)")
    lookup("method", run.method)  # unknown or unbuilt: the registry's message, before any work
    p = get_profile(run.profile)
    t = run.train
    if t.max_iters is not None:
        raise FasaError("train.max_iters is not supported: FASA adapts once per epoch",
                        "set train.epochs instead")
    epochs = t.epochs or p.epochs
    batch_size = t.batch_size or p.batch_size
    lr = t.lr or p.lr
    val_split = t.val_split or "val"
    val_images = t.val_loss_images or p.val_loss_images
    train_pipeline, test_pipeline = _pipelines(p)
    num_classes = len(data.class_names)
    metainfo = dict(classes=tuple(data.class_names))

    if data.format == "coco" and val_split == "train_holdout":
        raise FasaError("train.val_split 'train_holdout' is only built for LVIS-format data",
                        "use val_split: val on COCO-LT")

    def dataset(ann: str, pipeline: list, test_mode: bool = False, holdout: str | None = None):
        prefix = data.train_prefix if ann == data.train_ann else data.val_prefix
        cfg = dict(type=_DATASET_TYPES[data.format], data_root=str(data.root), ann_file=ann,
                   data_prefix=dict(img=prefix), metainfo=metainfo, pipeline=pipeline,
                   test_mode=test_mode,
                   filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=0))
        if holdout:
            cfg["holdout"] = dict(fraction=HOLDOUT_FRACTION, part=holdout)
        return cfg

    holdout = val_split == "train_holdout"
    train_set = dataset(data.train_ann, train_pipeline, holdout="train" if holdout else None)
    if holdout:
        val_loss_set = dataset(data.train_ann, train_pipeline, holdout="holdout")
    else:
        val_loss_set = dataset(data.val_ann, train_pipeline)

    # FASA's own generator follows the run's seed, so seeds differ in virtual features too.
    fasa = dict(run.fasa.core_settings(), seed=seed) if run.fasa is not None else None
    class_facts = dict(frequency=data.frequency, class_names=data.class_names,
                       class_counts=data.instance_counts)
    if fasa is not None:
        last_hook = dict(type="FASAHook", val_dataset=val_loss_set, max_images=val_images,
                         batch_size=batch_size, subset_seed=seed, signal_norm=run.fasa.val_signal,
                         balance=run.fasa.val_balance, oversample_thr=run.fasa.val_oversample_thr,
                         **class_facts)
    else:
        last_hook = dict(type="ClassifierNormsHook", **class_facts)

    cfg = dict(
        default_scope="mmdet",
        custom_imports=dict(imports=["fasa_cli.mmdet_ext"], allow_failed_imports=False),
        work_dir=str(work_dir),
        model=_model(p, num_classes, fasa, data.instance_counts,
                     run.fasa.cascade_stages if run.fasa is not None else "all"),
        train_dataloader=dict(
            batch_size=batch_size, num_workers=p.num_workers,
            persistent_workers=p.num_workers > 0,
            sampler=dict(type="DefaultSampler", shuffle=True, seed=seed),
            batch_sampler=dict(type="AspectRatioBatchSampler"), dataset=train_set),
        test_dataloader=dict(
            batch_size=batch_size if p.num_workers == 0 else 1, num_workers=p.num_workers,
            persistent_workers=False, drop_last=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dataset(data.val_ann, test_pipeline, test_mode=True)),
        test_evaluator=_evaluator(p, data, work_dir),
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=epochs + 1),
        test_cfg=dict(type="TestLoop"),
        optim_wrapper=dict(type="OptimWrapper",
                           optimizer=_optimizer(p, lr),
                           clip_grad=dict(max_norm=35, norm_type=2) if p.pretrained is None
                           else None),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0,
                 end=p.warmup_iters),
            dict(type="MultiStepLR", by_epoch=True, begin=0, end=epochs,
                 milestones=[s for s in p.lr_steps if s < epochs], gamma=0.1)],
        default_hooks=engine_default_hooks(),
        custom_hooks=[dict(type="RNGStateHook"), dict(type="ProgressHook"), last_hook],
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"),
                     dist_cfg=dict(backend="nccl")),
        randomness=dict(seed=seed, deterministic=False),
        log_processor=dict(type="LogProcessor", window_size=20, by_epoch=True),
        log_level="INFO",
        launcher="none",
    )
    _scale_out(cfg, p, batch_size, launch or Launch())
    edit = apply_method(cfg, run, class_counts=data.instance_counts, frequency=data.frequency, seed=seed,
                        image_counts=data.image_counts, train_images=data.train_images or 0)
    if edit.first_stage is not None:  # a two-stage method (cRT, BAGS): stage 1's config travels along
        cfg[FIRST_STAGE_KEY] = first_stage_config(
            run, edit.first_stage, lambda stage_run: build_config(stage_run, data, work_dir / STAGE_DIR, seed, launch))
    return cfg


def warmup_iters(p: Profile, total_batch: int) -> int:
    """The profile's warm-up in iterations of `total_batch` images: as many images as at its
    base batch (500 iterations x 16 images = 4000 iterations at 1 GPU x 2 images)."""
    if p.base_batch_size is None:
        return p.warmup_iters
    return max(1, round(p.warmup_iters * p.base_batch_size / total_batch))


def _scale_out(cfg: dict, p: Profile, batch_size: int, launch: Launch) -> None:
    """Learning rate and warm-up for the real total batch; data-parallel settings for a run
    launched on several processes. A one-process run of a profile without a base batch (the
    CPU profiles) is left exactly as it was."""
    if p.base_batch_size is not None:
        # mmengine's Runner.scale_lr: lr x (world size x batch) / base_batch_size.
        cfg["auto_scale_lr"] = dict(enable=True, base_batch_size=p.base_batch_size)
        for scheduler in cfg["param_scheduler"]:
            if scheduler["type"] == "LinearLR" and not scheduler["by_epoch"]:
                scheduler["end"] = warmup_iters(p, launch.world_size * batch_size)
    if not launch.distributed:
        return
    cfg["launcher"] = launch.launcher
    cfg["env_cfg"]["dist_cfg"] = dict(backend=dist_backend())
    # Each rank draws its own augmentations and RoI samples (seed + rank); the samplers keep
    # the run's seed, so the ranks' shards of every epoch's order partition the data.
    cfg["randomness"]["diff_rank_seed"] = True
    # device_ids only for GPU modules (mmengine always passes LOCAL_RANK; CPU DDP refuses it).
    cfg["model_wrapper_cfg"] = dict(type="FASADistributedDataParallel", broadcast_buffers=False,
                                    find_unused_parameters=False)
    for hook in cfg["custom_hooks"]:
        if hook["type"] == "FASAHook":
            hook["fasa_stats"] = launch.fasa_stats
