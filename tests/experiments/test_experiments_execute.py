"""Running specs: resume after an interruption, skip finished runs, refuse stale or unbuilt ones."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from experiments_fakes import FakeRunner
from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.experiments.execute import default_runner, execute_run, run_ablation, run_key
from fasa_cli.experiments.spec import load_spec


def _console() -> Console:
    return Console(file=io.StringIO(), width=120)


def test_ablation_runs_every_pair_once_then_skips(tiny_spec, store):
    runner = FakeRunner()
    table = run_ablation(tiny_spec, None, None, store, runner, _console())
    assert len(runner.calls) == 3 * 2
    assert list(table["Seeds"]) == ["2/2 seeds"] * 3
    again = FakeRunner()
    run_ablation(tiny_spec, None, None, store, again, _console())
    assert again.calls == []


def test_interrupted_ablation_resumes_without_redoing_finished_runs(tiny_spec, store):
    interrupted = FakeRunner(fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(tiny_spec, None, None, store, interrupted, _console())
    finished = [store.records_root / f"{r['record_id']}.json" for r in store.records()]
    assert len(finished) == 2  # the third run left no record ...
    third = run_key(tiny_spec, "static", 0, "cpu-compact")
    assert (store.run_dir(third) / "epoch_1.pth").is_file()  # ... only its partial checkpoint
    before = {p: p.read_bytes() for p in finished}

    resumed = FakeRunner()
    run_ablation(tiny_spec, None, None, store, resumed, _console())
    assert len(resumed.calls) == 6 - 2
    assert {p: p.read_bytes() for p in finished} == before
    assert len(list(store.records())) == 6


def test_seed_major_order(tiny_spec, store):
    runner = FakeRunner()
    run_ablation(tiny_spec, None, [0, 1], store, runner, _console())
    assert [seed for _, seed in runner.calls] == [0, 0, 0, 1, 1, 1]


def test_a_failing_run_leaves_no_record(tiny_spec, store):
    with pytest.raises(RuntimeError):
        execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, FakeRunner(fail_on=1, error=RuntimeError("boom")))
    assert not store.is_finished(run_key(tiny_spec, "fasa", 0, "cpu-compact"))


def test_record_contents(tiny_spec, store):
    record = execute_run(tiny_spec, "fasa", 1, "cpu-compact", store, FakeRunner())
    config = tiny_spec.resolve("fasa")
    assert record["config"] == config.model_dump(mode="json")
    assert record["config_hash"] == config.config_hash()
    assert (record["spec"], record["row"], record["seed"], record["table"]) == ("tiny", "fasa", 1, "T")
    assert (record["profile"], record["dataset"]) == ("cpu-compact", "embedded-tiny")
    assert set(record["metrics"]) == {"AP", "APr", "APc", "APf"}
    assert record["code_version"]["version"] and "dirty" in record["code_version"]
    assert record["started"] <= record["finished"] and record["host"]["python"]
    # A finished run is returned as is, without calling the runner.
    runner = FakeRunner()
    assert execute_run(tiny_spec, "fasa", 1, "cpu-compact", store, runner) == record
    assert runner.calls == []


def test_a_changed_spec_is_refused_until_forced(tmp_path, tiny_spec_path, store):
    run_ablation(load_spec(tiny_spec_path), None, [0], store, FakeRunner(), _console())
    changed_path = tmp_path / "tiny.yaml"
    changed_path.write_text(tiny_spec_path.read_text().replace("scale: 5", "scale: 7"))
    changed = load_spec(changed_path)
    runner = FakeRunner()
    with pytest.raises(FasaError, match="different config"):
        run_ablation(changed, None, [0], store, runner, _console())
    assert runner.calls == []  # refused before anything ran
    run_ablation(changed, None, [0], store, runner, _console(), rows=["static"], force=True)
    assert len(runner.calls) == 1
    assert store.find(row="static")[0]["config"]["fasa"]["scale"] == 7
    assert list((store.run_dir(run_key(changed, "static", 0, "cpu-compact")).parent).glob("seed0.replaced-*"))


def test_identical_configs_are_reused_across_specs(tmp_path, tiny_spec_path, store):
    run_ablation(load_spec(tiny_spec_path), None, [0], store, FakeRunner(), _console())
    other_path = tmp_path / "other.yaml"
    other_path.write_text(tiny_spec_path.read_text())
    runner = FakeRunner()
    run_ablation(load_spec(other_path), None, [0], store, runner, _console())
    assert runner.calls == []
    reused = store.find(spec="other", row="fasa")[0]
    assert reused["reused_from"] == "tiny/cpu-compact--embedded-tiny/fasa/seed0"
    assert (store.artefacts_dir(reused) / "fasa_state.jsonl").is_file()
    fresh = FakeRunner()
    run_ablation(load_spec(other_path), None, [1], store, fresh, _console(), reuse=False)
    assert len(fresh.calls) == 3


def test_unbuilt_rows_fail_before_any_run(store, eql_unbuilt):
    runner = FakeRunner()
    spec = load_spec("table4")
    with pytest.raises(NotBuiltError, match="eql"):
        run_ablation(spec, None, [0], store, runner, _console())
    assert runner.calls == [] and list(store.records()) == []
    table7 = load_spec("table7")  # every Table 7 row runs now: mark them paper-only to test the refusal
    paper_only = table7.model_copy(update={"rows": [r.model_copy(update={"paper_only": True}) for r in table7.rows]})
    with pytest.raises(NotBuiltError, match="paper-only"):
        run_ablation(paper_only, "cifar-resnet32", [0], store, runner, _console())
    with pytest.raises(FasaError, match="no row 'smoteish'"):
        run_ablation(spec, None, [0], store, runner, _console(), rows=["smoteish"])


def test_default_runner_is_the_backend_or_not_built():
    try:
        runner = default_runner()
    except NotBuiltError:
        return
    assert callable(runner)
