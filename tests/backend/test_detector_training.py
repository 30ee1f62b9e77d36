"""Tables 5, 6, 12 and 13 on CPU: each compact counterpart trains and evaluates on the tiny
embedded data (one epoch), with the metrics its table reads in the run's metrics."""

from __future__ import annotations

import json
import math

import pytest

from fasa_cli.backend import run_training
from fasa_cli.evaluation.fixed_pool import FIXED_METRICS, POOL_METRICS
from fasa_cli.runconfig import RunConfig, TrainOverrides

pytestmark = pytest.mark.slow

ONE_EPOCH = TrainOverrides(epochs=1, batch_size=4, val_loss_images=8)
TABLE12 = ("train_s_per_iter", "train_s_per_iter_std", "train_mem_gb", "train_rss_gb", "train_gpu_mem_gb")


def _train(tmp_path, profile: str, dataset: str = "embedded-tiny", **run) -> dict:
    config = RunConfig(dataset=dataset, profile=profile, train=run.pop("train", ONE_EPOCH), **run)
    return run_training(config, tmp_path, seed=0)["metrics"]


def _check_table12(metrics: dict) -> None:
    assert set(TABLE12) <= set(metrics)
    assert metrics["train_s_per_iter"] > 0 and metrics["train_rss_gb"] > 0
    assert metrics["train_mem_gb"] == pytest.approx(metrics["train_rss_gb"])  # no GPU: M_train is RSS
    assert math.isnan(metrics["train_gpu_mem_gb"])


@pytest.mark.parametrize("profile", ["cpu-compact-deep", "cpu-compact-x"])
def test_deeper_compact_backbones_train(tiny_data_dir, tmp_path, profile):
    metrics = _train(tmp_path, profile, method="rfs")
    assert 0.0 <= metrics["AP"] <= 1.0
    _check_table12(metrics)
    if profile == "cpu-compact-deep":  # Table 13's counterpart evaluates AP-fixed / AP-pool too
        assert set(FIXED_METRICS) | set(POOL_METRICS) <= set(metrics)
        assert 0.0 <= metrics["AP_fixed"] <= 1.0 and metrics["AP_fixed_short_classes"] >= 0
        # The standard budget's detections are what the run keeps: at most 50 per image.
        from fasa_cli.evaluation import load_detections

        dets = load_detections(tmp_path / "detections.json.gz")
        per_image = {}
        for det in dets:
            per_image[det["image_id"]] = per_image.get(det["image_id"], 0) + 1
        assert max(per_image.values()) <= 50 and min(d["score"] for d in dets) > 1e-4


def test_the_compact_cascade_trains_with_fasa_in_every_stage(tiny_data_dir, tmp_path):
    metrics = _train(tmp_path, "cpu-compact-cascade", method="rfs", fasa={"start_epoch": 0})
    assert 0.0 <= metrics["AP"] <= 1.0 and "AP_pool" in metrics
    _check_table12(metrics)
    states = [json.loads(line) for line in (tmp_path / "fasa_state.jsonl").read_text().splitlines()]
    assert len(states) == 1 and len(states[-1]["stages"]) == 2  # stage 0 at the top level, then 1 and 2
    assert all(s["n_virtual"] > 0 for s in (states[-1], *states[-1]["stages"]))


def test_coco_lt_stand_in_trains_with_bin_metrics(tiny_data_dir, tmp_path):
    metrics = _train(tmp_path, "cpu-compact-coco-lt", dataset="embedded-coco-lt-tiny", fasa={},
                     train=ONE_EPOCH.model_copy(update={"batch_size": 8}))
    for name in ("AP", "AP1", "AP2", "AP3", "AP4", "bbox_AP", "bbox_AP4"):
        assert name in metrics
    assert 0.0 <= metrics["AP"] <= 1.0
    assert not (tmp_path / "eval_matches.npz").exists()  # federated match tables are LVIS-only


def test_simcal_calibrates_on_the_frozen_detector(tiny_data_dir, tmp_path):
    import torch

    metrics = _train(tmp_path, "cpu-compact-coco-lt", dataset="embedded-coco-lt-tiny", method="simcal",
                     train=ONE_EPOCH.model_copy(update={"batch_size": 8}))
    assert {"AP", "AP1", "AP4"} <= set(metrics) and 0.0 <= metrics["AP"] <= 1.0
    stage1 = torch.load(tmp_path / "stage1" / "stage2_init.pth", map_location="cpu", weights_only=False)["state_dict"]
    from fasa_cli.rundir import last_checkpoint

    final = torch.load(last_checkpoint(tmp_path), map_location="cpu", weights_only=False)["state_dict"]
    # Stage 2 trained the calibration branch only: the detector is stage 1's, bit for bit.
    assert all(torch.equal(stage1[k], final[k]) for k in stage1)
    moved = final["roi_head.bbox_head.cal_fc_cls.weight"] - final["roi_head.bbox_head.fc_cls.weight"]
    assert moved.abs().max() > 0  # started as a copy of fc_cls (3fc_ft), then trained
