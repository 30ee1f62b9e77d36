"""The paper's figures, drawn from the result store's records alone.

Per spec section of the report (`figures_for`): Fig. 1b (true-class probability per class,
baseline vs FASA), Fig. 3a/3b (sampling probabilities over training), Fig. 4 (classifier
weight norms) and Fig. 5 (t-SNE of the final class means, coloured by group). Across tables
(`cross_table_figures`): Fig. 1c (APr per backbone with and without FASA, beside FASA's
training-time overhead, from the Table 5 and Table 12 runs). A figure whose runs are missing
becomes a note saying which runs it waits for.

Each figure has a `*_frame` function giving the numbers it plots, so tests check the data,
not only the picture.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fasa_cli.errors import FasaError
from fasa_cli.experiments.spec import ExperimentSpec, Row, load_spec
from fasa_cli.experiments.store import ResultStore
from fasa_cli.experiments.tables import display_scale
from fasa_cli.figure_artefacts import decode_class_means

GROUPS = (("r", "rare"), ("c", "common"), ("f", "frequent"))
GROUP_COLOURS = {"r": "#d62728", "c": "#ff7f0e", "f": "#1f77b4"}
# Fig. 4 in the paper: Cross-Entropy and Seesaw, each with and without FASA. A spec with a
# Seesaw row draws those four curves, chosen by method name; CE prefers the RFS row, as the
# paper's Seesaw runs use RFS.
PAPER_FIG4_FAMILIES = (("CE", ("rfs", "baseline")), ("Seesaw", ("seesaw",)))
# Fig. 1c: (spec, row without FASA, row with FASA); every profile of each spec is a backbone.
FIG1C_SOURCES = (
    ("table12", "rfs", "rfs_fasa"),
    ("table5_r101", "rfs", "rfs_fasa"),
    ("table5_x101", "rfs", "rfs_fasa"),
    ("table5_cascade_r101", "rfs", "rfs_fasa"),
)
CLUSTERING_NAMES = {
    "dbscan": "DBSCAN on the Fisher distance (Sec. 3.2)",
    "affinity": "affinity propagation (official code)",
    "meanshift": "Mean-shift (App. D)",
}


@dataclass
class FigureSet:
    """Figures drawn, and one sentence per figure that waits for runs."""

    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: "FigureSet") -> None:
        self.paths += other.paths
        self.notes += other.notes


def _tag(spec: ExperimentSpec, profile: str, dataset: str) -> str:
    return f"{spec.name}_{profile}--{dataset}"


def _fit(title: str, width: int = 72) -> str:
    """A long title broken into lines, so that it is not cut off at the figure's edges."""
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in title.split("\n"))


def _title(spec: ExperimentSpec, profile: str, dataset: str) -> str:
    return f"{spec.name} · {profile}, {dataset}"


# -- the figures of one spec section --------------------------------------------------------


def figures_for(store: ResultStore, spec: ExperimentSpec, profile: str, dataset: str) -> FigureSet:
    """Every per-spec figure whose data the records hold, and notes for the ones that wait."""
    records = store.find(spec=spec.name, profile=profile, dataset=dataset)
    out = FigureSet()
    for row in spec.rows:
        states = {}
        for record in records:
            if record["row"] == row.name and record.get("fasa_state"):
                states[record["seed"]] = record["fasa_state"]
        if states:
            path = store.figures_dir / f"fig3a_{_tag(spec, profile, dataset)}_{row.name}.png"
            plot_group_probabilities(states, path, f"{spec.name} · {row.label} · {profile}, {dataset}")
            out.paths.append(path)
            frequency = next((r["classifier_norms"]["frequency"] for r in records
                              if r["row"] == row.name and r.get("classifier_norms")), None)
            if frequency is not None and any(e.get("probs") for s in states.values() for e in s):
                path = store.figures_dir / f"fig3b_{_tag(spec, profile, dataset)}_{row.name}.png"
                plot_class_probabilities(states, frequency, path,
                                         f"{spec.name} · {row.label} · {profile}, {dataset}")
                out.paths.append(path)
    out.extend(_fig4(store, spec, profile, dataset, records))
    out.extend(_fig1b(store, spec, profile, dataset, records))
    out.extend(_fig5(store, spec, profile, dataset, records))
    return out


