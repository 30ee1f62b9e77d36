"""Tables of a spec's runs (pandas), rendered to markdown and rich.

Our numbers are mean ± sample std over the finished seeds; the paper's sit in their own
columns labelled "(paper)", never mixed with ours. AP-like metrics are stored as fractions
and shown as percentages with the paper's precision.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from fasa_cli.experiments.spec import ExperimentSpec
from fasa_cli.experiments.store import ResultStore

MISSING = "—"


def is_fraction_metric(metric: str) -> bool:
    """Stored in [0, 1], shown in percent (AP family, accuracy and its per-group forms, TIDE errors)."""
    return metric.startswith(("AP", "bbox_AP", "E_", "acc_")) or metric == "accuracy"


def display_scale(metric: str) -> float:
    return 100.0 if is_fraction_metric(metric) else 1.0


def decimals(metric: str) -> int:
    """The paper's printed precision for the metric."""
    if metric.startswith("E_"):
        return 2
    if metric == "train_s_per_iter":
        return 3
    return 1


def summarize(
    spec: ExperimentSpec,
    store: ResultStore,
    profile: str | None = None,
    seeds: list[int] | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Numbers per spec row (index = row name), in display units: n (of n_expected = the
    spec's seeds plus any other seed found), stale, and for each
    metric <m>_mean, <m>_std (sample std, NaN below 2 seeds), <m>_delta (to the reference row)."""
    profile = spec.check_profile(profile)
    dataset = dataset or spec.dataset[profile]
    metrics = spec.metrics_for(profile)
    runs = store.frame(spec=spec.name, profile=profile, dataset=dataset)
    if not seeds:
        # The spec's seeds, plus any extra seed someone ran: nothing finished is hidden.
        seeds = sorted(set(spec.seeds) | set(int(s) for s in runs.get("seed", [])))
    entries = []
    for row in spec.rows:
        entry: dict = {"row": row.name, "label": row.label, "paper_only": row.paper_only,
                       "n": 0, "n_expected": len(seeds), "stale": 0}
        current = runs.iloc[0:0]
        if not row.paper_only and not runs.empty:
            mine = runs[(runs["row"] == row.name) & runs["seed"].isin(seeds)]
            # A run made under an older version of the spec is not this row's result.
            current = mine[mine["config_hash"] == spec.resolve(row.name, profile, dataset).config_hash()]
            entry["n"], entry["stale"] = len(current), len(mine) - len(current)
        for metric in metrics:
            values = (current[metric].dropna().to_numpy(dtype=float) if metric in current else np.array([]))
            values = values * display_scale(metric)
            entry[f"{metric}_n"] = len(values)
            entry[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        entries.append(entry)
    table = pd.DataFrame(entries).set_index("row")
    for row in spec.rows:
        ref = spec.reference_row(row)
        table.loc[row.name, "reference"] = ref.name if ref else None
        intervals = paired_intervals(spec, store, row, ref, profile, dataset, seeds, metrics) if ref else {}
        for metric in metrics:
            got = intervals.get(metric)
            scale = display_scale(metric)
            # With an interval the delta is the paired one, over the same seed pairs as the
            # interval (with every seed paired it equals the difference of means).
            means_delta = table.loc[row.name, f"{metric}_mean"] - table.loc[ref.name, f"{metric}_mean"] if ref else math.nan
            table.loc[row.name, f"{metric}_delta"] = got.delta * scale if got else means_delta
            table.loc[row.name, f"{metric}_paired"] = got.delta * scale if got else math.nan
            table.loc[row.name, f"{metric}_lo"] = got.low * scale if got else math.nan
            table.loc[row.name, f"{metric}_hi"] = got.high * scale if got else math.nan
            table.loc[row.name, f"{metric}_pairs"] = got.pairs if got else 0
    return table


def _current_records(spec: ExperimentSpec, store: ResultStore, row, profile: str, dataset: str) -> dict[int, dict]:
    """This row's finished records under the spec's current config, by seed."""
    config_hash = spec.resolve(row.name, profile, dataset).config_hash()
    return {r["seed"]: r for r in store.find(spec=spec.name, profile=profile, dataset=dataset, row=row.name)
            if r.get("config_hash") == config_hash}


def paired_intervals(spec, store, row, ref, profile, dataset, seeds, metrics) -> dict:
    """Paired 95 % intervals of row minus reference over the seeds both rows finished: a bootstrap
    over seed pairs and validation images for the AP and accuracy metrics (where outcome tables
    exist), a t-interval over seed pairs for run-level metrics such as step time and memory and
    for runs without outcome tables."""
    from fasa_cli.evaluation.bootstrap import ACCURACY_METRICS, METRICS, paired_deltas, seed_paired_delta

    wanted = [m for m in metrics if m in METRICS or m in ACCURACY_METRICS]
    if row.paper_only or ref.paper_only:
        return {}
    mine = _current_records(spec, store, row, profile, dataset)
    theirs = _current_records(spec, store, ref, profile, dataset)
    common = sorted(set(mine) & set(theirs) & set(seeds))
    # Run-level metrics (step time, memory): a t-interval over the seed pairs.
    run_level = {}
    for metric in (m for m in metrics if m not in wanted):
        got = seed_paired_delta(metric, [(mine[s]["metrics"].get(metric), theirs[s]["metrics"].get(metric)) for s in common])
        if got is not None:
            run_level[metric] = got
    if not wanted:
        return run_level
    key = (str(store.records_root), tuple(store.source_id(mine[s]) for s in common), tuple(store.source_id(theirs[s]) for s in common),
           tuple(wanted))
    if key not in _INTERVALS:  # a report asks for the same pair in several tables
        pairs = [(_memo_table(store, mine[s]), _memo_table(store, theirs[s])) for s in common]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        _INTERVALS[key] = paired_deltas([a for a, _ in pairs], [b for _, b in pairs], wanted) if pairs else {}
    # Runs without match tables (COCO-LT's COCO protocol): the seed t-interval instead.
    for metric in (wanted if not _INTERVALS[key] else ()):
        got = seed_paired_delta(metric, [(mine[s]["metrics"].get(metric), theirs[s]["metrics"].get(metric)) for s in common])
        if got is not None:
            run_level[metric] = got
    return {**_INTERVALS[key], **run_level}


_INTERVALS: dict = {}
_TABLES: dict = {}


class _MemoMatches:
    """A run's match table that computes its metrics on a given set of resamples once: a
    report compares the same reference run with every other row of several tables, always on
    the same resamples, and the resampled AP is the whole cost of an interval (seconds per
    run). Results also go to the store's cache folder, keyed by the outcomes file's content,
    the resamples and the code that computes them, so the next report reads them back."""

    def __init__(self, table, source: Path, cache_dir: Path):
        self._table, self._memo = table, {}
        self._source, self._cache_dir = source, cache_dir
        self._source_digest = None
        self.image_ids = table.image_ids

    def metrics(self, weights):
        key = _digest(np.ascontiguousarray(weights).tobytes(), str(weights.shape).encode())
        if key not in self._memo:
            values = self._cached(key)
            if values is None:
                values = self._table.metrics(weights)
                self._store(key, values)
            self._memo[key] = values
        return self._memo[key]

    def _cache_path(self, key: str) -> Path:
        if self._source_digest is None:
            self._source_digest = _digest(self._source.read_bytes(), _metric_code())
        return self._cache_dir / "resampled" / f"{self._source_digest[:20]}-{key[:20]}.npz"

    def _cached(self, key: str) -> dict | None:
        path = self._cache_path(key)
        try:
            with np.load(path) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, KeyError):  # absent, or a torn / foreign file: recompute
            return None

    def _store(self, key: str, values: dict) -> None:
        path = self._cache_path(key)
        with contextlib.suppress(OSError):  # a read-only store still reports, uncached
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                np.savez(handle, **values)
            os.replace(tmp, path)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part)
    return h.hexdigest()


@functools.cache
def _metric_code() -> bytes:
    """The source of the code that turns outcomes into metrics: a cached value is stale once it changes."""
    from fasa_cli.evaluation import bootstrap

    return Path(bootstrap.__file__).read_bytes()


def _memo_table(store: ResultStore, record: dict):
    key = (str(store.records_root), store.source_id(record))
    if key not in _TABLES:
        table = store.matches(record)
        _TABLES[key] = None if table is None else _MemoMatches(table, store.matches_path(record), store.cache_dir)
    return _TABLES[key]


def spec_table(
    spec: ExperimentSpec,
    store: ResultStore,
    profile: str | None = None,
    seeds: list[int] | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """The printable table: one row per spec row, strings ready for markdown or rich."""
    profile = spec.check_profile(profile)
    numbers = summarize(spec, store, profile, seeds, dataset)
    metrics = spec.metrics_for(profile)
    paper_metrics = [m for m in metrics if any(m in r.paper for r in spec.rows)]
    # Paper numbers for metrics this profile does not measure (e.g. CIFAR accuracy next to
    # our AP on the embedded data) still get their own, clearly labelled column.
    paper_extra = [m for r in spec.rows for m in r.paper if m not in metrics]
    paper_extra = list(dict.fromkeys(paper_extra))
    show_reference = any(r.delta_to for r in spec.rows)
    lines = []
    for row in spec.rows:
        got = numbers.loc[row.name]
        line = {"Row": row.label, "Seeds": _seeds_text(got)}
        for metric in metrics:
            line[metric] = _mean_std_text(got[f"{metric}_mean"], got[f"{metric}_std"], decimals(metric))
            ref = spec.reference_row(row)
            line[f"Δ{metric}"] = _delta_text(got, metric) if ref else ""
            if metric in paper_metrics:
                line[f"{metric} (paper)"] = _paper_text(row, metric)
        for metric in paper_extra:
            line[f"{metric} (paper)"] = _paper_text(row, metric)
        if show_reference:
            ref = spec.reference_row(row)
            line["Δ vs"] = ref.label if ref else ""
        lines.append(line)
    return pd.DataFrame(lines)


def _seeds_text(got: pd.Series) -> str:
    if got["paper_only"]:
        return "paper only"
    text = f"{int(got['n'])}/{int(got['n_expected'])} seeds"
    return f"{text} ({int(got['stale'])} stale)" if got["stale"] else text


def _mean_std_text(mean: float, std: float, places: int) -> str:
    if math.isnan(mean):
        return MISSING
    if math.isnan(std):
        return f"{mean:.{places}f}"
    return f"{mean:.{places}f} ± {std:.{places + 1}f}"


def _delta_text(got: pd.Series, metric: str) -> str:
    """The difference to the reference with its paired 95 % interval where match tables exist;
    '*' marks an interval that excludes 0."""
    places = decimals(metric)
    delta = got[f"{metric}_delta"]
    if math.isnan(delta):
        return MISSING
    text = signed(delta, places)
    low, high = got.get(f"{metric}_lo", math.nan), got.get(f"{metric}_hi", math.nan)
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{signed(low, places)}, {signed(high, places)}]"
        if low > 0 or high < 0:
            text += "*"
    return text


def signed(value: float, places: int) -> str:
    """'+1.5', '-0.3', and '0.0' for anything that rounds to zero (never '-0.0')."""
    text = f"{value:+.{places}f}"
    return text[1:] if float(text) == 0 else text


def _paper_text(row, metric: str) -> str:
    if metric not in row.paper:
        return ""
    text = f"{row.paper[metric]:.{decimals(metric)}f}"
    if metric in row.paper_std:
        text += f" ± {row.paper_std[metric]:g}"
    return text


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"
    body = ["| " + " | ".join(cell(v) for v in values) + " |" for values in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_rich(table: pd.DataFrame, title: str | None = None) -> Table:
    out = Table(title=title, show_lines=False)
    for i, column in enumerate(table.columns):
        paper = column.endswith("(paper)")
        out.add_column(str(column), justify="left" if i == 0 else "right", style="dim" if paper else None)
    for values in table.itertuples(index=False):
        out.add_row(*(str(v) for v in values))
    return out


def table_heading(spec: ExperimentSpec, profile: str, dataset: str) -> str:
    """Profile and dataset in every heading, so a CPU number is never read as an LVIS one."""
    return f"Table {spec.table}: {spec.title} (ours: profile {profile}, dataset {dataset})"


def spec_markdown(
    spec: ExperimentSpec,
    store: ResultStore,
    profile: str,
    dataset: str | None = None,
    seeds: list[int] | None = None,
    level: int = 2,
) -> str:
    dataset = dataset or spec.dataset[profile]
    table = spec_table(spec, store, profile, seeds, dataset)
    parts = [
        f"{'#' * level} {table_heading(spec, profile, dataset)}",
        "",
        f"Paper's setting: {spec.paper_setting}. Columns marked (paper) are the paper's numbers; "
        "the others are ours, mean ± sample std over the finished seeds. Δ is the difference to the "
        "reference row, with its paired 95 % bootstrap interval over seeds and validation images (same "
        "seeds, same image resamples for both rows, the seed pairs resampled too), or for run-level "
        "metrics without per-image outcomes (step time, memory, TIDE errors, COCO-LT's COCO AP) a Student-t interval over "
        "the seed pairs; * marks an interval that excludes 0.",
    ]
    if spec.caption:
        parts += ["", f"Paper caption: {spec.caption}"]
    parts += ["", to_markdown(table)]
    floor = noise_floor_text(noise_floor(spec, store, profile, dataset))
    if floor:
        parts += ["", floor]
    notes = [f"- {spec.notes.strip()}"] if spec.notes else []
    notes += [f"- {r.label}: {r.note.strip()}" for r in spec.rows if r.note]
    if notes:
        parts += ["", "Notes:", *notes]
    return "\n".join(parts) + "\n"


def table_path(store: ResultStore, spec: ExperimentSpec, profile: str, dataset: str):
    """One file per (spec, profile, dataset): a smoke run on tiny data never replaces the
    main job's table."""
    return store.tables_dir / f"{spec.name}--{profile}--{dataset}.md"


def write_table(store: ResultStore, spec: ExperimentSpec, profile: str, dataset: str, text: str | None = None):
    """Write the table file; `text` is the section when the caller has built it already."""
    path = table_path(store, spec, profile, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else spec_markdown(spec, store, profile, dataset), encoding="utf-8")
    return path


NOISE_METRICS = ("AP", "APr", "accuracy", "acc_few")  # the overall and the tail metric of each task


def noise_floor(spec: ExperimentSpec, store: ResultStore, profile: str, dataset: str,
                metrics: tuple[str, ...] | None = None) -> dict | None:
    """How noisy the reference (baseline) row is, from its own runs only: the seed-to-seed
    sd of each metric (training noise plus evaluation noise) and the bootstrap sd over
    validation images within a run (evaluation noise alone), in display units. By default
    the metrics are the overall and the tail one the profile shows (AP, APr or accuracy, acc_few)."""
    from fasa_cli.evaluation.bootstrap import bootstrap_spread

    if metrics is None:
        metrics = tuple(m for m in NOISE_METRICS if m in spec.metrics_for(profile))
    base = next((r for r in spec.rows if r.baseline and not r.paper_only), None)
    if base is None or not metrics:
        return None
    records = list(_current_records(spec, store, base, profile, dataset).values())
    if len(records) < 2:
        return None
    # Memoised: most tables share Table 1's baseline runs, and their resampled AP is the cost.
    tables = [t for t in (_memo_table(store, r) for r in records) if t is not None]
    out = {"row": base.label, "seeds": len(records), "metrics": {}}
    evaluation = bootstrap_spread(tables, metrics) if tables else {}
    for m in metrics:
        values = np.array([r["metrics"].get(m) for r in records if r["metrics"].get(m) is not None], dtype=float)
        out["metrics"][m] = {
            "seed_sd": float(values.std(ddof=1)) * display_scale(m) if len(values) > 1 else math.nan,
            "eval_sd": evaluation.get(m, math.nan) * display_scale(m),
        }
    return out


def noise_floor_text(floor: dict | None) -> str:
    if not floor:
        return ""
    evaluated = any(math.isfinite(v["eval_sd"]) for v in floor["metrics"].values())
    if not evaluated:  # no per-image outcomes to resample (COCO-LT's COCO protocol)
        parts = [f"{m}: seed sd {v['seed_sd']:.2f}" for m, v in floor["metrics"].items()]
        return (f"Noise floor of {floor['row']} ({floor['seeds']} seeds; no evaluation sd: these runs keep no "
                f"per-image outcomes to resample): " + "; ".join(parts) + ".")
    parts = [f"{m}: seed sd {v['seed_sd']:.2f}, evaluation sd {v['eval_sd']:.2f}" for m, v in floor["metrics"].items()]
    return (f"Noise floor of {floor['row']} ({floor['seeds']} seeds; evaluation sd = bootstrap over validation "
            f"images within a run, averaged over runs): " + "; ".join(parts) + ".")
