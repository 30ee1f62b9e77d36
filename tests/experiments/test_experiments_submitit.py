"""The cluster path end to end: `fasa ablate --executor submitit-local` submits a tiny row as a
submitit job (the same job function Slurm runs), which trains, evaluates and records it."""

from __future__ import annotations

import json
import textwrap

import pytest

pytest.importorskip("submitit")
pytestmark = pytest.mark.slow

SPEC = """\
table: "S"
title: One row through submitit
paper_setting: embedded data
profiles: [cpu-compact]
dataset:
  cpu-compact: embedded-tiny
base:
  method: baseline
  train: {epochs: 2, batch_size: 4, val_loss_images: 8}
metrics: [AP, APr]
seeds: [0]
rows:
  - name: fasa
    label: FASA
    set:
      fasa: {adaptive: true, start_epoch: 0}
"""


def test_submitit_local_runs_an_ablate_row_end_to_end(tiny_data_dir, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("FASA_NUM_THREADS", "1")
    spec = tmp_path / "sub.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    results = tmp_path / "results"
    code, out, err = run_cli("ablate", spec, "--executor", "submitit-local", "--gpus", "0", "--time", "20",
                             "--results-dir", results)
    assert code == 0, out + err
    assert "submitted 1 job(s) to submitit-local" in out
    record = json.loads(next(results.glob("records/sub/cpu-compact--embedded-tiny/fasa/seed0.json")).read_text())
    assert 0.0 <= record["metrics"]["AP"] <= 1.0 and len(record["fasa_state"]) == 2
    assert (results / "tables" / "sub--cpu-compact--embedded-tiny.md").is_file()
    # The job's own logs sit under the (git-ignored) runs folder.
    assert list((results / "runs" / "_submitit" / "sub").glob("*/*_log.out"))
    # Nothing left to do: a second call submits nothing.
    code, out, _ = run_cli("ablate", spec, "--executor", "submitit-local", "--gpus", "0", "--results-dir", results)
    assert code == 0 and "submitted" not in out and "1 of 1 runs finished" in out