def _row_method(spec: ExperimentSpec, row: Row, profile: str, dataset: str) -> tuple[str, dict | None]:
    """(method name, fasa block or None) of a row, from the spec's settings."""
    merged = spec.merged_settings(row.name, profile, dataset)
    return merged.get("method", "baseline"), merged.get("fasa")


def paper_fig4_rows(spec: ExperimentSpec, profile: str, dataset: str) -> list[tuple[str, Row | None]] | None:
    """The paper's four Fig. 4 curves -- CE, CE + FASA, Seesaw, Seesaw + FASA -- as (name,
    row) chosen by method name, or None when the spec has no Seesaw row (then every row is a
    curve). Among candidates the FASA row with the paper's FASA (an empty `fasa:` block) wins;
    a name without a row in the spec gets None."""
    rows = [(r, *_row_method(spec, r, profile, dataset)) for r in spec.runnable_rows()]
    if not any(method == "seesaw" for _, method, _ in rows):
        return None
    chosen = []
    for family, methods in PAPER_FIG4_FAMILIES:
        for with_fasa in (False, True):
            candidates = [(methods.index(m), fasa not in ({}, None), i, r)
                          for i, (r, m, fasa) in enumerate(rows)
                          if m in methods and (fasa is not None) == with_fasa]
            best = min(candidates, key=lambda c: c[:3])[3] if candidates else None
            chosen.append((f"{family} + FASA" if with_fasa else family, best))
    return chosen


def _curves(spec: ExperimentSpec, profile: str, dataset: str, records: list[dict], key: str
            ) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """{curve label: {seed: record[key]}} for Figs. 1b and 4, and the rows the paper's
    curves still wait for."""
    by_row: dict[str, dict[int, dict]] = {}
    for record in records:
        if record.get(key):
            by_row.setdefault(record["row"], {})[record["seed"]] = record[key]
    chosen = paper_fig4_rows(spec, profile, dataset)
    if chosen is None:
        labels = {r.name: r.label for r in spec.rows}
        return {labels.get(k, k): v for k, v in by_row.items()}, []
    curves, waiting = {}, []
    for name, row in chosen:
        if row is not None and row.name in by_row:
            curves[f"{name}: {row.label}"] = by_row[row.name]
        else:
            waiting.append(f"{name} (row {row.name})" if row is not None else f"{name} (no such row in the spec)")
    return curves, waiting


def _fig4(store, spec, profile, dataset, records) -> FigureSet:
    out = FigureSet()
    norms, waiting = _curves(spec, profile, dataset, records, "classifier_norms")
    if norms:
        path = store.figures_dir / f"fig4_{_tag(spec, profile, dataset)}.png"
        plot_classifier_norms(norms, path, _title(spec, profile, dataset))
        out.paths.append(path)
    if waiting:
        out.notes.append(f"Fig. 4 (classifier weight norms, the paper's four curves) waits for runs of: "
                         f"{', '.join(waiting)}.")
    return out


def _fig1b(store, spec, profile, dataset, records) -> FigureSet:
    out = FigureSet()
    curves, waiting = _curves(spec, profile, dataset, records, "true_class_prob")
    if curves:
        path = store.figures_dir / f"fig1b_{_tag(spec, profile, dataset)}.png"
        plot_true_class_probability(curves, path, _title(spec, profile, dataset))
        out.paths.append(path)
    without = sorted({r["row"] for r in records if not r.get("true_class_prob")}
                     - {r["row"] for r in records if r.get("true_class_prob")})
    if waiting:  # the paper's curves: say which ones wait, not every row of the spec
        without = []
    if without:
        out.notes.append(
            f"Fig. 1b (mean predicted probability of the true class per class) {'leaves out' if curves else 'waits for'} "
            f"row(s) {', '.join(without)}: their records predate that logging (`true_class_prob`); runs made since record it.")
    if waiting:
        out.notes.append(f"Fig. 1b (the paper's four curves) waits for runs of: {', '.join(waiting)} "
                         "(records made before the `true_class_prob` logging lack it).")
    return out


