"""Tables: mean ± std over finished seeds, deltas to the reference row, paper numbers apart."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from experiments_fakes import TINY_SPEC, FakeRunner
from fasa_cli.experiments.execute import execute_run, run_ablation
from fasa_cli.experiments.spec import load_spec
from fasa_cli.experiments.tables import noise_floor, noise_floor_text, spec_markdown, spec_table, summarize, to_markdown, to_rich


def test_summary_matches_the_records(tiny_spec, store):
    run_ablation(tiny_spec, None, None, store, FakeRunner(), Console(file=io.StringIO()))
    numbers = summarize(tiny_spec, store)
    for row in ("base", "fasa", "static"):
        values = np.array([r["metrics"]["APr"] for r in store.find(row=row)]) * 100  # shown in percent
        assert numbers.loc[row, "APr_mean"] == pytest.approx(values.mean())
        assert numbers.loc[row, "APr_std"] == pytest.approx(values.std(ddof=1))
        assert numbers.loc[row, "n"] == 2
    expected_delta = numbers.loc["fasa", "AP_mean"] - numbers.loc["base", "AP_mean"]
    assert numbers.loc["fasa", "AP_delta"] == pytest.approx(expected_delta)
    assert np.isnan(numbers.loc["base", "AP_delta"])


def test_table_shows_missing_seeds_and_keeps_paper_columns_apart(tiny_spec, store):
    execute_run(tiny_spec, "base", 0, "cpu-compact", store, FakeRunner())
    execute_run(tiny_spec, "fasa", 0, "cpu-compact", store, FakeRunner())
    execute_run(tiny_spec, "fasa", 1, "cpu-compact", store, FakeRunner())
    table = spec_table(tiny_spec, store).set_index("Row")
    assert table.loc["Baseline", "Seeds"] == "1/2 seeds"
    assert table.loc["+ FASA", "Seeds"] == "2/2 seeds"
    assert table.loc["+ FA only", "Seeds"] == "0/2 seeds" and table.loc["+ FA only", "AP"] == "—"
    assert " ± " not in table.loc["Baseline", "AP"] and " ± " in table.loc["+ FASA", "AP"]
    assert table.loc["+ FASA", "APr (paper)"] == "17.8" and table.loc["+ FA only", "APr (paper)"] == ""
    assert table.loc["Baseline", "ΔAP"] == "" and table.loc["+ FASA", "ΔAPr"].startswith("+")
    assert list(table.columns[:4]) == ["Seeds", "AP", "ΔAP", "AP (paper)"]
    markdown = to_markdown(spec_table(tiny_spec, store))
    lines = markdown.splitlines()
    assert len(lines) == 2 + 3 and all(line.count("|") == lines[0].count("|") for line in lines)
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(to_rich(spec_table(tiny_spec, store), title="t"))
    assert "AP (paper)" in buffer.getvalue()


def test_stale_runs_are_counted_not_averaged(tmp_path, tiny_spec_path, store):
    execute_run(load_spec(tiny_spec_path), "static", 0, "cpu-compact", store, FakeRunner())
    changed_path = tmp_path / "tiny.yaml"
    changed_path.write_text(tiny_spec_path.read_text().replace("scale: 5", "scale: 9"))
    table = spec_table(load_spec(changed_path), store).set_index("Row")
    assert table.loc["+ FA only", "Seeds"] == "0/2 seeds (1 stale)"


def test_paper_only_rows_and_extra_paper_columns(store, tmp_path):
    # No committed spec has a paper-only row any more: Table 6 as it was before SimCal ran.
    text = (Path(__file__).resolve().parents[2] / "experiments" / "table6.yaml").read_text()
    assert "    set: {method: simcal}\n" in text
    (tmp_path / "table6.yaml").write_text(text.replace("    set: {method: simcal}\n", "    paper_only: true\n"))
    table6 = spec_table(load_spec(tmp_path / "table6.yaml"), store).set_index("Row")
    assert table6.loc["SimCal", "Seeds"] == "paper only" and table6.loc["SimCal", "AP1 (paper)"] == "15.0"
    table10 = spec_table(load_spec("table10"), store)
    # On cpu-compact our columns are AP; the paper's accuracy still shows, labelled as the paper's.
    assert "accuracy (paper)" in table10.columns and "accuracy" not in table10.columns
    assert list(table10["accuracy (paper)"]) == ["43.7 ± 0.25", "43.9 ± 0.38"]
    table4 = spec_table(load_spec("table4"), store).set_index("Row")
    assert table4.loc["RFS, 24 ep + FASA", "Δ vs"] == "RFS, 24 ep"
    table8 = spec_table(load_spec("table8"), store).set_index("Row")
    assert table8.loc["Mask R-CNN", "E_cls (paper)"] == "25.10"


def test_markdown_heading_names_profile_and_dataset(tiny_spec, store):
    text = spec_markdown(tiny_spec, store, "lvis-r50")
    assert text.startswith("## Table T: Tiny ablation (ours: profile lvis-r50, dataset lvis_v1)")


def test_deltas_carry_paired_intervals_and_the_baseline_its_noise_floor(tiny_spec, store):
    run_ablation(tiny_spec, None, [0, 1], store, FakeRunner(matches=True), Console(file=io.StringIO()))
    numbers = summarize(tiny_spec, store)
    low, high = numbers.loc["fasa", "APr_lo"], numbers.loc["fasa", "APr_hi"]
    # Paired over the same images and seeds: the interval holds the full-split paired delta.
    assert low <= numbers.loc["fasa", "APr_paired"] <= high and numbers.loc["fasa", "APr_pairs"] == 2
    assert np.isnan(numbers.loc["base", "APr_lo"])
    table = spec_table(tiny_spec, store).set_index("Row")
    assert "[" in table.loc["+ FASA", "ΔAPr"] and table.loc["Baseline", "ΔAPr"] == ""
    text = spec_markdown(tiny_spec, store, "cpu-compact")
    assert "Noise floor of Baseline (2 seeds" in text and "evaluation sd" in text


class _CountingTable:
    image_ids = np.arange(3)

    def __init__(self):
        self.calls = 0

    def metrics(self, weights):
        self.calls += 1
        return {"AP": weights.sum(axis=1) / 7, "APr": weights[:, 0] / 3}


def test_memoised_match_table_computes_each_resample_set_once(tmp_path):
    from fasa_cli.experiments.tables import _MemoMatches

    source = tmp_path / "seed0.matches.npz"
    source.write_bytes(b"outcomes")
    table = _CountingTable()
    memo = _MemoMatches(table, source, tmp_path / "cache")
    w = np.ones((4, 3))
    first = memo.metrics(w)
    assert memo.metrics(w.copy()) is first and table.calls == 1   # same resamples: computed once
    assert memo.metrics(2 * w)["AP"].tolist() == [6.0 / 7] * 4 and table.calls == 2
    assert memo.image_ids is table.image_ids


def test_resampled_metrics_are_read_back_from_the_cache_bit_for_bit(tmp_path):
    from fasa_cli.experiments.tables import _MemoMatches

    source = tmp_path / "seed0.matches.npz"
    source.write_bytes(b"outcomes")
    w = np.random.default_rng(0).integers(0, 3, size=(5, 3)).astype(float)
    computed = _MemoMatches(_CountingTable(), source, tmp_path / "cache").metrics(w)
    later = _CountingTable()  # a later report: a new process, nothing in memory
    again = _MemoMatches(later, source, tmp_path / "cache").metrics(w)
    assert later.calls == 0 and again.keys() == computed.keys()
    assert all(np.array_equal(again[m], computed[m]) for m in computed)
    source.write_bytes(b"other outcomes")  # a redone run: its old values are not used
    redone = _CountingTable()
    _MemoMatches(redone, source, tmp_path / "cache").metrics(w)
    assert redone.calls == 1
    # A torn cache file is recomputed, not trusted.
    for path in (tmp_path / "cache" / "resampled").iterdir():
        path.write_bytes(b"torn")
    torn = _CountingTable()
    assert np.array_equal(_MemoMatches(torn, source, tmp_path / "cache").metrics(w)["AP"], w.sum(axis=1) / 7)
    assert torn.calls == 1
    mended = _CountingTable()  # and written again
    _MemoMatches(mended, source, tmp_path / "cache").metrics(w)
    assert mended.calls == 0


def test_every_metric_a_classification_table_shows_is_in_percent():
    from fasa_cli.experiments.spec import load_spec
    from fasa_cli.experiments.tables import display_scale

    spec = load_spec("table7")
    metrics = spec.metrics_for("cpu-compact-cls")
    assert {"accuracy", "acc_many", "acc_medium", "acc_few"} <= set(metrics)
    assert all(display_scale(m) == 100.0 for m in metrics)
    assert display_scale("train_s_per_iter") == 1.0


def test_noise_floor_of_a_classification_table_uses_its_accuracy_metrics(tmp_path):
    from fasa_cli.evaluation.bootstrap import PredictionTable
    from fasa_cli.experiments.store import ResultStore, RunKey
    from fasa_cli.experiments.tables import noise_floor

    spec, store = load_spec("table7"), ResultStore(tmp_path)
    config = spec.resolve("ldam", "cpu-compact-cls", None)
    label = np.repeat(np.arange(4), 10)
    for seed in (0, 1):
        pred = np.where(np.random.default_rng(seed).random(40) < 0.5 + 0.2 * seed, label, (label + 1) % 4)
        table = PredictionTable(np.arange(40), label, pred, np.array(list("fcrr")))
        metrics = {m: float(v[0]) for m, v in table.metrics().items()}
        key = RunKey("table7", "cpu-compact-cls", config.dataset, "ldam", seed)
        outcome = table.save(tmp_path / f"p{seed}.npz")
        store.write_record(key, {"spec": "table7", "table": "7", "row": "ldam", "seed": seed, "profile": "cpu-compact-cls",
                                 "dataset": config.dataset, "config_hash": config.config_hash(), "metrics": metrics},
                           matches=outcome)
    floor = noise_floor(spec, store, "cpu-compact-cls", config.dataset)
    assert floor["seeds"] == 2 and set(floor["metrics"]) == {"accuracy", "acc_few"}
    assert floor["metrics"]["accuracy"]["seed_sd"] > 0 and floor["metrics"]["accuracy"]["eval_sd"] > 0


def test_seed_paired_t_interval_by_hand():
    from fasa_cli.evaluation.bootstrap import seed_paired_delta

    got = seed_paired_delta("train_s_per_iter", [(2.0, 1.0), (3.0, 1.0), (4.0, 1.0), (5.0, None)])
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2 df) = 4.3027, half width 4.3027 / sqrt(3)
    assert got.delta == pytest.approx(2.0) and got.pairs == 3
    assert (got.low, got.high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    assert seed_paired_delta("m", [(1.0, 0.0)]) is None   # one pair: no interval


def test_run_level_metrics_get_a_seed_paired_interval(tmp_path, store):
    spec_path = tmp_path / "timing.yaml"
    spec_path.write_text(TINY_SPEC.replace("metrics: [AP, APr]", "metrics: [AP, APr, train_s_per_iter]"))
    spec = load_spec(spec_path)

    class TimedRunner(FakeRunner):
        def __call__(self, config, run_dir, seed, on_progress=None):
            out = super().__call__(config, run_dir, seed, on_progress)
            cost = (0.2 + 0.1 * seed) if config.fasa is not None else 0.0   # FASA's added seconds
            out["metrics"]["train_s_per_iter"] = 1.0 + 0.05 * seed + cost
            return out

    run_ablation(spec, None, [0, 1], store, TimedRunner(), Console(file=io.StringIO()))
    numbers = summarize(spec, store)
    # differences 0.2 and 0.3: mean 0.25, sd 0.0707, t(0.975, 1 df) = 12.706
    assert numbers.loc["fasa", "train_s_per_iter_delta"] == pytest.approx(0.25)
    assert numbers.loc["fasa", "train_s_per_iter_hi"] == pytest.approx(0.25 + 12.706 * 0.05, abs=1e-3)
    assert "[" in spec_table(spec, store).set_index("Row").loc["+ FASA", "Δtrain_s_per_iter"]


def test_runs_without_match_tables_get_a_seed_paired_interval_on_ap(tiny_spec, store):
    # COCO-LT runs (Table 6) are scored by the COCO protocol and keep no match tables: AP's
    # interval falls back to the t-interval over seed pairs instead of being left out.
    run_ablation(tiny_spec, None, [0, 1], store, FakeRunner(matches=False), Console(file=io.StringIO()))
    numbers = summarize(tiny_spec, store)
    base = {r["seed"]: r["metrics"] for r in store.find(spec=tiny_spec.name, row="base")}
    mine = {r["seed"]: r["metrics"] for r in store.find(spec=tiny_spec.name, row="fasa")}
    diffs = 100 * np.array([mine[s]["AP"] - base[s]["AP"] for s in (0, 1)])  # shown in %
    half = 12.706 * diffs.std(ddof=1) / np.sqrt(2)
    assert numbers.loc["fasa", "AP_delta"] == pytest.approx(diffs.mean())
    assert numbers.loc["fasa", "AP_hi"] == pytest.approx(diffs.mean() + half, abs=1e-3)
    floor = noise_floor(tiny_spec, store, "cpu-compact", "embedded-tiny")
    text = noise_floor_text(floor)
    assert "seed sd" in text and "nan" not in text and "no evaluation sd" in text
