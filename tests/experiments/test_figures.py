"""The paper's figures from fake records: each figure's data frame, the rows it picks, the
notes for figures that wait for runs, and the report that embeds them."""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from experiments_fakes import write_fake_artefacts
from fasa_cli.experiments import figures
from fasa_cli.experiments.execute import run_ablation
from fasa_cli.experiments.figures import (
    annotated_classes,
    class_embedding_frame,
    clustering_label,
    cross_table_figures,
    figures_for,
    normalised_classifier,
    overhead_frame,
    paper_fig4_rows,
    true_class_probability_frame,
)
from fasa_cli.experiments.report import write_report
from fasa_cli.experiments.spec import load_spec, spec_from_data
from fasa_cli.experiments.store import RunKey
from fasa_cli.figure_artefacts import decode_class_means, encode_components
from fasa_cli.jsonio import write_json

NUM_CLASSES = 12
FREQUENCY = ["f"] * 4 + ["c"] * 4 + ["r"] * 4
COUNTS = [400 - 30 * i for i in range(NUM_CLASSES)]


def fake_true_class_prob(with_fasa: bool, seed: int) -> dict:
    """Class k: 0.6 - 0.04 k (+0.1 for rare classes with FASA, +0.01 per seed); class 11 had no
    matched RoI."""
    probs = [0.6 - 0.04 * k + (0.1 if with_fasa and FREQUENCY[k] == "r" else 0.0) + 0.01 * seed
             for k in range(NUM_CLASSES)]
    probs[11] = None
    return {"definition": "test", "iou_thr": 0.5, "class_ids": list(range(NUM_CLASSES)),
            "names": [f"class_{k}" for k in range(NUM_CLASSES)], "frequency": FREQUENCY,
            "train_instance_count": COUNTS, "mean_prob": probs,
            "rois": [5] * 11 + [0], "gt_instances": [3] * NUM_CLASSES}


