"""REPORT.md and its figures, from the store alone; the findings text follows the data."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from rich.console import Console

from experiments_fakes import FakeRunner
from fasa_cli.experiments.execute import run_ablation
from fasa_cli.experiments.report import (
    class_probability_frame,
    describe_findings,
    group_probability_frame,
    norms_frame,
    write_report,
)
from fasa_cli.experiments.spec import load_spec


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_report_tables_figures_and_benchmarks(tiny_spec, store):
    run_ablation(tiny_spec, None, None, store, FakeRunner(), _quiet())
    store.benchmarks_dir.mkdir(parents=True)
    (store.benchmarks_dir / "fasa_overhead.json").write_text(json.dumps({"device": "cpu", "ms": {"fasa": 1.25}}))
    text = write_report(store).read_text()
    assert "## Table T: Tiny ablation (ours: profile cpu-compact, dataset embedded-tiny)" in text
    assert "AP (paper)" in text and "| 2/2 seeds |" in text
    assert "+ FASA vs Baseline, APr:" in text
    assert "| ms.fasa | 1.25 |" in text
    figures = sorted(p.name for p in store.figures_dir.glob("*.png"))
    assert figures == [
        "fig3a_tiny_cpu-compact--embedded-tiny_fasa.png",
        "fig3a_tiny_cpu-compact--embedded-tiny_static.png",
        "fig3b_tiny_cpu-compact--embedded-tiny_fasa.png",
        "fig3b_tiny_cpu-compact--embedded-tiny_static.png",
        "fig4_tiny_cpu-compact--embedded-tiny.png",
    ]
    for name in figures:
        assert (store.figures_dir / name).stat().st_size > 10_000  # a real plot, not an empty canvas
        assert f"(figures/{name})" in text


def test_report_reads_the_store_not_the_spec_files(tmp_path, tiny_spec_path, store):
    run_ablation(load_spec(tiny_spec_path), None, [0], store, FakeRunner(artefacts=False), _quiet())
    tiny_spec_path.unlink()  # the snapshot in the store is enough
    assert "Tiny ablation" in write_report(store).read_text()


def test_empty_store_says_so(store):
    assert "No finished runs yet" in write_report(store).read_text()


def _numbers(rows: dict[str, list[float]], intervals: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    out = {}
    for name, values in rows.items():
        series = pd.Series(values, dtype=float)
        low, high = (intervals or {}).get(name, (float("nan"), float("nan")))
        out[name] = {"APr_mean": series.mean(), "APr_std": series.std(ddof=1) if len(values) > 1 else float("nan"),
                     "APr_n": len(values), "AP_mean": 20.0, "AP_std": 0.1, "AP_n": len(values),
                     "APr_lo": low, "APr_hi": high, "APr_pairs": len(values)}
    return pd.DataFrame.from_dict(out, orient="index")


def test_findings_judge_by_the_paired_interval_not_the_seed_spread(tiny_spec):
    # FASA's APr gain is inside the seed spread (5.1 +- 3 vs 9.2 +- 3) but its paired
    # interval excludes 0; the static row's interval includes 0.
    helps = describe_findings(tiny_spec, _numbers({"base": [2.0, 8.2], "fasa": [6.0, 12.4], "static": [5.1, 5.0]},
                                                  {"fasa": (3.5, 4.7), "static": (-1.0, 0.8)}))
    fasa_apr = next(line for line in helps if line.startswith("+ FASA vs Baseline, APr"))
    assert "+4.1" in fasa_apr and "[+3.5, +4.7]" in fasa_apr and "excludes 0: higher" in fasa_apr
    assert "same direction" in fasa_apr
    static_apr = next(line for line in helps if line.startswith("+ FA only vs Baseline, APr"))
    assert "includes 0, so no clear difference" in static_apr
    hurts = describe_findings(tiny_spec, _numbers({"base": [9.0, 9.2], "fasa": [5.0, 5.4], "static": [5.0]},
                                                  {"fasa": (-4.5, -3.4)}))
    fasa_apr = next(line for line in hurts if line.startswith("+ FASA vs Baseline, APr"))
    assert "excludes 0: lower" in fasa_apr and "opposite direction" in fasa_apr
    assert "not judged" in next(line for line in hurts if line.startswith("+ FA only vs Baseline, APr"))


def test_figure_frames_average_over_seeds():
    states = {0: [{"epoch": 0, "group_mean_p": {"r": 0.1, "c": 0.01, "f": 0.001}}],
              1: [{"epoch": 0, "group_mean_p": {"r": 0.3, "c": 0.03, "f": 0.003}}]}
    stats = group_probability_frame(states).set_index(["group", "epoch"])
    assert stats.loc[("r", 0), "mean"] == 0.2 and stats.loc[("r", 0), "count"] == 2
    norms = {s: {"class_ids": [1, 2, 3], "names": ["a", "b", "c"], "frequency": ["r", "f", "c"],
                 "train_instance_count": [3, 300, 30], "norms": [1.0 + s, 2.0, 1.5]} for s in (0, 1)}
    frame = norms_frame(norms)
    assert list(frame["class_id"]) == [2, 3, 1]  # head to tail
    assert frame.set_index("class_id").loc[1, "mean"] == 1.5


def test_a_fresh_clone_rebuilds_the_committed_report_from_records_alone(tiny_spec, store, tmp_path):
    import shutil

    run_ablation(tiny_spec, None, None, store, FakeRunner(matches=True), _quiet())
    committed = write_report(store).read_bytes()
    # A fresh clone has the committed records and nothing else: no run folders, no spec file.
    clone = tmp_path / "clone" / "results"
    shutil.copytree(store.records_root, clone / "records")
    from fasa_cli.experiments.store import ResultStore

    rebuilt = write_report(ResultStore(clone)).read_bytes()
    assert rebuilt == committed
    assert b"No finished runs" not in rebuilt and b"[" in rebuilt  # tables with paired intervals


def test_benchmark_rows_become_dotted_keys_not_raw_json(store):
    store.benchmarks_dir.mkdir(parents=True)
    (store.benchmarks_dir / "eval.json").write_text(json.dumps({"rows": [{"iou_type": "bbox", "speedup": 6.9}]}))
    text = write_report(store).read_text()
    assert "| rows.0.speedup | 6.9 |" in text and '{"iou_type"' not in text


def test_class_probability_frame_keeps_each_class_in_its_group_averaged_over_seeds():
    states = {0: [{"epoch": 0, "probs": [0.1, 0.01]}, {"epoch": 1, "probs": [0.2, 0.01]}],
              1: [{"epoch": 0, "probs": [0.3, 0.03]}, {"epoch": 1, "probs": [0.4, 0.03]}]}
    frame = class_probability_frame(states, ["r", "f"]).set_index(["class_index", "epoch"])
    assert frame.loc[(0, 0), "p"] == pytest.approx(0.2) and frame.loc[(0, 1), "p"] == pytest.approx(0.3)
    assert frame.loc[(1, 0), "group"] == "f" and frame.loc[(1, 1), "p"] == pytest.approx(0.02)
