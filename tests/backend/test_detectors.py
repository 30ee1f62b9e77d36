"""Tables 5, 6 and 13's profiles: larger models as deltas of a base profile, one config template
for Mask R-CNN and Cascade Mask R-CNN (a detector field, not branches), FASA's cascade-stage
switch, the AP-fixed test budget and COCO-LT's class-agnostic heads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fasa_cli.backend.config import build_config
from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.backend.profiles import DETECTORS, PROFILES, detection_budget
from fasa_cli.mmdet_ext.cascade import stage_bbox_heads
from fasa_cli.runconfig import RunConfig

DATA = DatasetInfo("embedded-tiny", Path("/tmp/nowhere"), "annotations/lvis_v1_train.json",
                   "annotations/lvis_v1_val.json", ["a", "b", "c"], ["r", "c", "f"], [2, 30, 400])
COCO = DatasetInfo("embedded-coco-lt-tiny", Path("/tmp/nowhere"), "annotations/coco_lt_train.json",
                   "annotations/instances_val2017.json", ["a", "b", "c"], ["r", "c", "f"], [2, 30, 400],
                   format="coco", train_prefix="train2017/", val_prefix="val2017/",
                   bins={"AP1": [1], "AP2": [2], "AP3": [3], "AP4": []})


def _delta(name: str, base: str) -> dict:
    a, b = dataclasses.asdict(PROFILES[name]), dataclasses.asdict(PROFILES[base])
    return {k: a[k] for k in a if a[k] != b[k]}


def test_larger_profiles_are_small_deltas_of_their_base():
    fixed = {"fixed_dets_per_class", "fixed_max_per_img", "fixed_score_thr"}
    assert set(_delta("lvis-r101", "lvis-r50")) == {"name", "depth", "pretrained"} | fixed
    assert _delta("lvis-cascade-r101", "lvis-r101") == {"name": "lvis-cascade-r101", "detector": "cascade_mask_rcnn"}
    assert set(_delta("lvis-x101", "lvis-r50")) == {"name", "backbone", "depth", "backbone_args", "bn_requires_grad",
                                                    "pretrained", "pixel_mean", "pixel_std", "bgr_to_rgb"}
    assert set(_delta("coco-lt-r50", "lvis-r50")) == {"name", "train_scales", "epochs", "lr_steps", "score_thr",
                                                      "max_per_img", "class_agnostic_box", "class_agnostic_mask"}
    # The CPU counterparts have the same structure on the compact model.
    assert set(_delta("cpu-compact-deep", "cpu-compact")) == {"name", "depth"} | fixed
    assert _delta("cpu-compact-cascade", "cpu-compact-deep") == {"name": "cpu-compact-cascade",
                                                                 "detector": "cascade_mask_rcnn"}
    assert set(_delta("cpu-compact-x", "cpu-compact")) == {"name", "backbone", "depth", "base_channels", "backbone_args"}
    assert set(_delta("cpu-compact-coco-lt", "cpu-compact")) == {"name", "max_per_img", "class_agnostic_box",
                                                                 "class_agnostic_mask"}
    assert PROFILES["coco-lt-r50"].epochs == 12 and PROFILES["coco-lt-r50"].train_scales == ((1333, 800),)


def _cfg(profile: str, data: DatasetInfo = DATA, **run) -> dict:
    cfg = build_config(RunConfig(dataset=data.name, profile=profile, **run), data, Path("/tmp/run"), seed=7)
    json.dumps(cfg)  # plain data: it travels to the child process
    return cfg


def test_one_template_writes_mask_rcnn_and_the_cascade_from_the_detector_field():
    mask, cascade = _cfg("cpu-compact-deep")["model"], _cfg("cpu-compact-cascade")["model"]
    assert (mask["type"], mask["roi_head"]["type"]) == ("MaskRCNN", "StandardRoIHead")
    assert (cascade["type"], cascade["roi_head"]["type"]) == ("CascadeRCNN", "StagedCascadeRoIHead")
    # One box head dict and one RCNN training config either way: methods edit one head.
    assert isinstance(cascade["roi_head"]["bbox_head"], dict) and isinstance(cascade["train_cfg"]["rcnn"], dict)
    roi = cascade["roi_head"]
    assert roi["num_stages"] == 3 and roi["stage_loss_weights"] == [1.0, 0.5, 0.25]
    assert [o["assigner"]["pos_iou_thr"] for o in roi["stage_train_overrides"]] == [0.5, 0.6, 0.7]
    assert [o["bbox_coder"]["target_stds"][0] for o in roi["stage_bbox_overrides"]] == [0.1, 0.05, 0.033]
    assert roi["bbox_head"]["reg_class_agnostic"] is True and mask["roi_head"]["bbox_head"]["reg_class_agnostic"] is False
    assert cascade["train_cfg"]["rcnn"]["assigner"]["match_low_quality"] is False
    # Everything outside the detector's own parts is the same template output.
    for key in ("backbone", "neck", "data_preprocessor"):
        assert cascade[key] == mask[key]
    assert mask["backbone"]["depth"] == 34 and "num_stages" not in mask["roi_head"]


def test_x101_uses_resnext_with_caffe2_input_and_coco_lt_class_agnostic_heads():
    model = _cfg("lvis-x101")["model"]
    backbone = model["backbone"]
    assert (backbone["type"], backbone["depth"], backbone["groups"], backbone["base_width"]) == ("ResNeXt", 101, 32, 8)
    assert backbone["norm_cfg"]["requires_grad"] is False and model["data_preprocessor"]["bgr_to_rgb"] is False
    assert backbone["init_cfg"]["checkpoint"] == "open-mmlab://detectron2/resnext101_32x8d"
    cfg = _cfg("cpu-compact-coco-lt", COCO)
    roi = cfg["model"]["roi_head"]
    assert roi["bbox_head"]["reg_class_agnostic"] is True and roi["mask_head"]["class_agnostic"] is True
    train = cfg["train_dataloader"]["dataset"]
    assert (train["type"], train["data_prefix"]["img"]) == ("CocoDataset", "train2017/")
    assert cfg["test_dataloader"]["dataset"]["data_prefix"]["img"] == "val2017/"
    assert cfg["test_evaluator"]["type"] == "FASACocoMetric" and cfg["test_evaluator"]["bins"] == COCO.bins
    assert cfg["model"]["test_cfg"]["rcnn"]["max_per_img"] == 100


def test_the_test_budget_follows_ap_fixed():
    standard, fixed = _cfg("cpu-compact"), _cfg("cpu-compact-deep")
    assert standard["model"]["test_cfg"]["rcnn"]["max_per_img"] == 50 and standard["test_evaluator"]["type"] == "FASALVISMetric"
    rcnn = fixed["model"]["test_cfg"]["rcnn"]
    assert (rcnn["max_per_img"], rcnn["score_thr"]) == (100, 1e-7) == detection_budget(PROFILES["cpu-compact-deep"])
    evaluator = fixed["test_evaluator"]
    assert evaluator["type"] == "FASALVISFixedPoolMetric" and evaluator["dets_per_class"] == 1000
    # The standard metrics see what cpu-compact's own budget gives.
    assert (evaluator["standard_max_per_img"], evaluator["standard_score_thr"]) == (50, 1e-4)
    lvis = _cfg("lvis-r101")
    assert lvis["model"]["test_cfg"]["rcnn"]["max_per_img"] == 1000 and lvis["test_evaluator"]["dets_per_class"] == 10_000
    assert detection_budget(PROFILES["lvis-x101"]) == (300, 1e-4)


def test_fasa_stage_switch_reaches_the_cascade_and_keeps_config_identity():
    all_stages = _cfg("cpu-compact-cascade", fasa={})["model"]["roi_head"]
    last = _cfg("cpu-compact-cascade", fasa={"cascade_stages": "last"})["model"]["roi_head"]
    assert all_stages["fasa_stages"] == "all" and last["fasa_stages"] == "last"
    assert all_stages["bbox_head"]["type"] == "FASAShared2FCBBoxHead"
    assert "cascade_stages" not in all_stages["bbox_head"]["fasa"]  # a host setting, not the core's
    default = RunConfig(dataset="embedded-small", profile="cpu-compact", fasa={})
    assert default.config_hash() == RunConfig(dataset="embedded-small", profile="cpu-compact",
                                              fasa={"cascade_stages": "all"}).config_hash()
    assert default.config_hash() != default.model_copy(
        update={"fasa": default.fasa.model_copy(update={"cascade_stages": "last"})}).config_hash()


def test_stage_heads_expand_one_head_per_stage():
    overrides = DETECTORS["cascade_mask_rcnn"].roi_head_args()["stage_bbox_overrides"]
    head = dict(type="FASAShared2FCBBoxHead", bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_stds=[0.1] * 4),
                fasa=dict(scale=5.0, seed=7), class_counts=[1, 2])
    heads = stage_bbox_heads(head, overrides, "all")
    assert [h["type"] for h in heads] == ["FASAShared2FCBBoxHead"] * 3
    assert [h["fasa"]["seed"] for h in heads] == [7, 8, 9]  # each stage draws its own virtual features
    assert [h["bbox_coder"]["target_stds"] for h in heads] == [list(o["bbox_coder"]["target_stds"]) for o in overrides]
    assert head["bbox_coder"]["target_stds"] == [0.1] * 4  # the written head is not modified
    last = stage_bbox_heads(head, overrides, "last")
    assert [h["type"] for h in last] == ["Shared2FCBBoxHead", "Shared2FCBBoxHead", "FASAShared2FCBBoxHead"]
    assert "fasa" not in last[0] and "class_counts" not in last[0]
    hosted = stage_bbox_heads(dict(head, type="FASAPluginShared2FCBBoxHead", plugins=[{"name": "smote"}]), overrides, "last")
    assert hosted[0]["type"] == "PluginShared2FCBBoxHead" and hosted[0]["class_counts"] == [1, 2]
    with pytest.raises(ValueError, match="fasa_stages"):
        stage_bbox_heads(head, overrides, "first")


@pytest.mark.parametrize("stages, expected", [("all", [True, True, True]), ("last", [False, False, True])])
def test_the_built_cascade_runs_fasa_in_the_chosen_stages(stages, expected):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import fasa_cli.mmdet_ext  # noqa: F401
    from fasa_cli.mmdet_ext.heads import FASAHeadMixin

    register_all_modules()
    cfg = Config(_cfg("cpu-compact-cascade", fasa={"cascade_stages": stages}))
    model = MODELS.build(cfg.model)
    heads = list(model.roi_head.bbox_head)
    assert [isinstance(h, FASAHeadMixin) for h in heads] == expected
    assert [h.bbox_coder.stds[0] for h in heads] == pytest.approx([0.1, 0.05, 0.033])
    assert len(model.roi_head.mask_head) == 3 and len(model.roi_head.bbox_assigner) == 3
    assert [a.pos_iou_thr for a in model.roi_head.bbox_assigner] == [0.5, 0.6, 0.7]
