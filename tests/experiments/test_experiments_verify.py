"""`fasa verify`: which case applies (same setting or not) and what counts as reproduced."""

from __future__ import annotations

import json

import pytest

import fasa_cli.experiments.execute as execute
import fasa_cli.experiments.verify as verify_mod
from experiments_fakes import FakeRunner
from fasa_cli.experiments.execute import execute_run
from fasa_cli.experiments.verify import default_scratch, verify

PROVENANCE = {"versions": {"torch": "2.13.0"}, "cpu": {"model": "X", "flags": ["avx2"], "torch_capability": "AVX2"},
              "threads": 2, "deterministic": {"algorithms": True}, "gpu": None, "data": {"val_sha256": "abc"}}


class _Runner(FakeRunner):
    def __init__(self, provenance: dict, shift: float = 0.0):
        super().__init__(matches=True)
        self.provenance, self.shift = provenance, shift

    def __call__(self, config, run_dir, seed, on_progress=None):
        result = super().__call__(config, run_dir, seed, on_progress)
        (run_dir / "provenance.json").write_text(json.dumps(self.provenance))
        result["metrics"] = {k: v + self.shift for k, v in result["metrics"].items()}
        return result


@pytest.fixture
def clean_code(monkeypatch):
    monkeypatch.setattr(execute, "code_version", lambda: {"commit": "c0ffee", "dirty": False})
    monkeypatch.setattr(verify_mod, "code_changes_since", lambda commit: [])


def test_same_setting_demands_identical_numbers(tiny_spec, store, clean_code):
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, _Runner(PROVENANCE))
    [same] = verify(tiny_spec, "cpu-compact", [("fasa", 0)], store, default_scratch(store), _Runner(PROVENANCE))
    assert same.case == "same setting" and same.reproduced and same.detail == "all metrics identical"
    scratch = default_scratch(store)
    assert scratch.root == store.root / "verify" and len(list(store.records())) == 1  # committed store untouched
    shifted = store.root / "other"
    from fasa_cli.experiments.store import ResultStore

    other = ResultStore(shifted)
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", other, _Runner(PROVENANCE))
    [moved] = verify(tiny_spec, "cpu-compact", [("fasa", 0)], other, default_scratch(other), _Runner(PROVENANCE, 1e-4))
    assert moved.case == "same setting" and not moved.reproduced and "AP" in moved.detail


def test_another_machine_is_judged_by_the_paired_interval_and_says_why(tiny_spec, store, clean_code):
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, _Runner(PROVENANCE))
    elsewhere = {**PROVENANCE, "cpu": {**PROVENANCE["cpu"], "model": "Y", "flags": ["avx2", "avx512f"]}, "threads": 8}
    [verdict] = verify(tiny_spec, "cpu-compact", [("fasa", 0)], store, default_scratch(store), _Runner(elsewhere, 1e-4))
    assert verdict.case == "different setting" and verdict.reproduced  # same match tables: Δ 0 inside
    assert any("CPU model X vs Y" in r for r in verdict.reasons) and any("threads" in r for r in verdict.reasons)
    assert "ΔAPr" in verdict.detail


def test_changed_code_is_a_different_setting(tiny_spec, store, monkeypatch):
    monkeypatch.setattr(execute, "code_version", lambda: {"commit": "c0ffee", "dirty": False})
    monkeypatch.setattr(verify_mod, "code_changes_since", lambda commit: ["fasa_cli/core/fasa.py"])
    execute_run(tiny_spec, "base", 0, "cpu-compact", store, _Runner(PROVENANCE))
    [verdict] = verify(tiny_spec, "cpu-compact", [("base", 0)], store, default_scratch(store), _Runner(PROVENANCE))
    assert verdict.case == "different setting" and "code changed: fasa_cli/core/fasa.py" in verdict.reasons
    assert verdict.reproduced and verdict.identical  # code changed, numbers did not: still bit for bit
    [moved] = verify(tiny_spec, "cpu-compact", [("base", 0)], store, default_scratch(store), _Runner(PROVENANCE, 1e-4))
    assert moved.reproduced and not moved.identical  # judged by the paired interval instead