def fake_class_means(clustering: str = "dbscan") -> dict:
    """Three tight groups of three classes in 8-d, and two classes alone; class 6 unseen."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 10.0, (3, 8))
    means = np.concatenate([centres.repeat(3, axis=0) + rng.normal(0.0, 0.2, (9, 8)), rng.normal(0.0, 10.0, (2, 8))])
    seen = [k for k in range(NUM_CLASSES) if k != 6]
    return {"class_ids": seen, "names": [f"class_{k}" for k in seen],
            "groups": [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4], "clustering": clustering, "adapt_by": "group",
            "adaptive": True, "distance": "fisher" if clustering == "dbscan" else "sq_euclidean",
            "feat_dim": 8, "components": 8, "explained_variance": 1.0, **encode_components(means)}


class FigureRunner:
    """The fake backend, plus the artefacts of Figs. 1b and 5."""

    def __call__(self, config, run_dir, seed, on_progress=None):
        write_fake_artefacts(config, run_dir, seed, num_classes=NUM_CLASSES)
        write_json(run_dir / "true_class_prob.json", fake_true_class_prob(config.fasa is not None, seed))
        if config.fasa is not None:
            write_json(run_dir / "class_means.json", fake_class_means(config.fasa.clustering))
        return {"metrics": {"AP": 0.2, "APr": 0.1 + 0.02 * (config.fasa is not None)}, "wall_s": 1.0,
                "peak_mem_mb": 10.0}


def _quiet() -> Console:
    return Console(file=io.StringIO())


# -- Fig. 1b ---------------------------------------------------------------------------------


def test_true_class_probability_frame_orders_classes_head_to_tail_and_averages_seeds():
    curves = {"Baseline": {s: fake_true_class_prob(False, s) for s in (0, 1)},
              "FASA": {s: fake_true_class_prob(True, s) for s in (0, 1)}}
    frame = true_class_probability_frame(curves)
    assert list(frame["curve"].unique()) == ["Baseline", "FASA"]
    base = frame[frame["curve"] == "Baseline"].set_index("class_id")
    assert list(base.sort_values("rank").index) == list(range(NUM_CLASSES))  # most trained first
    assert base.loc[3, "mean"] == pytest.approx(0.6 - 0.12 + 0.005)  # mean of seeds 0 and 1
    assert base.loc[3, "std"] == pytest.approx(np.std([0.48, 0.49], ddof=1))
    assert base.loc[3, "frequency"] == "f" and base.loc[3, "seeds"] == 2 and base.loc[3, "rois"] == 10
    assert np.isnan(base.loc[11, "mean"]) and base.loc[11, "rois"] == 0  # no matched RoI: no value
    lift = frame[frame["curve"] == "FASA"].set_index("class_id")["mean"] - base["mean"]
    assert lift.loc[8:10].tolist() == pytest.approx([0.1] * 3) and lift.loc[0:7].tolist() == pytest.approx([0.0] * 8)


def test_true_class_probability_frame_ranks_by_training_count_not_class_id():
    data = fake_true_class_prob(False, 0)
    data["train_instance_count"] = list(reversed(COUNTS))
    frame = true_class_probability_frame({"x": {0: data}})
    assert frame.sort_values("rank")["class_id"].tolist() == list(reversed(range(NUM_CLASSES)))


# -- Fig. 4: which rows are the paper's curves ------------------------------------------------

PAPER_ROWS_SPEC = """\
table: "P"
title: Paper rows
paper_setting: test
profiles: [cpu-compact]
dataset: {cpu-compact: embedded-tiny}
metrics: [AP]
rows:
  - {name: ce, label: CE uniform, baseline: true, set: {method: baseline}}
  - {name: ce_fasa, label: CE uniform + FASA, set: {method: baseline, fasa: {}}}
  - {name: rfs, label: CE RFS, set: {method: rfs}}
  - {name: rfs_static, label: CE RFS + FA only, set: {method: rfs, fasa: {adaptive: false}}}
  - {name: rfs_fasa, label: CE RFS + FASA, set: {method: rfs, fasa: {}}}
  - {name: smote, label: SMOTE, set: {method: smote}}
  - {name: seesaw, label: Seesaw RFS, set: {method: seesaw}}
  - {name: seesaw_fasa, label: Seesaw RFS + FASA, set: {method: seesaw, fasa: {}}}
