"""Give classification records made before prediction tables existed their table.

A record finished by an older version has no `seed<k>.matches.npz`, so its Δ columns have no
paired interval. Its run folder still holds the test predictions (`predictions.npz`) and the
per-class frequency groups (`per_class_accuracy.json`); this writes the prediction table beside
the record, after checking that it gives the record's own accuracies back exactly.

    python scripts/backfill_prediction_tables.py [--results-dir results]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fasa_cli.evaluation.bootstrap import ACCURACY_METRICS, PredictionTable
from fasa_cli.experiments.store import MATCHES_SUFFIX, ResultStore


def backfill(store: ResultStore) -> tuple[int, list[str]]:
    written, problems = 0, []
    for record in store.records():
        if record.get("config", {}).get("task") != "classification" or record.get("reused_from"):
            continue
        target = store.records_root / f"{record['record_id']}{MATCHES_SUFFIX}"
        if target.exists():
            continue
        run_dir = store.artefacts_dir(record)
        try:
            with np.load(run_dir / "predictions.npz") as data:
                pred, label = data["pred"], data["label"]
            frequency = np.array(json.loads((run_dir / "per_class_accuracy.json").read_text())["frequency"])
        except (OSError, KeyError, ValueError) as err:
            problems.append(f"{record['record_id']}: run folder unusable ({err})")
            continue
        table = PredictionTable(np.arange(len(label)), label, pred, frequency)
        got = {m: float(v[0]) for m, v in table.metrics().items()}
        want = {m: record["metrics"].get(m) for m in ACCURACY_METRICS}
        if any(w is not None and not np.isclose(got[m], w, rtol=0, atol=1e-12, equal_nan=True) for m, w in want.items()):
            problems.append(f"{record['record_id']}: predictions give {got}, the record says {want}")
            continue
        table.save(target)
        written += 1
    return written, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=None)
    store = ResultStore(parser.parse_args().results_dir)
    written, problems = backfill(store)
    print(f"{written} prediction tables written")
    for line in problems:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
