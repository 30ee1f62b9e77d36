"""End to end under torch.distributed on CPU: torchrun starts two gloo ranks of `fasa train`
on the tiny data; rank 0 records one run, every epoch both ranks hold the same FASA state
(statistics, p and groups), the sharded validation pass gave both the same signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPEC = """\
table: "DDP"
title: Two ranks
paper_setting: embedded data
profiles: [cpu-compact]
dataset:
  cpu-compact: embedded-tiny
base:
  method: baseline
  train: {epochs: 2, batch_size: 2, val_loss_images: 8}
metrics: [AP, APr]
seeds: [0]
rows:
  - name: fasa
    label: FASA
    set:
      fasa: {adaptive: true, start_epoch: 0}
"""


def _torchrun(spec: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", FASA_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fasa_cli.cli", "train", str(spec), "--row", "fasa", "--launcher", "pytorch",
           "--results-dir", str(results), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def two_rank_run(tiny_data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp-run")
    spec = folder / "ddp.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    done = _torchrun(spec, folder / "results")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "results"


def test_rank_0_records_one_run_with_its_launch(two_rank_run):
    records = list((two_rank_run / "records").glob("ddp/*/fasa/seed0.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["provenance"]["launch"] == {"launcher": "pytorch", "world_size": 2,
                                              "fasa_stats": "sync", "backend": "gloo"}
    assert 0.0 <= record["metrics"]["AP"] <= 1.0
    run_dir = two_rank_run / "runs" / records[0].relative_to(two_rank_run / "records").with_suffix("")
    assert (run_dir / "train.log").is_file() and (run_dir / "train.rank1.log").is_file()


def test_every_epoch_both_ranks_hold_the_same_fasa_state(two_rank_run):
    record = json.loads(next((two_rank_run / "records").glob("ddp/*/fasa/seed0.json")).read_text())
    states = record["fasa_state"]
    assert [s["epoch"] for s in states] == [0, 1]
    assert all(s["ranks_agree"] for s in states)  # statistics, p and groups, exactly
    assert states[-1]["adapt"]["adapted"] and sum(s["n_virtual"] for s in states) > 0
