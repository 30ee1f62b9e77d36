"""results/REPORT.md, built only from the result store; its figures are drawn by
fasa_cli.experiments.figures.

The text about what the numbers show is computed from the runs (deltas against the seed
spread, and whether they point the paper's way), never written in advance.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from fasa_cli.errors import FasaError
from fasa_cli.experiments.figures import (  # noqa: F401  (the figure frames, re-exported)
    class_probability_frame,
    cross_table_figures,
    figures_for,
    group_probability_frame,
    norms_frame,
)
from fasa_cli.experiments.spec import ExperimentSpec, load_spec
from fasa_cli.experiments.store import ResultStore
from fasa_cli.experiments.tables import decimals, signed, spec_markdown, summarize, write_table

PAPER_PROFILES_NOTE = (
    "Profiles: `cpu-compact` is a small Mask R-CNN trained on generated long-tailed data on a "
    "CPU; its numbers test whether the method behaves as described, they are not LVIS numbers "
    "and are not comparable in absolute terms with the paper's columns. `lvis-*`, `coco-lt-*` "
    "and `cifar-*` profiles follow the paper's protocols."
)


def write_report(store: ResultStore) -> Path:
    """Write REPORT.md (and figures/*.png) for every spec that has finished records.

    It depends on the records alone (no clock, no local run folders), so a fresh clone
    rebuilds the committed report byte for byte."""
    runs = store.frame()
    finished = runs["finished"].dropna() if "finished" in runs else []
    latest = f", the latest finished {max(finished)}" if len(finished) else ""
    parts = [
        "# FASA reproduction report",
        "",
        f"Built by `fasa report` from {len(runs)} finished run record(s) in "
        f"{store.records_root.relative_to(store.root).as_posix()}/{latest}.",
        "Our numbers are mean ± sample std over seeds; columns marked (paper) are the paper's, copied "
        "from its tables. Δ columns are differences of our means to the reference row, with the paired "
        "95 % bootstrap interval over seeds and validation images; a difference counts as real only when that "
        "interval excludes 0 (marked *).",
        "",
        PAPER_PROFILES_NOTE,
    ]
    if runs.empty:
        parts += ["", "No finished runs yet: run `fasa ablate <spec>` first."]
    specs = _specs_with_runs(store, runs)
    for name, spec in specs:
        for profile, dataset in _profile_datasets(runs, name):
            if spec is None or profile not in spec.profiles:
                parts += ["", f"## {name} ({profile}, {dataset})", "", "Runs exist but their spec is unknown; not tabulated."]
                continue
            section = spec_markdown(spec, store, profile, dataset)
            write_table(store, spec, profile, dataset, section)  # tables/ stays in step with the report
            parts += ["", section.rstrip()]
            findings = describe_findings(spec, summarize(spec, store, profile, dataset=dataset))
            if findings:
                parts += ["", "What our numbers show:", *[f"- {line}" for line in findings]]
            figures = figures_for(store, spec, profile, dataset)
            for figure in figures.paths:
                parts += ["", f"![{figure.stem}]({figure.relative_to(store.root).as_posix()})"]
            if figures.notes:
                parts += ["", "Figures not drawn yet:", *[f"- {note}" for note in figures.notes]]
    if not runs.empty:
        parts += _cross_table_section(store)
    parts += _benchmarks_section(store)
    store.root.mkdir(parents=True, exist_ok=True)
    store.report_path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return store.report_path


def _cross_table_section(store: ResultStore) -> list[str]:
    """Figures that draw on several specs' runs (Fig. 1c)."""
    figures = cross_table_figures(store)
    if not figures.paths and not figures.notes:
        return []
    parts = ["", "## Figures across tables"]
    for figure in figures.paths:
        parts += ["", f"![{figure.stem}]({figure.relative_to(store.root).as_posix()})"]
    if figures.notes:
        parts += ["", *[f"- {note}" for note in figures.notes]]
    return parts


def _specs_with_runs(store: ResultStore, runs: pd.DataFrame) -> list[tuple[str, ExperimentSpec | None]]:
    if runs.empty:
        return []
    snapshots = store.spec_snapshots()
    specs = []
    for name in sorted(runs["spec"].unique(), key=_natural_key):
        spec = None
        if name in snapshots:
            spec = ExperimentSpec.model_validate(snapshots[name])
        else:
            try:
                spec = load_spec(name)
            except FasaError:
                spec = None
        specs.append((name, spec))
    return specs


def _profile_datasets(runs: pd.DataFrame, spec: str) -> list[tuple[str, str]]:
    mine = runs[runs["spec"] == spec]
    return sorted({(p, d) for p, d in zip(mine["profile"], mine["dataset"])})


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# -- findings ------------------------------------------------------------------------------


def describe_findings(spec: ExperimentSpec, numbers: pd.DataFrame) -> list[str]:
    """One sentence per (row, headline metric): our delta, its seed spread, the paper's delta."""
    metrics = [c[: -len("_mean")] for c in numbers.columns if c.endswith("_mean")]
    headline = [m for m in ("AP", "APr") if m in metrics] or metrics[:2]
    lines = []
    for row in spec.rows:
        ref = spec.reference_row(row)
        if ref is None or row.paper_only or ref.paper_only:
            continue
        for metric in headline:
            lines.append(_finding(row, ref, metric, numbers.loc[row.name], numbers.loc[ref.name]))
    return [line for line in lines if line]


def _finding(row, ref, metric: str, got: pd.Series, base: pd.Series) -> str:
    mean, std, n = got[f"{metric}_mean"], got[f"{metric}_std"], int(got[f"{metric}_n"])
    ref_mean, ref_std, ref_n = base[f"{metric}_mean"], base[f"{metric}_std"], int(base[f"{metric}_n"])
    if n == 0 or ref_n == 0:
        return ""
    places = decimals(metric)
    delta = got.get(f"{metric}_delta", mean - ref_mean)  # spec_table's: paired where there is an interval

    def with_std(m: float, s: float) -> str:
        return f"{m:.{places}f}" if math.isnan(s) else f"{m:.{places}f} ± {s:.{places + 1}f}"

    text = (
        f"{row.label} vs {ref.label}, {metric}: {signed(delta, places)} "
        f"({with_std(mean, std)} vs {with_std(ref_mean, ref_std)}; {n} vs {ref_n} seeds)"
    )
    low, high = got.get(f"{metric}_lo", math.nan), got.get(f"{metric}_hi", math.nan)
    pairs = int(got.get(f"{metric}_pairs", 0) or 0)
    clear = None  # unknown without a paired interval
    if math.isnan(low) or math.isnan(high):
        text += "; no paired interval (no match tables for paired seeds), so not judged"
    elif low > 0 or high < 0:
        clear = True
        text += (f"; paired 95 % interval [{signed(low, places)}, {signed(high, places)}] over {pairs} "
                 f"seed pair(s) excludes 0: {'higher' if delta > 0 else 'lower'}")
    else:
        clear = False
        text += (f"; paired 95 % interval [{signed(low, places)}, {signed(high, places)}] over {pairs} "
                 "seed pair(s) includes 0, so no clear difference")
    if metric in row.paper and metric in ref.paper:
        paper_delta = row.paper[metric] - ref.paper[metric]
        text += f". The paper reports {signed(paper_delta, places)}"
        if clear is True and paper_delta != 0:
            text += ": same direction" if (paper_delta > 0) == (delta > 0) else ": opposite direction"
        elif clear is False and abs(paper_delta) >= 10 ** -places:
            text += ", which these runs do not reproduce"
    return text + "."


# -- benchmarks ----------------------------------------------------------------------------


def _benchmarks_section(store: ResultStore) -> list[str]:
    files = sorted(store.benchmarks_dir.glob("*.json")) if store.benchmarks_dir.is_dir() else []
    if not files:
        return []
    parts = ["", "## Benchmarks", "", f"From {store.benchmarks_dir.relative_to(store.root).as_posix()}/."]
    for path in files:
        summary = path.with_suffix(".md")
        if summary.exists():  # the benchmark's own write-up, headings moved under this section
            text = summary.read_text(encoding="utf-8").strip()
            parts += [""] + [("##" + line) if line.startswith("#") else line
                             for line in text.splitlines()]
            continue
        parts += ["", f"### {path.stem}", ""]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            parts.append(f"(unreadable: {err})")
            continue
        parts += ["| key | value |", "|---|---:|"]
        parts += [f"| {key} | {_format_value(value)} |" for key, value in _flatten(data)]
    return parts


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts and lists as dotted keys (rows.0.speedup), so no cell holds raw JSON."""
    if isinstance(data, dict):
        items = []
        for key, value in data.items():
            items += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return items
    if isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        items = []
        for index, value in enumerate(data):
            items += _flatten(value, f"{prefix}.{index}" if prefix else str(index))
        return items
    return [(prefix or "value", data)]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        text = ", ".join(_format_value(v) for v in value[:8]) + (f", … ({len(value)} values)" if len(value) > 8 else "")
    else:
        text = str(value)
    return text.replace("|", "\\|")
