"""Sweeps wider than one run: `--jobs N` side by side, records from concurrent writers (threads
and processes finishing at the same moment), twins kept apart, DDP workers that leave the
store to rank 0, and the CLI's executor options."""

from __future__ import annotations

import io
import multiprocessing as mp
import textwrap
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from experiments_fakes import TINY_SPEC, FakeRunner
from fasa_cli.experiments.execute import execute_run, run_ablation, run_key, run_side_by_side, twin_phases
from fasa_cli.experiments.spec import load_spec
from fasa_cli.experiments.store import ResultStore


def _console() -> Console:
    return Console(file=io.StringIO(), width=120)


class MeetingRunner(FakeRunner):
    """A fake run that finishes only once `parties` runs are in flight together, so their
    records reach the store at the same moment; counts the most runs seen at once."""

    def __init__(self, parties: int, **kw):
        super().__init__(**kw)
        self.barrier = threading.Barrier(parties, timeout=20)
        self.lock = threading.Lock()
        self.active = self.most_active = 0

    def __call__(self, config, run_dir: Path, seed: int, on_progress=None) -> dict:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            self.barrier.wait()
            return super().__call__(config, run_dir, seed, on_progress)
        finally:
            with self.lock:
                self.active -= 1


def test_two_jobs_side_by_side_finish_at_once_and_both_land(tiny_spec, store):
    runner = MeetingRunner(parties=2)
    table = run_ablation(tiny_spec, None, [0], store, runner, _console(), rows=["base", "fasa"], jobs=2)
    assert runner.most_active == 2  # really side by side (a serial loop would deadlock the barrier)
    records = {r["row"]: r for r in store.records()}
    assert set(records) == {"base", "fasa"}
    assert all(r["metrics"]["AP"] > 0 for r in records.values()) and records["fasa"]["fasa_state"]
    assert list(table["Seeds"]) == ["1/2 seeds", "1/2 seeds", "0/2 seeds"]  # (static not run)
    assert not list(store.records_root.glob("**/.tmp-*"))  # no temporary left behind


def test_six_runs_three_at_a_time_lose_nothing(tiny_spec, store):
    runner = MeetingRunner(parties=3)
    run_ablation(tiny_spec, None, [0, 1], store, runner, _console(), jobs=3)
    assert len(runner.calls) == 6 and runner.most_active == 3
    assert sorted((r["row"], r["seed"]) for r in store.records()) == sorted(
        (row, seed) for row in ("base", "fasa", "static") for seed in (0, 1))


def _record_in_process(spec_path: str, results: str, row: str, barrier) -> None:
    """A separate command's process: trains (fake) and records one run, releasing its record
    at the same moment as the other process."""
    spec = load_spec(spec_path)
    fake = FakeRunner()

    def runner(config, run_dir, seed, on_progress):
        result = fake(config, run_dir, seed, on_progress)
        barrier.wait(timeout=60)
        return result

    execute_run(spec, row, 0, "cpu-compact", ResultStore(results), runner)


def test_two_processes_finishing_at_once_both_land(tiny_spec_path, tmp_path):
    results = tmp_path / "results"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_record_in_process, args=(str(tiny_spec_path), str(results), row, barrier))
             for row in ("base", "fasa")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = ResultStore(results)
    assert sorted(r["row"] for r in store.records()) == ["base", "fasa"]
    spec = load_spec(tiny_spec_path)
    for row in ("base", "fasa"):
        assert store.read_record(run_key(spec, row, 0, "cpu-compact"))["metrics"]["AP"] > 0


def test_a_failing_run_stops_the_batch_and_queued_runs_never_start(tiny_spec, store):
    started = []

    def run_one(pair, stop):
        started.append(pair)
        if pair == "boom":
            raise RuntimeError("boom")
        while not stop.is_set():  # a long run: stops at its next step once told to
            time.sleep(0.01)

    with pytest.raises(RuntimeError, match="boom"):
        run_side_by_side(["long", "boom", "queued-1", "queued-2"], 2, run_one)
    assert sorted(started) == ["boom", "long"]


