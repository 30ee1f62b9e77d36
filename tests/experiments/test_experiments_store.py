"""The result store: atomic, never-overwritten records; concurrent writers lose nothing."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from fasa_cli.errors import FasaError
from fasa_cli.experiments.store import ResultStore, RunKey


def _record(key: RunKey, ap: float) -> dict:
    return {"spec": key.spec, "table": "T", "row": key.row, "seed": key.seed, "profile": key.profile,
            "dataset": key.dataset, "config_hash": "abc", "metrics": {"AP": ap, "APr": ap / 2},
            "wall_s": 1.0, "peak_mem_mb": 2.0}


def _key(row: str = "base", seed: int = 0) -> RunKey:
    return RunKey("tiny", "cpu-compact", "embedded-tiny", row, seed)


def test_layout_and_round_trip(store):
    key = _key()
    assert store.run_dir(key) == store.root / "runs/tiny/cpu-compact--embedded-tiny/base/seed0"
    assert store.record_path(key) == store.root / "records/tiny/cpu-compact--embedded-tiny/base/seed0.json"
    assert not store.is_finished(key)
    store.write_record(key, _record(key, 0.25))
    assert store.is_finished(key)
    got = store.read_record(key)
    assert got["metrics"]["AP"] == 0.25 and got["run_dir"] == str(store.run_dir(key))
    assert got["record_id"] == "tiny/cpu-compact--embedded-tiny/base/seed0"
    assert not list(store.record_path(key).parent.glob(".tmp-*"))  # the temp file is gone


def test_records_are_compact_json_without_nan(store, tmp_path):
    key = _key()
    matches = tmp_path / "m.npz"
    matches.write_bytes(b"table")
    store.write_record(key, {**_record(key, 0.25), "metrics": {"AP": 0.25, "APs": float("nan")}}, matches=matches)
    text = store.record_path(key).read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["APs"] is None
    assert (store.record_path(key).parent / "seed0.matches.npz").read_bytes() == b"table"
    assert store.frame()["APs"].isna().all()


def test_a_moved_store_reads_the_same(store, tmp_path):
    import shutil

    key = _key()
    store.write_record(key, _record(key, 0.25))
    moved = ResultStore(tmp_path / "moved")
    shutil.copytree(store.root, moved.root)
    got = moved.read_record(key)
    assert got["metrics"]["AP"] == 0.25 and got["run_dir"] == str(moved.run_dir(key))


def test_a_finished_record_is_never_overwritten(store):
    key = _key()
    store.write_record(key, _record(key, 0.25))
    before = store.record_path(key).read_bytes()
    with pytest.raises(FasaError, match="already has a finished record.*--force"):
        store.write_record(key, _record(key, 0.99))
    assert store.record_path(key).read_bytes() == before
    aside = store.move_aside(key)
    assert aside is not None and aside.read_bytes() == before and "replaced" in aside.name
    store.write_record(key, _record(key, 0.99))
    assert store.read_record(key)["metrics"]["AP"] == 0.99
    # The kept-aside run is not a record any more.
    assert [r["metrics"]["AP"] for r in store.records()] == [0.99]


def test_frame_and_find(store):
    for row, seed, ap in (("base", 0, 0.2), ("base", 1, 0.22), ("fasa", 0, 0.3)):
        key = _key(row, seed)
        store.write_record(key, _record(key, ap))
    frame = store.frame()
    assert sorted(frame["AP"]) == [0.2, 0.22, 0.3]
    assert {"spec", "row", "seed", "profile", "dataset", "config_hash", "APr"} <= set(frame.columns)
    assert [r["seed"] for r in store.find(row="base")] == [0, 1]
    assert store.find(row="missing") == []
    assert ResultStore(store.root / "empty").frame().empty


def test_results_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASA_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert ResultStore().root == tmp_path / "elsewhere"


def test_threads_writing_different_runs_lose_nothing(store):
    keys = [_key(f"row{i}", seed) for i in range(8) for seed in range(3)]
    threads = [threading.Thread(target=store.write_record, args=(k, _record(k, 0.1))) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(store.records())) == len(keys)


def test_threads_writing_the_same_run_one_wins(store):
    key = _key()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def write(ap: float) -> None:
        barrier.wait()
        try:
            store.write_record(key, _record(key, ap))
            outcomes.append("ok")
        except FasaError:
            outcomes.append("refused")

    threads = [threading.Thread(target=write, args=(0.1 * i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 5
    assert json.loads(store.record_path(key).read_text())["metrics"]["AP"] in [0.1 * i for i in range(6)]


def _write_in_process(root: str, rows: list[str]) -> None:
    store = ResultStore(root)
    for row in rows:
        key = _key(row, 0)
        store.write_record(key, _record(key, 0.5))


def test_processes_writing_different_runs_lose_nothing(store):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_in_process, args=(str(store.root), [f"p{p}r{r}" for r in range(10)]))
             for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(store.records())) == 20


def test_artefact_readers(store, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "fasa_state.jsonl").write_text('{"epoch": 0}\n\n{"epoch": 1}\n')
    assert [e["epoch"] for e in store.read_artefact_jsonl(run_dir, "fasa_state.jsonl")] == [0, 1]
    assert store.read_artefact_jsonl(run_dir, "absent.jsonl") is None
    # A torn last line (killed or full disk mid-append) is dropped; a torn line before the end is corruption.
    (run_dir / "torn.jsonl").write_text('{"epoch": 0}\n{"epo')
    assert store.read_artefact_jsonl(run_dir, "torn.jsonl") == [{"epoch": 0}]
    (run_dir / "corrupt.jsonl").write_text('{"epo\n{"epoch": 1}\n')
    with pytest.raises(FasaError, match=r"corrupt.jsonl:1 is not valid JSON"):
        store.read_artefact_jsonl(run_dir, "corrupt.jsonl")
    (run_dir / "bad.json").write_text("{")
    with pytest.raises(FasaError, match="bad.json is not valid JSON"):
        store.read_artefact_json(run_dir, "bad.json")


def test_spec_snapshots(store):
    store.save_spec({"name": "tiny", "rows": []})
    store.save_spec({"name": "tiny", "rows": [1]})
    assert store.spec_snapshots() == {"tiny": {"name": "tiny", "rows": [1]}}
    assert Path(store.records_root / "tiny" / "spec.json").is_file()


def test_spec_snapshots_name_a_checkout_spec_relative_to_its_checkout(store, tmp_path):
    from fasa_cli.paths import repo_root

    worktree = tmp_path / "wt"
    (worktree / "experiments").mkdir(parents=True)
    (worktree / "pyproject.toml").write_text("")
    store.save_spec({"name": "t1", "source": str(repo_root() / "experiments" / "table1.yaml")})
    store.save_spec({"name": "t2", "source": str(worktree / "experiments" / "table2.yaml")})
    store.save_spec({"name": "t3", "source": "/elsewhere/mine.yaml"})
    snapshots = store.spec_snapshots()
    assert snapshots["t1"]["source"] == "experiments/table1.yaml"
    assert snapshots["t2"]["source"] == "experiments/table2.yaml"
    assert snapshots["t3"]["source"] == "/elsewhere/mine.yaml"
