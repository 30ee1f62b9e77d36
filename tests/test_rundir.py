"""Run folders: one owner at a time, relocatable checkpoints, append-only logs that survive a torn write."""

from __future__ import annotations

import json

import pytest

from fasa_cli.errors import FasaError
from fasa_cli.rundir import append_jsonl, last_checkpoint, read_jsonl, run_lock


def test_a_second_owner_is_refused_at_once_and_the_lock_dies_with_its_holder(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(FasaError, match=r"is being trained by pid \d+.*wait for that command"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released: free again
        pass


def test_checkpoint_pointer_is_resolved_inside_the_folder(tmp_path):
    run = tmp_path / "moved-run"
    run.mkdir()
    (run / "epoch_2.pth").write_bytes(b"ckpt")
    # mmengine writes the absolute path of the folder's original place.
    (run / "last_checkpoint").write_text("/somewhere/else/original-run/epoch_2.pth")
    assert last_checkpoint(run) == run / "epoch_2.pth"
    assert last_checkpoint(tmp_path) is None
    (run / "last_checkpoint").write_text("/x/epoch_9.pth")
    with pytest.raises(FasaError, match="epoch_9.pth.*not in"):
        last_checkpoint(run)


def test_a_torn_tail_is_dropped_and_the_next_append_repairs_the_log(tmp_path):
    log = tmp_path / "fasa_state.jsonl"
    log.write_text(json.dumps({"epoch": 0}) + "\n" + '{"epoch": 1, "pro')  # full disk mid-append
    assert read_jsonl(log) == [{"epoch": 0}]
    append_jsonl(log, {"epoch": 1})
    assert read_jsonl(log) == [{"epoch": 0}, {"epoch": 1}]
    assert log.read_text().count("\n") == 2
