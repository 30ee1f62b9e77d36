"""results/REPORT.md and its figures, built only from the result store.

The text about what the numbers show is computed from the runs (deltas against the seed
spread, and whether they point the paper's way), never written in advance.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fasa_cli.errors import FasaError
from fasa_cli.experiments.spec import ExperimentSpec, load_spec
from fasa_cli.experiments.store import ResultStore
from fasa_cli.experiments.tables import decimals, signed, spec_markdown, summarize, write_table

GROUPS = (("r", "rare"), ("c", "common"), ("f", "frequent"))
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
        "95 % bootstrap interval over validation images; a difference counts as real only when that "
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
            for figure in _figures_for(store, spec, profile, dataset):
                parts += ["", f"![{figure.stem}]({figure.relative_to(store.root).as_posix()})"]
    parts += _benchmarks_section(store)
    store.root.mkdir(parents=True, exist_ok=True)
    store.report_path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return store.report_path


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
    paired = got.get(f"{metric}_paired", math.nan)
    # With a paired interval the point is the paired difference over the same seed pairs.
    delta = mean - ref_mean if math.isnan(paired) else paired

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


# -- figures -------------------------------------------------------------------------------


def _figures_for(store: ResultStore, spec: ExperimentSpec, profile: str, dataset: str) -> list[Path]:
    records = store.find(spec=spec.name, profile=profile, dataset=dataset)
    figures = []
    for row in spec.rows:
        states = {}
        for record in records:
            if record["row"] == row.name and record.get("fasa_state"):
                states[record["seed"]] = record["fasa_state"]
        if states:
            out = store.figures_dir / f"fig3a_{spec.name}_{profile}--{dataset}_{row.name}.png"
            plot_group_probabilities(states, out, f"{spec.name} · {row.label} · {profile}, {dataset}")
            figures.append(out)
            frequency = next((r["classifier_norms"]["frequency"] for r in records
                              if r["row"] == row.name and r.get("classifier_norms")), None)
            if frequency is not None and any(e.get("probs") for s in states.values() for e in s):
                out = store.figures_dir / f"fig3b_{spec.name}_{profile}--{dataset}_{row.name}.png"
                plot_class_probabilities(states, frequency, out, f"{spec.name} · {row.label} · {profile}, {dataset}")
                figures.append(out)
    norms: dict[str, dict[int, dict]] = {}
    for record in records:
        if record.get("classifier_norms"):
            norms.setdefault(record["row"], {})[record["seed"]] = record["classifier_norms"]
    if norms:
        labels = {r.name: r.label for r in spec.rows}
        out = store.figures_dir / f"fig4_{spec.name}_{profile}--{dataset}.png"
        plot_classifier_norms({labels.get(k, k): v for k, v in norms.items()}, out, f"{spec.name} · {profile}, {dataset}")
        figures.append(out)
    return figures


def group_probability_frame(states: dict[int, list[dict]]) -> pd.DataFrame:
    """Per (epoch, group): mean and std over seeds of the group's mean sampling probability."""
    rows = [
        {"seed": seed, "epoch": entry["epoch"], "group": group, "p": float(entry["group_mean_p"][group])}
        for seed, entries in states.items()
        for entry in entries
        for group, _ in GROUPS
        if entry.get("group_mean_p", {}).get(group) is not None
    ]
    frame = pd.DataFrame(rows, columns=["seed", "epoch", "group", "p"])
    stats = frame.groupby(["group", "epoch"])["p"].agg(["mean", "std", "count"]).reset_index()
    return stats


def plot_group_probabilities(states: dict[int, list[dict]], out: Path, title: str) -> Path:
    """Fig. 3a: mean sampling probability per rare/common/frequent group over training."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stats = group_probability_frame(states)
    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.add_subplot()
    for group, name in GROUPS:
        part = stats[stats["group"] == group].sort_values("epoch")
        if part.empty:
            continue
        std = part["std"].fillna(0.0).to_numpy()
        ax.plot(part["epoch"], part["mean"], marker="o", label=name)
        ax.fill_between(part["epoch"], part["mean"] - std, part["mean"] + std, alpha=0.2)
    if (stats["mean"] > 0).all() and not stats.empty:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean sampling probability p_c")
    ax.set_title(f"{title}\n(mean ± std over {len(states)} seed(s))", fontsize=9)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def class_probability_frame(states: dict[int, list[dict]], frequency: list[str]) -> pd.DataFrame:
    """Per (class, epoch): the class's group letter and its sampling probability, mean over seeds."""
    rows = [
        {"seed": seed, "epoch": entry["epoch"], "class_index": k, "group": frequency[k], "p": float(p)}
        for seed, entries in states.items()
        for entry in entries
        for k, p in enumerate(entry.get("probs") or [])
    ]
    frame = pd.DataFrame(rows, columns=["seed", "epoch", "class_index", "group", "p"])
    return frame.groupby(["group", "class_index", "epoch"])["p"].mean().reset_index()


def plot_class_probabilities(states: dict[int, list[dict]], frequency: list[str], out: Path, title: str) -> Path:
    """Fig. 3b: every class's sampling probability over training, one panel per group."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    frame = class_probability_frame(states, frequency)
    fig = Figure(figsize=(9, 3.4), dpi=110)
    axes = fig.subplots(1, 3, sharey=True)
    positive = (frame["p"] > 0).all() and not frame.empty
    for ax, (group, name) in zip(axes, GROUPS):
        part = frame[frame["group"] == group]
        for _, one in part.groupby("class_index"):
            ax.plot(one["epoch"], one["p"], linewidth=0.9, alpha=0.7)
        ax.set_title(f"{name} ({part['class_index'].nunique()} classes)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if positive:
            ax.set_yscale("log")
    axes[0].set_ylabel("sampling probability p_c")
    fig.suptitle(f"{title} (per class, mean over {len(states)} seed(s))", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def norms_frame(by_seed: dict[int, dict]) -> pd.DataFrame:
    """Per class: training count, group, mean and std of the classifier weight norm over seeds,
    sorted from the most to the least frequent class."""
    parts = [
        pd.DataFrame({
            "seed": seed,
            "class_id": data["class_ids"],
            "frequency": data["frequency"],
            "count": data["train_instance_count"],
            "norm": np.asarray(data["norms"], dtype=float),
        })
        for seed, data in by_seed.items()
    ]
    frame = pd.concat(parts, ignore_index=True)
    stats = frame.groupby("class_id").agg(
        count=("count", "first"), frequency=("frequency", "first"), mean=("norm", "mean"), std=("norm", "std")
    )
    return stats.sort_values(["count", "mean"], ascending=[False, False]).reset_index()


def plot_classifier_norms(norms: dict[str, dict[int, dict]], out: Path, title: str) -> Path:
    """Fig. 4: classifier weight norm per class, classes sorted by training frequency."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot()
    order = None
    for label, by_seed in norms.items():
        stats = norms_frame(by_seed)
        if order is None:
            order = stats["class_id"].tolist()  # one class order for every curve
        stats = stats.set_index("class_id").loc[[c for c in order if c in set(stats["class_id"])]]
        x = np.arange(len(stats))
        std = stats["std"].fillna(0.0).to_numpy()
        ax.plot(x, stats["mean"], label=f"{label} ({len(by_seed)} seed(s))", linewidth=1.2)
        ax.fill_between(x, stats["mean"] - std, stats["mean"] + std, alpha=0.2)
    ax.set_xlabel("classes sorted by training instances (head → tail)")
    ax.set_ylabel("classifier weight L2 norm")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


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