def _fig5(store, spec, profile, dataset, records) -> FigureSet:
    out = FigureSet()
    waiting = []
    for row in spec.runnable_rows():
        _, fasa = _row_method(spec, row, profile, dataset)
        if fasa is None or fasa.get("adaptive", True) is False or fasa.get("adapt_by", "group") != "group":
            continue  # no FASA, static sampling or class-wise adaptation: no groups to show
        mine = sorted((r for r in records if r["row"] == row.name), key=lambda r: r["seed"])
        if not mine:
            continue
        record = next((r for r in mine if r.get("class_means")), None)
        if record is None:
            waiting.append(row.name)
            continue
        path = store.figures_dir / f"fig5_{_tag(spec, profile, dataset)}_{row.name}.png"
        title = f"{spec.name} · {row.label} · seed {record['seed']} · {profile}, {dataset}"
        if plot_class_embedding(record["class_means"], record.get("config", {}).get("fasa") or {},
                                path, title) is not None:
            out.paths.append(path)
    if waiting:
        out.notes.append(
            "Fig. 5 (t-SNE of the final class means by group) waits for group-wise FASA runs that log "
            f"their final class means (`class_means`): row(s) {', '.join(waiting)} have records without them.")
    return out


# -- Fig. 3a / 3b: sampling probabilities -------------------------------------------------


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
    ax.set_title(f"{_fit(title)}\n(mean ± std over {len(states)} seed(s))", fontsize=9)
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
    fig.suptitle(_fit(f"{title} (per class, mean over {len(states)} seed(s))"), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


# -- Fig. 4: classifier weight norms ---------------------------------------------------------


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


def normalised_classifier(by_seed: dict[int, dict]) -> str | None:
    """The classifier's type when it normalises its weights at forward time (NormedLinear,
    Seesaw's cosine classifier), else None."""
    kinds = {data.get("classifier") for data in by_seed.values()}
    return next((k for k in sorted(filter(None, kinds)) if "normed" in k.lower() or "cosine" in k.lower()), None)


def plot_classifier_norms(norms: dict[str, dict[int, dict]], out: Path, title: str) -> Path:
    """Fig. 4: classifier weight norm per class, classes sorted by training frequency."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.add_subplot()
    order = None
    normed = []
    for label, by_seed in norms.items():
        stats = norms_frame(by_seed)
        if order is None:
            order = stats["class_id"].tolist()  # one class order for every curve
        stats = stats.set_index("class_id").loc[[c for c in order if c in set(stats["class_id"])]]
        x = np.arange(len(stats))
        std = stats["std"].fillna(0.0).to_numpy()
        kind = normalised_classifier(by_seed)
        if kind:
            normed.append(kind)
        marker = " †" if kind else ""
        ax.plot(x, stats["mean"], label=f"{label}{marker} ({len(by_seed)} seed(s))", linewidth=1.2)
        ax.fill_between(x, stats["mean"] - std, stats["mean"] + std, alpha=0.2)
    ax.set_xlabel("classes sorted by training instances (head → tail)")
    ax.set_ylabel("classifier weight L2 norm")
    ax.set_title(_fit(title), fontsize=9)
    ax.legend(fontsize=8)
    if normed:
        fig.text(0.01, 0.01, f"† {normed[0]}: a normalised (cosine) classifier, its logits use W_c / ‖W_c‖;\n"
                 "   its curve is the raw parameter norm ‖W_c‖, which the logits do not see.", fontsize=7)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    else:
        fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


# -- Fig. 1b: mean probability of the true class ---------------------------------------------


def true_class_probability_frame(curves: dict[str, dict[int, dict]]) -> pd.DataFrame:
    """Per (curve, class): training count, r/c/f group, mean and std over seeds of the mean
    true-class probability (NaN where no validation RoI matched the class), matched RoIs
    summed over seeds, and `rank`, the class's place from most to least trained (one order
    for every curve)."""
    parts = []
    for label, by_seed in curves.items():
        for seed, data in by_seed.items():
            parts.append(pd.DataFrame({
                "curve": label, "seed": seed, "class_id": data["class_ids"],
                "name": data.get("names") or [str(c) for c in data["class_ids"]],
                "frequency": data["frequency"],
                "count": data.get("train_instance_count") or [0] * len(data["class_ids"]),
                "prob": np.asarray([np.nan if p is None else p for p in data["mean_prob"]], dtype=float),
                "rois": data["rois"],
            }))
    columns = ["curve", "class_id", "name", "frequency", "count", "rank", "mean", "std", "seeds", "rois"]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    stats = frame.groupby(["curve", "class_id"], sort=False).agg(
        name=("name", "first"), frequency=("frequency", "first"), count=("count", "first"),
        mean=("prob", "mean"), std=("prob", "std"), seeds=("prob", "count"), rois=("rois", "sum"),
    ).reset_index()
    classes = stats.drop_duplicates("class_id").sort_values(["count", "class_id"], ascending=[False, True])
    stats["rank"] = stats["class_id"].map({c: i for i, c in enumerate(classes["class_id"])})
    stats["order"] = stats["curve"].map({c: i for i, c in enumerate(curves)})
    return stats.sort_values(["order", "rank"]).reset_index(drop=True)[columns]


def plot_true_class_probability(curves: dict[str, dict[int, dict]], out: Path, title: str) -> Path:
    """Fig. 1b: per class (head to tail, marked r/c/f), the mean probability the detector gives
    the true class, one curve per row; the legend gives each curve's per-group average."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    frame = true_class_probability_frame(curves)
    fig = Figure(figsize=(8, 4.6), dpi=110)
    ax, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [14, 1], "hspace": 0.05})
    for label in curves:
        part = frame[frame["curve"] == label]
        means = part.groupby("frequency")["mean"].mean()
        summary = " · ".join(f"{g} {means[g]:.2f}" for g, _ in GROUPS if g in means and not np.isnan(means[g]))
        seeds = int(part["seeds"].max()) if len(part) else 0
        ax.plot(part["rank"], part["mean"], marker="o", markersize=3, linewidth=1.0,
                label=f"{label} ({seeds} seed(s); mean r/c/f: {summary})")
    ax.set_ylabel("mean probability of the true class")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{_fit(title)}\nvalidation RoIs matched to a ground truth at IoU ≥ 0.5", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    classes = frame.drop_duplicates("class_id").sort_values("rank")
    colours = [GROUP_COLOURS.get(g, "#7f7f7f") for g in classes["frequency"]]
    strip.bar(classes["rank"], 1.0, width=1.0, color=colours, linewidth=0)
    strip.set_yticks([])
    strip.set_ylabel("r/c/f", rotation=0, ha="right", va="center", fontsize=8)
    strip.set_xlabel("classes sorted by training instances (head → tail); strip: LVIS frequency group")
    strip.legend(handles=[Patch(color=GROUP_COLOURS[g], label=name) for g, name in GROUPS],
                 fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -2.4), frameon=False)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.19)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