"""


def _paper_spec(text: str = PAPER_ROWS_SPEC):
    import yaml

    return spec_from_data(yaml.safe_load(text), "paper_rows")


def test_paper_fig4_rows_are_chosen_by_method_name():
    chosen = {name: (row.name if row else None) for name, row in paper_fig4_rows(_paper_spec(), "cpu-compact", None)}
    # CE prefers the RFS row (the paper's Seesaw uses RFS), and the paper's FASA over a variant.
    assert chosen == {"CE": "rfs", "CE + FASA": "rfs_fasa", "Seesaw": "seesaw", "Seesaw + FASA": "seesaw_fasa"}
    without_rfs = PAPER_ROWS_SPEC.replace("method: rfs", "method: smote")
    chosen = dict((n, r.name if r else None) for n, r in paper_fig4_rows(_paper_spec(without_rfs), "cpu-compact", None))
    assert chosen["CE"] == "ce" and chosen["CE + FASA"] == "ce_fasa"
    assert paper_fig4_rows(load_spec("table1"), "cpu-compact", None) is None  # no Seesaw: every row


def _write_record(store, spec, row: str, seed: int, **fields) -> None:
    key = RunKey(spec.name, "cpu-compact", "embedded-tiny", row, seed)
    record = {"spec": spec.name, "table": spec.table, "row": row, "seed": seed, "profile": "cpu-compact",
              "dataset": "embedded-tiny", "config": {"fasa": {}}, "metrics": {"AP": 0.2}, **fields}
    store.write_record(key, record)


def _norms(scale: float, classifier: str = "Linear") -> dict:
    return {"class_ids": list(range(NUM_CLASSES)), "names": None, "frequency": FREQUENCY,
            "train_instance_count": COUNTS, "norms": [scale * (2.0 - 0.1 * k) for k in range(NUM_CLASSES)],
            "classifier": classifier}


def test_fig4_draws_the_four_paper_curves_and_waits_for_missing_seesaw(store):
    spec = _paper_spec()
    store.save_spec(spec.model_dump(mode="json"))
    for row in ("ce", "ce_fasa", "rfs", "rfs_fasa", "smote"):
        _write_record(store, spec, row, 0, classifier_norms=_norms(1.0))
    drawn = figures_for(store, spec, "cpu-compact", "embedded-tiny")
    assert [p.name for p in drawn.paths] == ["fig4_paper_rows_cpu-compact--embedded-tiny.png"]
    note = next(n for n in drawn.notes if n.startswith("Fig. 4"))
    assert "Seesaw (row seesaw)" in note and "Seesaw + FASA (row seesaw_fasa)" in note
    curves, waiting = figures._curves(spec, "cpu-compact", "embedded-tiny",
                                      store.find(spec=spec.name), "classifier_norms")
    assert list(curves) == ["CE: CE RFS", "CE + FASA: CE RFS + FASA"] and len(waiting) == 2
    for row in ("seesaw", "seesaw_fasa"):
        _write_record(store, spec, row, 0, classifier_norms=_norms(0.5, "NormedLinear"))
    curves, waiting = figures._curves(spec, "cpu-compact", "embedded-tiny",
                                      store.find(spec=spec.name), "classifier_norms")
    assert list(curves) == ["CE: CE RFS", "CE + FASA: CE RFS + FASA", "Seesaw: Seesaw RFS",
                            "Seesaw + FASA: Seesaw RFS + FASA"] and waiting == []
    # Seesaw's cosine classifier: the figure says its curves are raw parameter norms.
    assert normalised_classifier(curves["Seesaw: Seesaw RFS"]) == "NormedLinear"
    assert normalised_classifier(curves["CE: CE RFS"]) is None
    drawn = figures_for(store, spec, "cpu-compact", "embedded-tiny")
    assert not [n for n in drawn.notes if n.startswith("Fig. 4")]


# -- Fig. 5 ----------------------------------------------------------------------------------


def test_class_means_survive_the_record_encoding():
    rng = np.random.default_rng(1)
    coords = rng.normal(0.0, 50.0, (7, 5))
    back = decode_class_means(encode_components(coords))
    assert back.shape == (7, 5)
    assert np.allclose(back, coords, atol=np.abs(coords).max() * 1e-3)  # float16 of coords / max


def test_class_embedding_frame_keeps_groups_together():
    entry = fake_class_means()
    frame = class_embedding_frame(entry)
    assert frame["class_id"].tolist() == entry["class_ids"] and frame["group"].tolist() == entry["groups"]
    assert frame.set_index("class_id").loc[7, "name"] == "class_7"
    assert frame["group_size"].tolist() == [3] * 9 + [1, 1]
    xy = frame[["x", "y"]].to_numpy()
    within = [np.linalg.norm(xy[i] - xy[j]) for g in range(3) for i in range(3 * g, 3 * g + 3)
              for j in range(3 * g, 3 * g + 3) if i < j]
    between = [np.linalg.norm(xy[i] - xy[j]) for i in range(9) for j in range(9) if i // 3 != j // 3]
    assert max(within) < min(between)  # t-SNE keeps the tight groups apart
    named = annotated_classes(frame)
    assert len(named) == 6 and set(named["group"]) == {0, 1, 2}  # two names per group, none for singles


def test_clustering_label_names_the_clustering_the_run_used():
    assert clustering_label({"clustering": "dbscan", "distance": "fisher"}, {}) == "DBSCAN on the Fisher distance (Sec. 3.2)"
    assert clustering_label({"clustering": "meanshift"}, {}) == "Mean-shift (App. D)"
    official = clustering_label({"clustering": "affinity", "distance": "sq_euclidean"}, {"affinity_input": "distance"})
    assert official == "affinity propagation (official code), fed distances (sq euclidean)"
    assert "fed similarities" in clustering_label({"clustering": "affinity"}, {"affinity_input": "similarity"})


# -- the report: Figs. 1b and 5 from records -----------------------------------------------

FIG_SPEC = """\
table: "F"
title: Figure rows
paper_setting: test
profiles: [cpu-compact]
dataset: {cpu-compact: embedded-tiny}
metrics: [AP, APr]
seeds: [0, 1]
rows:
  - {name: base, label: Baseline, baseline: true}
  - {name: fasa, label: + FASA, set: {fasa: {}}}
  - {name: meanshift, label: + FASA (Mean-shift), set: {fasa: {clustering: meanshift}}}
  - {name: static, label: + FA only, set: {fasa: {adaptive: false}}}