def test_the_verify_command_reports_each_run_and_exits_by_the_outcome(tiny_spec_path, tmp_path, monkeypatch, capsys):
    import fasa_cli.commands.experiments as commands
    from fasa_cli.cli import main

    results = tmp_path / "results"
    monkeypatch.setattr(commands, "RUNNER_FACTORY", lambda: FakeRunner(matches=True))
    with pytest.raises(SystemExit) as done:
        main(["ablate", str(tiny_spec_path), "--seeds", "0", "--results-dir", str(results)])
    assert done.value.code in (0, None)
    with pytest.raises(SystemExit) as done:
        main(["verify", str(tiny_spec_path), "--rows", "base,fasa", "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert done.value.code in (0, None), out
    assert "all 2 run(s) reproduced, 2 of them with every metric identical" in out
    assert "different setting" in out  # fakes carry no provenance
    with pytest.raises(SystemExit) as done:
        main(["verify", str(tiny_spec_path), "--seeds", "7", "--results-dir", str(results)])
    assert done.value.code == 2 and "no committed records" in capsys.readouterr().err


def test_verdicts_are_logged_per_row_and_seed_and_merged(tiny_spec, store, clean_code):
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, _Runner(PROVENANCE))
    verdicts = verify(tiny_spec, "cpu-compact", [("fasa", 0)], store, default_scratch(store), _Runner(PROVENANCE))
    path = verify_mod.write_log(store, tiny_spec.name, "cpu-compact", "embedded-tiny", verdicts, "2026-12-01 21:00 UTC")
    verify_mod.write_log(store, tiny_spec.name, "cpu-compact", "embedded-tiny",
                         [verify_mod.Verdict("other", 1, "different setting", ["x"], False, "d")], "later")
    log = json.loads(path.read_text())
    assert set(log) == {"fasa/seed0", "other/seed1"}  # the second write kept the first entry
    entry = log["fasa/seed0"]
    assert entry["case"] == "same setting" and entry["reproduced"] is True and entry["identical"] is True
    assert entry["record_id"] == verdicts[0].record_id != ""
    assert entry["verified_with"]["machine"]["cpu"] == "X" and entry["verified_with"]["machine"]["threads"] == 2


def test_a_code_change_names_the_commit_to_check_out_for_bit_identity(tiny_spec, store, monkeypatch):
    monkeypatch.setattr(execute, "code_version", lambda: {"commit": "c0ffee1234567", "dirty": False})
    monkeypatch.setattr(verify_mod, "code_changes_since", lambda commit: ["fasa_cli/core/fasa.py"])
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, _Runner(PROVENANCE))
    [v] = verify(tiny_spec, "cpu-compact", [("fasa", 0)], store, default_scratch(store), _Runner(PROVENANCE))
    assert v.case == "different setting"
    assert "code changed: fasa_cli/core/fasa.py" in v.reasons
    assert any("git worktree add" in r and "c0ffee1234" in r for r in v.reasons)


def test_a_rerun_trains_with_the_records_thread_count_and_never_reuses_an_old_rerun(tiny_spec, store, clean_code,
                                                                                    monkeypatch):
    import os

    seen = []

    class _Counting(_Runner):
        def __call__(self, config, run_dir, seed, on_progress=None):
            seen.append(os.environ.get("FASA_NUM_THREADS"))
            return super().__call__(config, run_dir, seed, on_progress)

    monkeypatch.delenv("FASA_NUM_THREADS", raising=False)
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, _Runner(PROVENANCE))  # a 2-thread record
    for _ in range(2):
        verify(tiny_spec, "cpu-compact", [("fasa", 0)], store, default_scratch(store), _Counting(PROVENANCE))
    assert seen == ["2", "2"]  # trained twice: the second verification did not read the first's record
    assert os.environ.get("FASA_NUM_THREADS") is None
    monkeypatch.setenv("FASA_NUM_THREADS", "3")  # asked for explicitly: another setting on purpose
    verify(tiny_spec, "cpu-compact", [("fasa", 0)], store, default_scratch(store), _Counting(PROVENANCE))
    assert seen[-1] == "3"


def test_another_setting_is_also_set_against_the_rows_seed_spread(tiny_spec, store, clean_code):
    for seed in (0, 1, 2):
        execute_run(tiny_spec, "fasa", seed, "cpu-compact", store, _Runner(PROVENANCE))
    spread = verify_mod.seed_spread(store, tiny_spec.name, "fasa", "cpu-compact", "embedded-tiny")
    aprs = [r["metrics"]["APr"] for r in store.find(row="fasa")]
    mean = sum(aprs) / 3
    assert spread["APr"] == pytest.approx((sum((a - mean) ** 2 for a in aprs) / 2) ** 0.5)
    elsewhere = {**PROVENANCE, "threads": 1}
    [verdict] = verify(tiny_spec, "cpu-compact", [("fasa", 1)], store, default_scratch(store), _Runner(elsewhere, 1e-4))
    assert verdict.case == "different setting" and "within two seeds' spread (AP ±" in verdict.detail
    assert verify_mod.seed_spread(store, tiny_spec.name, "base", "cpu-compact", "embedded-tiny") is None