# -- Fig. 5: t-SNE of the final class means ------------------------------------------------


def clustering_label(entry: dict, fasa: dict) -> str:
    """Which clustering formed the groups, as the figure names it."""
    method = entry.get("clustering") or fasa.get("clustering", "dbscan")
    name = CLUSTERING_NAMES.get(method, str(method))
    if method == "affinity":
        name += f", fed {'distances' if fasa.get('affinity_input', 'distance') == 'distance' else 'similarities'}"
        name += f" ({entry.get('distance', 'sq_euclidean').replace('_', ' ')})"
    elif method == "dbscan" and entry.get("distance") not in (None, "fisher"):
        name = f"DBSCAN on the {entry['distance'].replace('_', ' ')} distance"
    return name


def class_embedding_frame(entry: dict, seed: int = 0) -> pd.DataFrame:
    """Per seen class: id, name, final group, group size, and its 2-D t-SNE position
    (sklearn, PCA initialisation, fixed random state) from the recorded class means."""
    from sklearn.manifold import TSNE

    coords = decode_class_means(entry)
    n = coords.shape[0]
    groups = np.asarray(entry["groups"], dtype=int)
    names = entry.get("names") or [str(c) for c in entry["class_ids"]]
    if n >= 4:
        perplexity = float(min(30.0, (n - 1) / 3))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(coords)
    else:  # too few classes for t-SNE: their leading components
        xy = np.zeros((n, 2))
        xy[:, : min(2, coords.shape[1])] = coords[:, :2]
    sizes = pd.Series(groups).map(pd.Series(groups).value_counts()).to_numpy()
    return pd.DataFrame({"class_id": entry["class_ids"], "name": names, "group": groups,
                         "group_size": sizes, "x": xy[:, 0], "y": xy[:, 1]})


