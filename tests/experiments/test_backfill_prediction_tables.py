"""scripts/backfill_prediction_tables.py: an older classification record gets its prediction
table from its run folder, only when the table gives the record's own numbers back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from fasa_cli.evaluation.bootstrap import PredictionTable
from fasa_cli.experiments.store import MATCHES_SUFFIX, ResultStore, RunKey

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "backfill_prediction_tables.py"


def _script():
    spec = importlib.util.spec_from_file_location("backfill_prediction_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_run(store: ResultStore, row: str, seed: int, tamper: float = 0.0) -> RunKey:
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(6), 5)
    pred = np.where(rng.random(30) < 0.6, label, (label + 1) % 6)
    frequency = np.array(list("ffccrr"))
    metrics = {m: float(v[0]) for m, v in PredictionTable(np.arange(30), label, pred, frequency).metrics().items()}
    metrics["accuracy"] += tamper
    key = RunKey("table7", "cpu-compact-cls", "embedded-cifar-lt", row, seed)
    run_dir = store.run_dir(key)
    run_dir.mkdir(parents=True)
    np.savez_compressed(run_dir / "predictions.npz", pred=pred, label=label)
    (run_dir / "per_class_accuracy.json").write_text(json.dumps({"frequency": frequency.tolist()}))
    store.write_record(key, {"spec": "table7", "row": row, "seed": seed, "config": {"task": "classification"},
                             "metrics": metrics})
    return key


def test_backfill_writes_tables_that_reproduce_the_record_and_skips_a_mismatch(tmp_path):
    store = ResultStore(tmp_path)
    good, bad = _old_run(store, "ce", 0), _old_run(store, "ldam", 1, tamper=0.01)
    written, problems = _script().backfill(store)
    assert written == 1 and len(problems) == 1 and "ldam" in problems[0]
    table = store.matches(store.read_record(good))
    assert isinstance(table, PredictionTable)
    assert float(table.metrics()["accuracy"][0]) == store.read_record(good)["metrics"]["accuracy"]
    assert not store.record_path(bad).with_name(f"seed1{MATCHES_SUFFIX}").exists()
    assert _script().backfill(store) == (0, problems)  # nothing written twice
