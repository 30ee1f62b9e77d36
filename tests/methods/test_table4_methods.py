"""Table 4 and 15 methods as run edits: what each changes in the config (losses, classifier
width, sampler, the two stages of cRT / BAGS with their schedules, the NMS re-sampling RPN),
NMS re-sampling's per-group thresholds, and one real training step of each on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

import fasa_cli.mmdet_ext  # noqa: F401  (registers the modules)
from fasa_cli.backend.config import build_config
from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.backend.stages import FIRST_STAGE_KEY
from fasa_cli.errors import FasaError
from fasa_cli.mmdet_ext.nms_resampling import NMSResamplingRPNHead
from fasa_cli.runconfig import RunConfig, TrainOverrides

DATA = DatasetInfo("embedded-small", Path("/tmp/nowhere"), "annotations/lvis_v1_train.json",
                   "annotations/lvis_v1_val.json", ["a", "b", "c", "d"], ["r", "c", "f", "f"],
                   [2, 30, 120, 400], image_counts=[2, 20, 90, 300], train_images=1200)
TABLE4 = ("eql", "crt", "bags", "seesaw", "nms_resampling")


def _cfg(method: str, fasa: dict | None = None, profile: str = "cpu-compact", **args) -> dict:
    run = RunConfig(dataset="embedded-small", profile=profile, method=method, method_args=args, fasa=fasa)
    return build_config(run, DATA, Path("/tmp/run"), seed=0)


def _head_of(cfg: dict):
    from mmdet.registry import MODELS

    return MODELS.build(ConfigDict(cfg["model"]["roi_head"]["bbox_head"]))


def test_eql_seesaw_and_bags_set_their_loss_and_classifier_width():
    eql = _cfg("eql")
    loss = eql["model"]["roi_head"]["bbox_head"]["loss_cls"]
    # scaled threshold: 2 * (300 / 2) ** (815 / 1203) = 59.6 images
    assert loss["type"] == "EQLv1Loss" and loss["tail"] == [True, True, False, False]
    # LVIS's lambda as is (1.3 of 1200 images) would leave no tail class on this data
    assert _cfg("eql", thresholds="lvis")["model"]["roi_head"]["bbox_head"]["loss_cls"]["tail"] == [False] * 4
    assert _head_of(eql).fc_cls.out_features == 4
    seesaw = _cfg("seesaw", fasa={})
    head = seesaw["model"]["roi_head"]["bbox_head"]
    assert head["cls_predictor_cfg"] == dict(type="NormedLinear", tempearture=20.0)
    assert head["loss_cls"]["type"] == "SourceAwareSeesawLoss" and head["loss_cls"]["count_virtual"] is False
    assert seesaw["train_dataloader"]["dataset"]["type"] == "ClassBalancedDataset"
    built = _head_of(seesaw)
    assert built.fc_cls.out_features == 6 and type(built.fc_cls).__name__ == "NormedLinear"
    bags = _cfg("bags")
    assert bags["model"]["roi_head"]["bbox_head"]["loss_cls"]["class_groups"] == [0, 1, 1, 2]
    assert _head_of(bags).fc_cls.out_features == 4 + 3 + 2


@pytest.mark.parametrize("method", ["rfs", "seesaw", "crt", "bags"])
def test_rfs_threshold_is_scaled_to_the_data_so_rare_images_repeat(method):
    # image counts 2..300 of 1200: t = 2 * (300 / 2) ** (798 / 1203) / 1200 = 0.0463, so
    # the rarest class (f = 2 / 1200) repeats sqrt(t / f) = 5.3 times; LVIS's 1e-3 would
    # repeat nothing (every f >= 1.7e-3)
    wrapper = _cfg(method)["train_dataloader"]["dataset"]
    assert wrapper["type"] == "ClassBalancedDataset"
    assert wrapper["oversample_thr"] == pytest.approx(2 * 150 ** (798 / 1203) / 1200)
    assert (wrapper["oversample_thr"] / (2 / 1200)) ** 0.5 == pytest.approx(5.27, abs=0.01)
    lvis = _cfg(method, thresholds="lvis")["train_dataloader"]["dataset"]
    assert lvis["oversample_thr"] == 1e-3
    if method != "rfs":
        assert _cfg(method, sampler="uniform")["train_dataloader"]["dataset"]["type"] != "ClassBalancedDataset"


@pytest.mark.parametrize("method", ["crt", "bags"])
@pytest.mark.parametrize("fasa", [None, {}])
def test_two_stage_methods_carry_a_plain_first_stage_and_freeze_all_but_fc_cls(method, fasa):
    cfg = _cfg(method, fasa=fasa)
    first = cfg[FIRST_STAGE_KEY]["config"]
    assert cfg[FIRST_STAGE_KEY]["reinit"] == ["roi_head.bbox_head.fc_cls"]
    # stage 1: the baseline (softmax CE, uniform sampling, no FASA), half the epochs, in stage1/
    assert first["model"]["roi_head"]["bbox_head"]["type"] == "Shared2FCBBoxHead"
    assert first["model"]["roi_head"]["bbox_head"]["loss_cls"]["type"] == "CrossEntropyLoss"
    assert first["train_dataloader"]["dataset"]["type"] != "ClassBalancedDataset"
    assert first["work_dir"] == "/tmp/run/stage1" and FIRST_STAGE_KEY not in first
    assert [h["type"] for h in first["custom_hooks"]][-1] == "ClassifierNormsHook"
    # stage 2: RFS, only fc_cls trains, FASA if the row has it
    assert cfg["train_dataloader"]["dataset"]["type"] == "ClassBalancedDataset"
    hooks = {h["type"]: h for h in cfg["custom_hooks"]}
    assert hooks["FrozenStageHook"]["trainable"] == ["roi_head.bbox_head.fc_cls"]
    assert ("FASAHook" in hooks) == (fasa is not None)
    assert cfg["train_cfg"]["max_epochs"] == first["train_cfg"]["max_epochs"] == 2  # 4 = 2 + 2


def test_each_stage_gets_the_schedule_scaled_to_its_length():
    cfg = _cfg("crt", profile="lvis-r50")  # 24 epochs, steps 16 and 22
    first = cfg[FIRST_STAGE_KEY]["config"]
    for stage in (first, cfg):
        step = next(s for s in stage["param_scheduler"] if s["type"] == "MultiStepLR")
        assert stage["train_cfg"]["max_epochs"] == 12 and step["milestones"] == [8, 11] and step["end"] == 12
    cfg = _cfg("bags", profile="lvis-r50", first_epochs=18)
    assert cfg[FIRST_STAGE_KEY]["config"]["train_cfg"]["max_epochs"] == 18 and cfg["train_cfg"]["max_epochs"] == 6
    with pytest.raises(FasaError, match="first_epochs"):
        build_config(RunConfig(dataset="embedded-small", profile="cpu-compact", method="crt",
                               train=TrainOverrides(epochs=1)), DATA, Path("/tmp/run"), seed=0)


def test_nms_resampling_swaps_in_its_detector_and_rpn_head():
    model = _cfg("nms_resampling", fasa={})["model"]
    assert model["type"] == "NMSResamplingMaskRCNN"
    assert model["rpn_head"]["type"] == "NMSResamplingRPNHead"
    assert model["rpn_head"]["class_frequency"] == ["r", "c", "f", "f"]
    assert model["rpn_head"]["group_iou_thresholds"] == [0.9, 0.8, 0.7]
    assert model["roi_head"]["bbox_head"]["type"] == "FASAShared2FCBBoxHead"


def _pair(x: float, overlap: float) -> list[list[float]]:
    """Two boxes at x whose IoU is `overlap` (the second one shorter)."""
    return [[x, 0.0, x + 10.0, 10.0], [x, 0.0, x + 10.0, 10.0 * overlap]]


def test_nms_resampling_applies_each_groups_threshold():
    head = NMSResamplingRPNHead(in_channels=4, feat_channels=4, class_frequency=["r", "c", "f"])
    pairs = [(0, 0.85), (100, 0.85), (200, 0.75), (300, 0.75), (400, 0.75), (500, 0.65)]
    boxes = torch.tensor([box for x, iou in pairs for box in _pair(x, iou)])
    scores = torch.tensor([0.9, 0.8] * len(pairs)) - torch.arange(len(boxes)) * 1e-3
    # ground truth: rare at 0, common at 100 and 200, frequent at 300; none at 400 and 500
    gt_boxes = torch.tensor([[x, 0.0, x + 10.0, 10.0] for x in (0, 100, 200, 300)])
    gt_labels = torch.tensor([0, 1, 1, 2])
    meta = dict(img_shape=(20, 600))
    results = InstanceData(bboxes=boxes, scores=scores, level_ids=torch.zeros(len(boxes), dtype=torch.long))
    cfg = ConfigDict(nms=dict(type="nms", iou_threshold=0.7), max_per_img=100, min_bbox_size=0)
    head._ground_truth = {id(meta): (gt_boxes, gt_labels)}
    kept = head._bbox_post_process(results.clone(), cfg, img_meta=meta)
    # rare 0.85 < 0.9: both; common 0.85 > 0.8: one, 0.75 < 0.8: both; frequent and
    # background 0.75 > 0.7: one; background 0.65: both
    x_kept = sorted(kept.bboxes[:, 0].tolist())
    assert x_kept == [0, 0, 100, 200, 200, 300, 400, 500, 500]
    assert kept.scores.tolist() == sorted(kept.scores.tolist(), reverse=True) and (kept.labels == 0).all()
    head._ground_truth = None  # test time: mmdet's RPN, 0.7 everywhere
    plain = head._bbox_post_process(results.clone(), cfg, img_meta=meta)
    assert sorted(plain.bboxes[:, 0].tolist()) == [0, 100, 200, 300, 400, 500, 500]


@pytest.mark.parametrize("method", TABLE4)
def test_each_method_trains_one_step_of_the_compact_detector(tiny_data_dir, tmp_path, method):
    """A real loss and backward on tiny data, with FASA (its virtual features on)."""
    import logging

    from mmengine.dataset import pseudo_collate
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope
    from mmdet.registry import DATASETS, MODELS

    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.mmdet_ext.heads import fasa_heads

    DefaultScope.get_instance(f"fasa-table4-{method}", scope_name="mmdet")
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    data = resolve_dataset("embedded-tiny")
    run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", method=method, fasa={"start_epoch": 0},
                    train=TrainOverrides(batch_size=2))
    cfg = build_config(run, data, tmp_path, seed=0)
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(cfg["model"]))
    model.init_weights()
    model.train()
    rpn_labels = []
    if method == "nms_resampling":
        original = model.rpn_head.resample
        model.rpn_head.resample = lambda *a: rpn_labels.append(a[-1]) or original(*a)
    dataset = DATASETS.build(ConfigDict(cfg["train_dataloader"]["dataset"]))
    batch = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    for head in fasa_heads(model):
        head.set_epoch(0)
    losses = model.loss(batch["inputs"], batch["data_samples"])
    total = sum(v for k, v in losses.items() if "loss" in k and torch.is_tensor(v))
    assert torch.isfinite(total) and "loss_fasa" in losses, losses
    total.backward()
    assert model.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0
    if method == "seesaw":
        assert {"loss_cls_objectness", "loss_cls_classes"} <= set(losses)
    if method == "nms_resampling":  # the RPN saw the real class labels of both images
        assert len(rpn_labels) == 2 and all(len(l) for l in rpn_labels)
        truth = [s.gt_instances.labels for s in batch["data_samples"]]
        assert all(torch.equal(a, b) for a, b in zip(rpn_labels, truth))
