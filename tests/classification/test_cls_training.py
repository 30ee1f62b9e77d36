"""End to end on the embedded `cifar-lt-tiny` classification data through the real backend
(child process, mmengine Runner): LDAM-DRW + FASA trains, tests and logs FASA's state; a run
killed mid-training resumes to the same accuracy, FASA state and classifier; so does an M2m run
killed in its second network's phase."""

from __future__ import annotations

import json
import math
import re

import pytest

from fasa_cli.backend import run_training
from fasa_cli.evaluation.bootstrap import load_outcomes
from fasa_cli.runconfig import FASASettings, RunConfig, TrainOverrides

pytestmark = pytest.mark.slow

# 3 epochs of 5 iterations; DRW switches on at epoch 2 (0.8 of 3, rounded), FASA samples from epoch 1.
RUN = RunConfig(task="classification", dataset="embedded-cifar-lt-tiny", profile="cpu-compact-cls",
                method="ldam", fasa=FASASettings(start_epoch=1), train=TrainOverrides(epochs=3, batch_size=16))
# M2m: g trains 2 epochs, then f 2 epochs, translating from f's epoch 1 (the run's epoch 3);
# beta 0.5 and gamma 0 so the tiny counts (20 down to 2) accept translations often.
M2M = RunConfig(task="classification", dataset="embedded-cifar-lt-tiny", profile="cpu-compact-cls",
                method="m2m", method_args={"warm": 0.5, "gamma": 0.0, "beta": 0.5, "attack_iter": 2},
                train=TrainOverrides(epochs=2, batch_size=16))


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def cls_data_dir(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("fasa-cls-data")
    monkeypatch_module.setenv("FASA_DATA_DIR", str(root))  # the child process inherits it
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def uninterrupted(cls_data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cls-full")
    progress = []
    result = run_training(RUN, run_dir, seed=1, on_progress=lambda d, t, m: progress.append((d, t)))
    return run_dir, result, progress


def _states(run_dir):
    return [json.loads(line) for line in (run_dir / "fasa_state.jsonl").read_text().splitlines()]


def _norms(run_dir):
    return json.loads((run_dir / "classifier_norms.json").read_text())["norms"]


def test_fasa_classification_run_trains_tests_and_logs_its_state(uninterrupted):
    run_dir, result, progress = uninterrupted
    metrics = result["metrics"]
    for name in ("accuracy", "acc_many", "acc_medium", "train_s_per_iter", "train_mem_gb"):
        assert name in metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["train_s_per_iter"] > 0
    assert progress and progress[-1][0] == progress[-1][1] == 15
    states = _states(run_dir)
    assert [s["epoch"] for s in states] == [0, 1, 2]
    assert states[0]["n_virtual"] == 0 and sum(s["n_virtual"] for s in states[1:]) > 0
    assert all(v is not None for v in states[-1]["signal"])  # every class has validation images
    assert len(states[-1]["probs"]) == len(_norms(run_dir)) == 10
    assert (run_dir / "predictions.npz").is_file() and (run_dir / "per_class_accuracy.json").is_file()
    # The prediction table the record keeps gives the run's own numbers back.
    table = load_outcomes(run_dir / "eval_matches.npz")
    for name in ("accuracy", "acc_many", "acc_medium", "acc_few"):
        assert float(table.metrics()[name][0]) == pytest.approx(metrics[name], abs=1e-12, nan_ok=True)
    assert json.loads((run_dir / "provenance.json").read_text())["data"]["name"] == "embedded-cifar-lt-tiny"


def test_killed_classification_run_resumes_to_identical_accuracy(uninterrupted, tmp_path):
    full_dir, full, progress = uninterrupted
    iters_per_epoch = progress[-1][1] // 3

    def kill_in_third_epoch(done, total, message):
        if done >= 2 * iters_per_epoch + 1:
            raise _Killed

    with pytest.raises(_Killed):
        run_training(RUN, tmp_path, seed=1, on_progress=kill_in_third_epoch)
    assert not (tmp_path / "metrics.json").exists()
    resumed = run_training(RUN, tmp_path, seed=1)
    ours = {k: v for k, v in resumed["metrics"].items() if not k.startswith("train_")}
    theirs = {k: v for k, v in full["metrics"].items() if not k.startswith("train_")}
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] or (math.isnan(ours[k]) and math.isnan(theirs[k])) for k in ours)
    # The far more sensitive per-class validation signals, sampling probabilities and final
    # classifier weights, identical too.
    assert _states(tmp_path) == _states(full_dir)
    assert _norms(tmp_path) == _norms(full_dir)
    # `fasa eval` of the folder's checkpoint tests it again to the same accuracy.
    from fasa_cli.backend.run import evaluate_run

    again = evaluate_run(tmp_path)
    assert again["accuracy"] == full["metrics"]["accuracy"] and (tmp_path / "eval_metrics.json").is_file()


def test_killed_m2m_run_resumes_in_f_s_phase_to_identical_accuracy(cls_data_dir, tmp_path_factory):
    full_dir = tmp_path_factory.mktemp("m2m-full")
    progress = []
    full = run_training(M2M, full_dir, seed=0, on_progress=lambda d, t, m: progress.append(d))
    total = progress[-1]
    assert total == 4 * 5  # two phases of two epochs
    log = (full_dir / "train.log").read_text()
    generated = [float(v) for v in re.findall(r"m2m_generated: ([0-9.]+)", log)]
    assert generated and max(generated) > 0  # minority slots were translated in f's last epoch

    killed_dir = tmp_path_factory.mktemp("m2m-killed")

    def kill_in_last_epoch(done, total_, message):
        if done >= 3 * 5 + 2:
            raise _Killed

    with pytest.raises(_Killed):
        run_training(M2M, killed_dir, seed=0, on_progress=kill_in_last_epoch)
    resumed = run_training(M2M, killed_dir, seed=0)
    assert resumed["metrics"]["accuracy"] == full["metrics"]["accuracy"]
    assert _norms(killed_dir) == _norms(full_dir)