"""


@pytest.fixture
def fig_spec(tmp_path):
    path = tmp_path / "figs.yaml"
    path.write_text(textwrap.dedent(FIG_SPEC))
    return load_spec(path)


def test_report_draws_fig1b_and_fig5_from_the_records(fig_spec, store):
    run_ablation(fig_spec, None, None, store, FigureRunner(), _quiet())
    record = store.find(spec="figs", row="fasa", seed=0)[0]
    assert record["true_class_prob"]["mean_prob"][0] == pytest.approx(0.6)
    assert record["class_means"]["clustering"] == "dbscan"
    text = write_report(store).read_text()
    names = sorted(p.name for p in store.figures_dir.glob("fig1b_*.png")) + \
        sorted(p.name for p in store.figures_dir.glob("fig5_*.png"))
    assert names == ["fig1b_figs_cpu-compact--embedded-tiny.png",
                     "fig5_figs_cpu-compact--embedded-tiny_fasa.png",
                     "fig5_figs_cpu-compact--embedded-tiny_meanshift.png"]  # static FA forms no groups
    for name in names:
        assert f"(figures/{name})" in text and (store.figures_dir / name).stat().st_size > 10_000
    assert "Fig. 1b" not in text and "Fig. 5 " not in text  # nothing waits
    # Fig. 1b's curves: every row, each with both seeds.
    curves, _ = figures._curves(fig_spec, "cpu-compact", "embedded-tiny", store.find(spec="figs"), "true_class_prob")
    frame = true_class_probability_frame(curves)
    assert set(frame["curve"]) == {"Baseline", "+ FASA", "+ FASA (Mean-shift)", "+ FA only"}
    assert (frame.groupby("curve")["seeds"].max() == 2).all()


def test_records_without_the_new_logs_make_waiting_notes(fig_spec, store):
    from experiments_fakes import FakeRunner

    run_ablation(fig_spec, None, [0], store, FakeRunner(), _quiet())
    drawn = figures_for(store, fig_spec, "cpu-compact", "embedded-tiny")
    assert not [p for p in drawn.paths if p.name.startswith(("fig1b", "fig5"))]
    fig1b = next(n for n in drawn.notes if n.startswith("Fig. 1b"))
    assert "row(s) base, fasa, meanshift, static" in fig1b and "waits for" in fig1b
    fig5 = next(n for n in drawn.notes if n.startswith("Fig. 5"))
    assert "fasa, meanshift" in fig5 and "static" not in fig5
    assert "Figures not drawn yet:" in write_report(store).read_text()


# -- Fig. 1c -------------------------------------------------------------------------------

BACKBONE_SPEC = """\
table: "B"
title: Backbone rows
paper_setting: test
profiles: [cpu-compact, lvis-r50]
dataset: {cpu-compact: embedded-tiny, lvis-r50: lvis_v1}
base: {method: rfs}
metrics: [AP, APr]
rows:
  - {name: rfs, label: RFS, baseline: true}
  - {name: rfs_fasa, label: RFS + FASA, set: {fasa: {}}}
