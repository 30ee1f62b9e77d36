"""COCO-LT: the embedded stand-in (80 classes, COCO format, scaled bins) and the coco_lt
resolver's one-line errors for missing or corrupt files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fasa_cli.data.coco_lt_embedded import COCO_LT_BIN_CLASSES, PRESETS, bin_edges, ensure_coco_lt_embedded
from fasa_cli.data.lvis_format import check_dataset
from fasa_cli.data.real import COCO_LT_BIN_EDGES, coco_lt_bins
from fasa_cli.errors import FasaError


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco-lt") / "tiny"
    return ensure_coco_lt_embedded("tiny", seed=0, root=root, progress=False)


def test_bin_edges_split_distinct_counts_like_coco_lt():
    counts = np.random.default_rng(0).permutation(np.arange(1, 81) * 3)  # 80 distinct counts
    edges = bin_edges(counts)
    bins = np.searchsorted(edges, counts, side="right")
    assert np.bincount(bins, minlength=4).tolist() == list(COCO_LT_BIN_CLASSES)
    # Ties cannot be split: the edges move to the nearest achievable share, still increasing.
    tied = np.r_[np.ones(30, int), np.full(50, 7)]
    assert bin_edges(tied)[0] == 2 and list(bin_edges(tied)) == sorted(set(bin_edges(tied)))


def test_stand_in_is_coco_format_with_80_classes_and_scaled_bins(stand_in):
    train, val = json.loads(stand_in.train_json.read_text()), json.loads(stand_in.val_json.read_text())
    assert len(train["categories"]) == 80 == PRESETS["tiny"].num_classes
    assert train["categories"] == val["categories"]
    # COCO layout: file_name in the split's folder, coco_url like COCO's; no LVIS fields.
    image = train["images"][0]
    assert (stand_in.root / "train2017" / image["file_name"]).is_file()
    assert image["coco_url"].endswith(f"train2017/{image['file_name']}")
    assert "neg_category_ids" not in image and "frequency" not in train["categories"][0]
    assert all(a["iscrowd"] == 0 for a in train["annotations"])
    assert check_dataset(stand_in.train_json, stand_in.root, fmt="coco") == []
    assert check_dataset(stand_in.val_json, stand_in.root, fmt="coco") == []
    edges = tuple(train["info"]["coco_lt_bin_edges"])
    assert edges != COCO_LT_BIN_EDGES and list(edges) == sorted(set(edges))
    bins = coco_lt_bins(stand_in.train_json)  # reads the stored edges
    counts = np.bincount([a["category_id"] for a in train["annotations"]], minlength=81)[1:]
    assert (bins.to_numpy() == np.where(counts > 0, np.searchsorted(edges, counts, side="right"), -1)).all()
    # A long tail across all four bins, frequent classes in the last, and every class in val.
    assert set(bins) >= {0, 1, 2, 3}
    assert counts[bins.to_numpy() == 3].min() > counts[bins.to_numpy() == 0].max()
    assert len({a["category_id"] for a in val["annotations"]}) >= 78


def test_stand_in_is_deterministic_and_guarded(stand_in, tmp_path):
    again = ensure_coco_lt_embedded("tiny", seed=0, root=tmp_path / "again", progress=False)
    assert again.train_json.read_bytes() == stand_in.train_json.read_bytes()
    with pytest.raises(FasaError, match="not the embedded COCO-LT stand-in"):
        ensure_coco_lt_embedded("small", seed=0, root=stand_in.root, progress=False)
    with pytest.raises(FasaError, match="unknown COCO-LT stand-in preset"):
        ensure_coco_lt_embedded("huge", progress=False)


def test_real_coco_lt_bins_keep_coco_lt_edges():
    doc = {"categories": [{"id": i} for i in (1, 2, 3, 4, 5)],
           "annotations": [{"category_id": c} for c, n in ((1, 19), (2, 20), (3, 399), (4, 8000)) for _ in range(n)]}
    assert coco_lt_bins(doc).tolist() == [0, 1, 1, 3, -1]
    with pytest.raises(FasaError, match="coco_lt_bin_edges"):
        coco_lt_bins({**doc, "info": {"coco_lt_bin_edges": [5, 3, 9]}})


def test_resolver_gives_coco_facts_for_the_stand_in(tmp_path, monkeypatch):
    from fasa_cli.backend.datasets import resolve_dataset

    monkeypatch.setenv("FASA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FASA_CACHE_DIR", str(tmp_path / "cache"))
    data = resolve_dataset("embedded-coco-lt-tiny")
    assert data.format == "coco" and (data.train_prefix, data.val_prefix) == ("train2017/", "val2017/")
    assert len(data.class_names) == 80 and sum(data.instance_counts) > 0
    ids = sorted(i for ids in data.bins.values() for i in ids)
    assert list(data.bins) == ["AP1", "AP2", "AP3", "AP4"] and len(ids) == len(set(ids)) <= 80
    # Logging groups: AP1 -> r, AP2 -> c, AP3 and AP4 -> f.
    assert {data.frequency[i - 1] for i in data.bins["AP4"]} == {"f"}
    assert {data.frequency[i - 1] for i in data.bins["AP1"]} == {"r"}
    # Image counts and annotated images: what RFS's and EQL's frequencies are taken over.
    train = json.loads((data.root / data.train_ann).read_text())
    assert data.train_images == len({a["image_id"] for a in train["annotations"]})
    first = train["categories"][0]["id"]
    assert data.image_counts[0] == len({a["image_id"] for a in train["annotations"] if a["category_id"] == first})
    assert all(0 < i <= n for i, n in zip(data.image_counts, data.instance_counts) if n)


def _coco_root(tmp_path):
    root = tmp_path / "coco"
    for folder in ("annotations", "train2017", "val2017"):
        (root / folder).mkdir(parents=True)
    return root


def test_coco_lt_errors_are_one_line(tmp_path, monkeypatch):
    from fasa_cli.backend.datasets import resolve_dataset

    monkeypatch.setenv("FASA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASA_COCO_LT_TRAIN", raising=False)
    monkeypatch.delenv("FASA_COCO_ROOT", raising=False)
    with pytest.raises(FasaError, match="FASA_COCO_LT_TRAIN"):
        resolve_dataset("coco_lt")
    root = _coco_root(tmp_path)
    monkeypatch.setenv("FASA_COCO_ROOT", str(root))
    monkeypatch.setenv("FASA_COCO_LT_TRAIN", str(tmp_path / "missing.json"))
    with pytest.raises(FasaError, match="missing.json does not exist"):
        resolve_dataset("coco_lt")
    train = tmp_path / "lt.json"
    train.write_text('{"images": [')  # truncated download
    (root / "annotations" / "instances_val2017.json").write_text("{}")
    monkeypatch.setenv("FASA_COCO_LT_TRAIN", str(train))
    with pytest.raises(FasaError, match="not valid JSON") as err:
        resolve_dataset("coco_lt")
    assert "\n" not in err.value.line()
    monkeypatch.setenv("FASA_COCO_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(FasaError, match="COCO root"):
        resolve_dataset("coco_lt")