def test_twins_run_one_after_the_other():
    pairs = [("a", 0), ("b", 0), ("c", 0), ("a", 1)]
    same_config = {"a": "h1", "b": "h1", "c": "h2"}
    phases = twin_phases(pairs, lambda p: (same_config[p[0]], p[1]))
    assert phases == [[("a", 0), ("c", 0), ("a", 1)], [("b", 0)]]


TWIN_SPEC = TINY_SPEC.replace("""  - name: static
    label: + FA only
    set:
      fasa: {adaptive: false, scale: 5}
""", """  - name: again
    label: + FASA again
    set:
      fasa: {adaptive: true}
""")


def test_a_twin_in_the_same_sweep_is_reused_not_trained_beside_it(tmp_path, store):
    path = tmp_path / "twins.yaml"
    path.write_text(textwrap.dedent(TWIN_SPEC))
    spec = load_spec(path)
    runner = FakeRunner()
    run_ablation(spec, None, [0], store, runner, _console(), jobs=3)
    assert len(runner.calls) == 2  # base and fasa; "again" copied fasa's record
    again = store.read_record(run_key(spec, "again", 0, "cpu-compact"))
    assert again["reused_from"] == store.read_record(run_key(spec, "fasa", 0, "cpu-compact"))["record_id"]


def test_a_ddp_worker_trains_but_leaves_lock_and_record_to_rank_0(tiny_spec, store):
    runner = FakeRunner()
    assert execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, runner, worker=True) is None
    assert len(runner.calls) == 1 and not list(store.records())
    # Rank 0 holds the folder's lock meanwhile; the worker never takes it.
    from fasa_cli.rundir import run_lock

    key = run_key(tiny_spec, "base", 0, "cpu-compact")
    with run_lock(store.run_dir(key)):
        assert execute_run(tiny_spec, "base", 0, "cpu-compact", store, runner, worker=True) is None
    # Once rank 0 recorded the run, a worker sees the record like rank 0 does.
    record = execute_run(tiny_spec, "base", 0, "cpu-compact", store, FakeRunner())
    assert execute_run(tiny_spec, "base", 0, "cpu-compact", store, runner, worker=True) == record
    assert len(runner.calls) == 2


def test_ablate_worker_rank_writes_nothing(tiny_spec_path, tmp_path, monkeypatch, capsys):
    from fasa_cli.commands import experiments as experiments_cmd
    from fasa_cli.cli import main

    fake = FakeRunner()

    def factory():
        return lambda config, run_dir, seed, on_progress, **launch: fake(config, run_dir, seed, on_progress)

    monkeypatch.setattr(experiments_cmd, "RUNNER_FACTORY", factory)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", str(tiny_spec_path), "--seeds", "0", "--launcher", "pytorch", "--results-dir", str(results)])
    assert exit_.value.code in (0, None)
    assert len(fake.calls) == 3
    assert not list(results.glob("records/**/seed*.json")) and not (results / "tables").exists()
    assert capsys.readouterr().out == ""  # rank 1 is quiet; rank 0 reports


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--executor", "nope"], ["--executor 'nope'"]),
        (["--executor", "slurm", "--jobs", "2"], ["--jobs"]),
        (["--launcher", "pytorch"], ["WORLD_SIZE", "torchrun"]),
        (["--launcher", "mpi"], ["--launcher 'mpi'"]),
        (["--fasa-stats", "mean"], ["--fasa-stats 'mean'"]),
        (["--jobs", "0"], ["--jobs 0"]),
    ],
)
def test_bad_scale_options_are_one_line(extra, words, tiny_spec_path, tmp_path, run_cli, monkeypatch):
    from fasa_cli.commands import experiments as experiments_cmd

    fake = FakeRunner()
    monkeypatch.setattr(experiments_cmd, "RUNNER_FACTORY", lambda: fake)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run_cli("ablate", tiny_spec_path, "--seeds", "0", "--results-dir", tmp_path / "r", *extra)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    for word in words:
        assert word in err
    assert fake.calls == []
