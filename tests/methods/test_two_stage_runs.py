"""cRT and BAGS end to end on the embedded `tiny` data: both stages in one run folder, stage 2
changes nothing but the classifier, and a run killed in either stage resumes to the same
metrics as an uninterrupted one (the pattern of tests/backend/test_backend_training.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fasa_cli.backend import run_training
from fasa_cli.backend.stages import INIT_NAME, STAGE_DIR
from fasa_cli.runconfig import FASASettings, RunConfig, TrainOverrides

pytestmark = pytest.mark.slow

SCHEDULE = TrainOverrides(epochs=4, batch_size=8, val_loss_images=8)  # 2 + 2 epochs
CRT = RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="crt", train=SCHEDULE)
BAGS_FASA = RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="bags",
                      fasa=FASASettings(start_epoch=0), train=SCHEDULE)
CLASSIFIER = "roi_head.bbox_head.fc_cls."


class _Killed(Exception):
    pass


def _train(run, run_dir):
    progress = []
    result = run_training(run, run_dir, seed=0, on_progress=lambda d, t, m: progress.append((d, t)))
    return result, progress


@pytest.fixture(scope="module")
def crt_full(tiny_data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("crt-full")
    return run_dir, *_train(CRT, run_dir)


@pytest.fixture(scope="module")
def bags_full(tiny_data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bags-full")
    return run_dir, *_train(BAGS_FASA, run_dir)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _same_metrics(a: dict, b: dict) -> bool:
    ours = {k: v for k, v in a.items() if not k.startswith("train_")}
    theirs = {k: v for k, v in b.items() if not k.startswith("train_")}
    return ours.keys() == theirs.keys() and all(
        ours[k] == theirs[k] or (math.isnan(ours[k]) and math.isnan(theirs[k])) for k in ours)


def test_crt_stage_two_changes_only_the_reinitialised_classifier(crt_full):
    run_dir, result, _ = crt_full
    assert 0.0 <= result["metrics"]["AP"] <= 1.0
    stage1 = _state(run_dir / STAGE_DIR / "epoch_2.pth")
    stage2 = _state(run_dir / "epoch_2.pth")
    assert stage1.keys() == stage2.keys()
    # every parameter and buffer (batch-norm statistics included) but fc_cls is bit-identical
    for key in stage1:
        if not key.startswith(CLASSIFIER):
            assert torch.equal(stage1[key], stage2[key]), key
    init = _state(run_dir / STAGE_DIR / INIT_NAME)
    assert not any(k.startswith(CLASSIFIER) for k in init)     # removed, so re-initialised
    assert not torch.equal(stage1[CLASSIFIER + "weight"], stage2[CLASSIFIER + "weight"])


def test_crt_killed_in_stage_one_resumes_to_the_same_metrics(crt_full, tmp_path):
    full_dir, full, progress = crt_full
    iters_per_epoch = progress[0][1] // 2   # stage 1's first report: its own total

    def kill_in_stage_one_second_epoch(done, total, message):
        if done >= iters_per_epoch + 1:
            raise _Killed

    with pytest.raises(_Killed):
        run_training(CRT, tmp_path, seed=0, on_progress=kill_in_stage_one_second_epoch)
    assert (tmp_path / STAGE_DIR / "epoch_1.pth").is_file() and not (tmp_path / STAGE_DIR / INIT_NAME).exists()
    resumed = run_training(CRT, tmp_path, seed=0)
    assert _same_metrics(resumed["metrics"], full["metrics"])
    final, reference = _state(tmp_path / "epoch_2.pth"), _state(full_dir / "epoch_2.pth")
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_bags_with_fasa_killed_in_stage_two_resumes_to_the_same_metrics(bags_full, tmp_path):
    full_dir, full, progress = bags_full
    # each stage reports its own iterations: stage 2 starts where the count drops
    start = next(i for i in range(1, len(progress)) if progress[i][0] < progress[i - 1][0])
    iters_per_epoch = progress[start][1] // 2
    seen = {"last": 0, "stage_two": False}

    def kill_in_stage_two_second_epoch(done, total, message):
        seen["stage_two"] |= done < seen["last"]
        seen["last"] = done
        if seen["stage_two"] and done >= iters_per_epoch + 1:
            raise _Killed

    with pytest.raises(_Killed):
        run_training(BAGS_FASA, tmp_path, seed=0, on_progress=kill_in_stage_two_second_epoch)
    assert (tmp_path / "epoch_1.pth").is_file() and not (tmp_path / "metrics.json").exists()
    resumed = run_training(BAGS_FASA, tmp_path, seed=0)
    assert _same_metrics(resumed["metrics"], full["metrics"])
    states = [json.loads(line) for line in (tmp_path / "fasa_state.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in states] == [0, 1]   # FASA ran in stage 2, its epochs counted there
    assert states == [json.loads(line) for line in (full_dir / "fasa_state.jsonl").read_text().splitlines()]
    assert sum(s["n_virtual"] for s in states) > 0
    # the group softmax classifier: C + K + 2 outputs
    weight = _state(tmp_path / "epoch_2.pth")[CLASSIFIER + "weight"]
    assert weight.shape[0] > len(json.loads((tmp_path / "classifier_norms.json").read_text())["norms"]) + 2