"""


def test_fig1c_frame_pairs_rows_per_backbone_and_measures_the_overhead(store, monkeypatch):
    import yaml

    spec = spec_from_data(yaml.safe_load(BACKBONE_SPEC), "backbones")
    store.save_spec(spec.model_dump(mode="json"))
    monkeypatch.setattr(figures, "FIG1C_SOURCES", (("backbones", "rfs", "rfs_fasa"),))
    for seed, (base_apr, fasa_apr) in enumerate(((0.10, 0.14), (0.12, 0.18))):
        for row, apr, step in (("rfs", base_apr, 1.0), ("rfs_fasa", fasa_apr, 1.05)):
            key = RunKey("backbones", "cpu-compact", "embedded-tiny", row, seed)
            store.write_record(key, {"spec": "backbones", "table": "B", "row": row, "seed": seed,
                                     "profile": "cpu-compact", "dataset": "embedded-tiny",
                                     "metrics": {"APr": apr, "train_s_per_iter": step + 0.1 * seed}})
    frame = overhead_frame(store).set_index("profile")
    compact = frame.loc["cpu-compact"]
    assert compact["complete"] and compact["seeds_base"] == 2 and compact["seeds_fasa"] == 2
    assert compact["APr_base"] == pytest.approx(11.0) and compact["APr_fasa"] == pytest.approx(16.0)
    assert compact["APr_fasa_std"] == pytest.approx(np.std([14.0, 18.0], ddof=1))
    assert compact["overhead_pct"] == pytest.approx(100 * (1.10 / 1.05 - 1))
    assert not frame.loc["lvis-r50", "complete"]
    drawn = cross_table_figures(store)
    assert [p.name for p in drawn.paths] == ["fig1c_embedded-tiny.png"]
    assert drawn.notes == ["Fig. 1c (APr per backbone with and without FASA, and FASA's training-time overhead) "
                           "waits for runs of: backbones rows rfs, rfs_fasa (lvis-r50, lvis_v1)."]
    assert "## Figures across tables" in write_report(store).read_text()


def test_fig1c_sources_name_rows_the_specs_have():
    for name, base, fasa in figures.FIG1C_SOURCES:
        spec = load_spec(name)
        assert spec.row(base).set.get("fasa") is None and spec.row(fasa).set.get("fasa") == {}


def test_fig1c_with_no_runs_says_what_it_waits_for(store, monkeypatch):
    import yaml

    spec = spec_from_data(yaml.safe_load(BACKBONE_SPEC), "backbones")
    store.save_spec(spec.model_dump(mode="json"))
    monkeypatch.setattr(figures, "FIG1C_SOURCES", (("backbones", "rfs", "rfs_fasa"),))
    drawn = cross_table_figures(store)
    assert drawn.paths == [] and "backbones rows rfs, rfs_fasa (cpu-compact, embedded-tiny)" in drawn.notes[0]
    assert isinstance(overhead_frame(store), pd.DataFrame)


def test_long_titles_are_broken_into_lines_that_fit():
    long = "table5_cascade_r101 · Cascade Mask R-CNN, Softmax CE, RFS + FASA · cpu-compact-cascade, embedded-small"
    fitted = figures._fit(f"{long}\n(mean ± std over 2 seed(s))")
    lines = fitted.split("\n")
    assert all(len(line) <= 72 for line in lines)
    assert lines[-1] == "(mean ± std over 2 seed(s))"
    assert " ".join(lines[:-1]) == long  # nothing lost, words kept whole
    assert figures._fit("table1 · cpu-compact, embedded-small") == "table1 · cpu-compact, embedded-small"