def annotated_classes(frame: pd.DataFrame, groups: int = 6, per_group: int = 2) -> pd.DataFrame:
    """A few classes to name: those nearest the centre of each of the largest groups."""
    multi = frame[frame["group_size"] > 1]
    largest = multi.groupby("group").size().sort_values(ascending=False, kind="stable").index[:groups]
    picked = []
    for group in largest:
        part = multi[multi["group"] == group]
        centre = part[["x", "y"]].mean()
        distance = ((part[["x", "y"]] - centre) ** 2).sum(axis=1)
        picked.append(part.loc[distance.sort_values(kind="stable").index[:per_group]])
    return pd.concat(picked) if picked else frame.iloc[:0]


def plot_class_embedding(entry: dict, fasa: dict, out: Path, title: str) -> Path | None:
    """Fig. 5: the classes' final means in 2-D (t-SNE), coloured by their final group; groups
    of one class in grey; a few class names written beside their points."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not entry.get("class_ids"):
        return None
    frame = class_embedding_frame(entry)
    fig = Figure(figsize=(7.5, 6), dpi=110)
    ax = fig.add_subplot()
    singles = frame[frame["group_size"] == 1]
    ax.scatter(singles["x"], singles["y"], s=14, c="#b0b0b0", marker="o", linewidths=0)
    multi = frame[frame["group_size"] > 1]
    order = multi.groupby("group").size().sort_values(ascending=False, kind="stable").index
    palette = colormaps["tab20"]
    markers = "osD^v<>ph*"
    handles = []
    for i, group in enumerate(order):
        part = multi[multi["group"] == group]
        # tab20's strong shades first, then its light ones: neighbouring ids stay distinct.
        colour, marker = palette((2 * i) % 20 + (i // 10) % 2), markers[(i // 20) % len(markers)]
        ax.scatter(part["x"], part["y"], s=30, color=colour, marker=marker, edgecolors="black", linewidths=0.3)
        if i < 12:
            handles.append(Line2D([], [], color=colour, marker=marker, linestyle="", markeredgecolor="black",
                                  markeredgewidth=0.3, label=f"group {group} ({len(part)} classes)"))
    if len(order) > 12:
        handles.append(Line2D([], [], linestyle="", label=f"... {len(order) - 12} more groups"))
    if len(singles):
        handles.append(Line2D([], [], color="#b0b0b0", marker="o", linestyle="",
                              label=f"{len(singles)} one-class groups"))
    for _, row in annotated_classes(frame).iterrows():
        ax.annotate(row["name"], (row["x"], row["y"]), xytext=(4, 3), textcoords="offset points", fontsize=7)
    explained = entry.get("explained_variance")
    source = (f"t-SNE of the final class means ({entry.get('feat_dim')}-d, via their first "
              f"{entry.get('components')} principal components"
              + (f", {explained:.0%} of the variance)" if explained is not None else ")"))
    ax.set_title(f"{_fit(title)}\n{source}\ngroups: {clustering_label(entry, fasa)}", fontsize=8)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


# -- Fig. 1c: APr per backbone and FASA's training-time overhead ---------------------------


def _spec_named(store: ResultStore, name: str) -> ExperimentSpec | None:
    snapshots = store.spec_snapshots()
    if name in snapshots:
        return ExperimentSpec.model_validate(snapshots[name])
    try:
        return load_spec(name)
    except FasaError:
        return None


def overhead_frame(store: ResultStore) -> pd.DataFrame:
    """One row per (source spec, profile) of Fig. 1c: APr (%) mean / std / seeds without and
    with FASA, mean training step time of each, FASA's overhead in %, and `complete` (both
    rows have runs). Step times are the runs' `train_s_per_iter`, as in Table 12."""
    rows = []
    for name, base_row, fasa_row in FIG1C_SOURCES:
        spec = _spec_named(store, name)
        if spec is None:
            continue
        for profile in spec.profiles:
            dataset = spec.dataset[profile]
            runs = store.frame(spec=name, profile=profile, dataset=dataset)
            entry: dict[str, Any] = {"spec": name, "profile": profile, "dataset": dataset,
                                     "base_row": base_row, "fasa_row": fasa_row}
            for prefix, row in (("base", base_row), ("fasa", fasa_row)):
                mine = runs[runs["row"] == row] if not runs.empty else runs
                apr = mine["APr"].dropna() * display_scale("APr") if "APr" in mine else pd.Series(dtype=float)
                step = mine["train_s_per_iter"].dropna() if "train_s_per_iter" in mine else pd.Series(dtype=float)
                entry[f"APr_{prefix}"] = apr.mean() if len(apr) else np.nan
                entry[f"APr_{prefix}_std"] = apr.std(ddof=1) if len(apr) > 1 else np.nan
                entry[f"seeds_{prefix}"] = len(apr)
                entry[f"s_per_iter_{prefix}"] = step.mean() if len(step) else np.nan
            entry["overhead_pct"] = 100.0 * (entry["s_per_iter_fasa"] / entry["s_per_iter_base"] - 1.0)
            entry["complete"] = bool(entry["seeds_base"] and entry["seeds_fasa"])
            rows.append(entry)
    return pd.DataFrame(rows)


