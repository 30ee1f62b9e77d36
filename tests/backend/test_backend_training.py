"""End to end on the embedded `tiny` data: train a few iterations with FASA, evaluate, and
check that a run killed mid-training resumes to the same final metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fasa_cli.backend import run_training
from fasa_cli.runconfig import FASASettings, RunConfig, TrainOverrides

pytestmark = pytest.mark.slow

RUN = RunConfig(dataset="embedded-tiny", profile="cpu-compact",
                fasa=FASASettings(start_epoch=1),
                train=TrainOverrides(epochs=3, batch_size=4, val_loss_images=8))


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tiny_data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run-full")
    progress = []
    result = run_training(RUN, run_dir, seed=1, on_progress=lambda d, t, m: progress.append((d, t)))
    return run_dir, result, progress


def test_fasa_run_trains_evaluates_and_logs_its_state(uninterrupted):
    run_dir, result, progress = uninterrupted
    metrics = result["metrics"]
    for name in ("AP", "APr", "APc", "APf", "bbox_AP", "train_s_per_iter"):
        assert name in metrics
    assert 0.0 <= metrics["AP"] <= 1.0
    assert progress and progress[-1][0] == progress[-1][1]  # reported up to the last iteration
    states = [json.loads(line) for line in (run_dir / "fasa_state.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in states] == [0, 1, 2]
    assert states[0]["n_virtual"] == 0          # sampling starts from the second epoch
    assert sum(s["n_virtual"] for s in states[1:]) > 0
    assert len(states[-1]["probs"]) == len(json.loads(
        (run_dir / "classifier_norms.json").read_text())["norms"])
    assert (run_dir / "detections.json.gz").exists()


def test_killed_run_resumes_to_the_same_metrics(uninterrupted, tmp_path):
    _, full, progress = uninterrupted
    iters_per_epoch = progress[-1][1] // 3

    def kill_in_third_epoch(done, total, message):
        if done >= 2 * iters_per_epoch + 1:
            raise _Killed

    with pytest.raises(_Killed):
        run_training(RUN, tmp_path, seed=1, on_progress=kill_in_third_epoch)
    assert not (tmp_path / "metrics.json").exists()
    resumed = run_training(RUN, tmp_path, seed=1)
    full_dir = uninterrupted[0]
    # Metrics (NaN where a size range is empty), and the far more sensitive per-class
    # validation losses, sampling probabilities and final classifier weights, all identical.
    ours = {k: v for k, v in resumed["metrics"].items() if not k.startswith("train_")}
    theirs = {k: v for k, v in full["metrics"].items() if not k.startswith("train_")}
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] or (math.isnan(ours[k]) and math.isnan(theirs[k])) for k in ours)
    # Table 12's figures cover the whole run, not only its resumed part.
    assert math.isfinite(resumed["metrics"]["train_s_per_iter"]) and resumed["metrics"]["train_s_per_iter"] > 0
    assert resumed["metrics"]["train_mem_gb"] > 0
    states = _states(tmp_path)
    assert [s["epoch"] for s in states] == [0, 1, 2]
    assert states == _states(full_dir)
    assert _norms(tmp_path) == _norms(full_dir)


def _states(run_dir):
    return [json.loads(line) for line in (run_dir / "fasa_state.jsonl").read_text().splitlines()]


def _norms(run_dir):
    return json.loads((run_dir / "classifier_norms.json").read_text())["norms"]


EXPECTED = Path(__file__).resolve().parents[1] / "expected" / "tiny_e2e.json"


def test_the_tiny_run_stays_in_its_committed_band(uninterrupted):
    """Expected results, pinned as detectron2 pins them: a change that moves the numbers of
    this fixed run (code, data generator, library versions) shows up in the pull request.
    After a deliberate change, put the run's new values in tests/expected/tiny_e2e.json
    (its `measured` block) and say why in the commit."""
    expected = json.loads(EXPECTED.read_text())
    run_dir, result = uninterrupted[0], uninterrupted[1]
    last_log = [json.loads(line) for line in next(run_dir.glob("*/vis_data/scalars.json")).read_text().splitlines()][-1]
    probs, norms = _states(run_dir)[-1]["probs"], _norms(run_dir)
    metrics = {**result["metrics"], "final_loss": last_log["loss"], "final_loss_cls": last_log["loss_cls"],
               "mean_p": sum(probs) / len(probs), "mean_classifier_norm": sum(norms) / len(norms)}
    for name, (low, high) in expected["bands"].items():
        assert low <= metrics[name] <= high, f"{name} = {metrics[name]:.4f} left its band [{low}, {high}]"
