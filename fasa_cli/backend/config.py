"""One Mask R-CNN config template for every profile, method and FASA setting.

`build_config` turns (RunConfig, dataset, profile) into a plain mmengine config dict; nothing
else in the suite writes mmdet configs, so every table's rows differ only in data. A run's
method changes the finished dict through its plug-in (fasa_cli.methods.apply_method).
"""

from __future__ import annotations

from pathlib import Path

from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.backend.profiles import Profile, get_profile
from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.methods import apply_method
from fasa_cli.registry import lookup
from fasa_cli.runconfig import RunConfig

# Share of the training images held out when train.val_split is "train_holdout".
HOLDOUT_FRACTION = 0.1


def _resnet_channels(p: Profile) -> list[int]:
    expansion = 1 if p.depth in (18, 34) else 4
    return [p.base_channels * expansion * 2**i for i in range(4)]


def _roi_extractor(p: Profile) -> str:
    # mmdet resolves roi_layer types in mmcv.ops only; FASARoIExtractor also knows ours.
    return "SingleRoIExtractor" if p.roi_op == "RoIAlign" else "FASARoIExtractor"


def _model(p: Profile, num_classes: int, fasa: dict | None, class_counts: list[int]) -> dict:
    ch = p.fpn_channels
    bbox_head = dict(
        type="Shared2FCBBoxHead", in_channels=ch, fc_out_channels=p.fc_channels,
        roi_feat_size=7, num_classes=num_classes,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=False,
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0))
    if fasa is not None:
        bbox_head.update(type="FASAShared2FCBBoxHead", fasa=fasa, class_counts=class_counts)
    init = dict(type="Pretrained", checkpoint=p.pretrained) if p.pretrained else None
    return dict(
        type="MaskRCNN",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True,
                               pad_size_divisor=32),
        backbone=dict(type="ResNet", depth=p.depth, base_channels=p.base_channels,
                      num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=p.frozen_stages,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=p.norm_eval,
                      style="pytorch", init_cfg=init),
        neck=dict(type="FPN", in_channels=_resnet_channels(p), out_channels=ch, num_outs=5),
        rpn_head=dict(
            type="RPNHead", in_channels=ch, feat_channels=ch,
            anchor_generator=dict(type="AnchorGenerator", scales=list(p.anchor_scales),
                                  ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(
                type=_roi_extractor(p), out_channels=ch, featmap_strides=[4, 8, 16, 32],
                roi_layer=dict(type=p.roi_op, output_size=7,
                               sampling_ratio=p.roi_sampling_ratio)),
            bbox_head=bbox_head,
            mask_roi_extractor=dict(
                type=_roi_extractor(p), out_channels=ch, featmap_strides=[4, 8, 16, 32],
                roi_layer=dict(type=p.roi_op, output_size=14,
                               sampling_ratio=p.roi_sampling_ratio)),
            mask_head=dict(type="FCNMaskHead", num_convs=p.mask_convs, in_channels=ch,
                           conv_out_channels=p.mask_channels, num_classes=num_classes,
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
            rcnn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5,
                                    min_pos_iou=0.5, match_low_quality=True, ignore_iof_thr=-1),
                      sampler=dict(type="RandomSampler", num=p.roi_samples, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=p.rpn_proposals_test, max_per_img=p.rpn_proposals_test,
                     nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(score_thr=p.score_thr, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=p.max_per_img, mask_thr_binary=0.5)),
    )


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


def build_config(run: RunConfig, data: DatasetInfo, work_dir: Path, seed: int) -> dict:
    """The full mmengine config of one run."""
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

    def dataset(ann: str, pipeline: list, test_mode: bool = False, holdout: str | None = None):
        cfg = dict(type="FASALVISDataset", data_root=str(data.root), ann_file=ann,
                   data_prefix=dict(img=""), metainfo=metainfo, pipeline=pipeline,
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
        model=_model(p, num_classes, fasa, data.instance_counts),
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
        test_evaluator=dict(type="FASALVISMetric", ann_file=str(data.root / data.val_ann),
                            iou_types=("segm", "bbox"), max_dets=300,
                            outfile=str(work_dir / "detections.json.gz")),
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
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=20),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=2),
            sampler_seed=dict(type="DistSamplerSeedHook")),
        custom_hooks=[dict(type="RNGStateHook"), dict(type="ProgressHook"), last_hook],
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"),
                     dist_cfg=dict(backend="nccl")),
        randomness=dict(seed=seed, deterministic=False),
        log_processor=dict(type="LogProcessor", window_size=20, by_epoch=True),
        log_level="INFO",
        launcher="none",
    )
    apply_method(cfg, run, class_counts=data.instance_counts, frequency=data.frequency, seed=seed)
    return cfg