def cross_table_figures(store: ResultStore) -> FigureSet:
    """Fig. 1c, one per dataset with at least one complete backbone; notes name the runs the
    rest waits for."""
    out = FigureSet()
    frame = overhead_frame(store)
    if frame.empty:
        return out
    for dataset, part in frame.groupby("dataset", sort=True):
        done = part[part["complete"]]
        if not done.empty:
            path = store.figures_dir / f"fig1c_{dataset}.png"
            plot_backbone_overhead(done, path, f"FASA across backbones · {dataset}")
            out.paths.append(path)
    waiting = frame[~frame["complete"]]
    if len(waiting):
        parts = []
        for _, entry in waiting.iterrows():
            missing = [r for r, n in ((entry["base_row"], entry["seeds_base"]), (entry["fasa_row"], entry["seeds_fasa"]))
                       if not n]
            parts.append(f"{entry['spec']} rows {', '.join(missing)} ({entry['profile']}, {entry['dataset']})")
        out.notes.append("Fig. 1c (APr per backbone with and without FASA, and FASA's training-time overhead) "
                         f"waits for runs of: {'; '.join(parts)}.")
    return out


def plot_backbone_overhead(frame: pd.DataFrame, out: Path, title: str) -> Path:
    """Fig. 1c: APr without / with FASA per backbone (profile), and FASA's step-time overhead."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 3.8), dpi=110)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    labels = [f"{p}\n({s})" for p, s in zip(frame["profile"], frame["spec"])]
    x = np.arange(len(frame))
    width = 0.38
    for offset, prefix, name, colour in ((-width / 2, "base", "without FASA", "#7f7f7f"),
                                         (width / 2, "fasa", "with FASA", "#2ca02c")):
        values = frame[f"APr_{prefix}"].to_numpy(dtype=float)
        errors = frame[f"APr_{prefix}_std"].fillna(0.0).to_numpy(dtype=float)
        bars = left.bar(x + offset, values, width, yerr=errors, capsize=3, color=colour, label=name)
        left.bar_label(bars, fmt="%.1f", fontsize=7, label_type="center", color="white")
    left.set_xlim(-0.75, len(frame) - 0.25)  # one backbone keeps the bars' width
    left.set_xticks(x, labels, fontsize=7, rotation=20, ha="right")
    left.set_ylabel("mask APr (%)")
    left.set_title("rare-class AP (mean ± std over seeds)", fontsize=9)
    left.legend(fontsize=7)
    overhead = frame["overhead_pct"].to_numpy(dtype=float)
    bars = right.bar(x, np.nan_to_num(overhead), 0.5, color="#1f77b4")
    right.bar_label(bars, labels=[("n/a" if np.isnan(v) else f"{v:+.1f} %") for v in overhead], fontsize=7, padding=2)
    right.axhline(0, color="black", linewidth=0.6)
    right.set_xlim(-0.75, len(frame) - 0.25)
    right.margins(y=0.15)  # room for the value labels
    right.set_xticks(x, labels, fontsize=7, rotation=20, ha="right")
    right.set_ylabel("step time with FASA vs without (%)")
    right.set_title("FASA's training-time overhead", fontsize=9)
    fig.suptitle(_fit(title), fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
