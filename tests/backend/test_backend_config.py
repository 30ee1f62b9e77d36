"""The one config template: rows differ only in data (FASA block, method, profile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fasa_cli.backend.config import build_config
from fasa_cli.backend.datasets import DatasetInfo
from fasa_cli.errors import FasaError
from fasa_cli.runconfig import FASASettings, RunConfig, TrainOverrides

DATA = DatasetInfo("embedded-tiny", Path("/tmp/nowhere"), "annotations/lvis_v1_train.json",
                   "annotations/lvis_v1_val.json", ["a", "b", "c"], ["r", "c", "f"], [2, 30, 400],
                   image_counts=[2, 20, 150], train_images=300)


def _config(**kwargs):
    run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", **kwargs)
    return build_config(run, DATA, Path("/tmp/run"), seed=3)


def test_baseline_uses_the_stock_head_and_writes_norms():
    cfg = _config()
    head = cfg["model"]["roi_head"]["bbox_head"]
    assert head["type"] == "Shared2FCBBoxHead" and head["num_classes"] == 3
    assert [h["type"] for h in cfg["custom_hooks"]][-1] == "ClassifierNormsHook"
    assert cfg["randomness"]["seed"] == 3
    assert cfg["train_dataloader"]["sampler"]["seed"] == 3


def test_fasa_row_swaps_in_the_fasa_head_and_hook():
    cfg = _config(fasa=FASASettings(adaptive=False, scale=5.0))
    head = cfg["model"]["roi_head"]["bbox_head"]
    assert head["type"] == "FASAShared2FCBBoxHead"
    assert head["fasa"]["scale"] == 5.0 and head["fasa"]["adaptive"] is False
    assert head["class_counts"] == [2, 30, 400]
    hook = cfg["custom_hooks"][-1]
    assert hook["type"] == "FASAHook" and hook["frequency"] == ["r", "c", "f"]
    assert hook["val_dataset"]["ann_file"] == DATA.val_ann


def test_rfs_wraps_the_training_set_and_holdout_splits_train():
    cfg = _config(method="rfs", fasa=FASASettings(), train=TrainOverrides(val_split="train_holdout"))
    train_set = cfg["train_dataloader"]["dataset"]
    # RFS's t scaled to the data (fasa_cli.methods.rfs): 2 * (150 / 2) ** (798 / 1203) / 300
    assert train_set["type"] == "ClassBalancedDataset"
    assert train_set["oversample_thr"] == pytest.approx(2 * 75 ** (798 / 1203) / 300)
    assert train_set["dataset"]["holdout"]["part"] == "train"
    val_set = cfg["custom_hooks"][-1]["val_dataset"]
    assert val_set["ann_file"] == DATA.train_ann and val_set["holdout"]["part"] == "holdout"


def test_overrides_reach_the_schedule():
    cfg = _config(train=TrainOverrides(epochs=2, batch_size=2, lr=0.5))
    assert cfg["train_cfg"]["max_epochs"] == 2
    assert cfg["train_dataloader"]["batch_size"] == 2
    assert cfg["optim_wrapper"]["optimizer"]["lr"] == 0.5


def test_paper_profile_builds_the_r50_protocol():
    run = RunConfig(dataset="embedded-tiny", profile="lvis-r50")
    cfg = build_config(run, DATA, Path("/tmp/run"), seed=0)
    assert cfg["model"]["backbone"]["depth"] == 50
    assert cfg["model"]["neck"]["in_channels"] == [256, 512, 1024, 2048]
    assert cfg["train_cfg"]["max_epochs"] == 24
    assert cfg["model"]["test_cfg"]["rcnn"]["max_per_img"] == 300


def test_bad_paths_refuse():
    # Classification is built now; asking a detection profile and dataset for it is refused at load.
    with pytest.raises(ValueError, match="serves detection runs, not classification"):
        RunConfig(dataset="embedded-tiny", profile="cpu-compact", task="classification")
    with pytest.raises(FasaError):
        _config(train=TrainOverrides(max_iters=10))
