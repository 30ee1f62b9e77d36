"""The embedded dataset: layout, LVIS validity, long tail, exact masks, determinism."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fasa_cli.data.embedded import default_root
from fasa_cli.data import annotation_mask, check_dataset, class_groups, ensure_embedded, load_lvis_json
from fasa_cli.data import embedded
from fasa_cli.data.lvis_format import image_relpath
from fasa_cli.data.shapes import DrawParams, _background, choose_classes, draw_image
from fasa_cli.errors import FasaError


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return ensure_embedded("tiny", 0, progress=False)


def test_layout_follows_lvis_and_mmdet(tiny, tiny_data_dir):
    assert tiny.root == Path(tiny_data_dir) / f"tiny-seed0-v{embedded.GENERATOR_VERSION}"
    for split, folder in (("train", tiny.train_images), ("val", tiny.val_images)):
        data = load_lvis_json(tiny.root / "annotations" / f"lvis_v1_{split}.json")
        first = data["images"][0]
        assert first["coco_url"] == "http://images.cocodataset.org/" + first["file_name"]
        # mmdet's LVISV1Dataset strips the COCO host from coco_url and joins with data_root.
        assert (tiny.data_prefix / image_relpath(first)).parent == folder
        assert len(list(folder.glob("*.png"))) == len(data["images"])
    assert check_dataset(tiny.train_json, tiny.data_prefix) == []
    assert check_dataset(tiny.val_json, tiny.data_prefix) == []


def test_long_tail_has_all_three_groups(tiny):
    data = load_lvis_json(tiny.train_json)
    groups = class_groups(data)
    low, high = data["info"]["frequency_thresholds"]["common"]
    assert set(groups["frequency"]) == {"r", "c", "f"}
    # Letters follow the stored thresholds and the realized training image counts.
    expected = np.where(groups["image_count"] < low, "r", np.where(groups["image_count"] < high, "c", "f"))
    assert groups["frequency"].tolist() == expected.tolist()
    assert (groups["image_count"] == groups["train_image_count"]).all()
    assert groups["image_count"].max() >= 4 * groups["image_count"].min()


def test_val_split_shares_categories_and_covers_classes(tiny):
    train, val = load_lvis_json(tiny.train_json), load_lvis_json(tiny.val_json)
    assert train["categories"] == val["categories"]
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    present = class_groups(val)["image_count"] > 0
    assert present.mean() >= 0.8
    assert sorted(val["info"]["categories_absent_from_split"]) == class_groups(val)["id"][~present].tolist()


def test_negative_categories_are_verifiably_absent(tiny):
    data = load_lvis_json(tiny.train_json)
    present = {(a["image_id"], a["category_id"]) for a in data["annotations"]}
    negatives = [(img["id"], c) for img in data["images"] for c in img["neg_category_ids"]]
    assert negatives and not present & set(negatives)


def test_stored_masks_match_boxes_and_areas(tiny):
    data = load_lvis_json(tiny.train_json)
    sizes = {i["id"]: (i["height"], i["width"]) for i in data["images"]}
    kinds = set()
    for ann in data["annotations"]:
        mask = annotation_mask(ann["segmentation"], *sizes[ann["image_id"]])
        ys, xs = np.nonzero(mask)
        assert ann["area"] == mask.sum() > 0
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        kinds.add(type(ann["segmentation"]))
    assert list in kinds  # fully visible objects keep their exact polygon


def test_masks_are_exactly_the_drawn_pixels():
    # Same rng stream: draw_image paints objects over the background it starts from, so
    # with noise off the changed pixels are exactly the union of the visible masks.
    params = DrawParams(96, (6.0, 22.0), 1.0, 12, (2, 3), noise_sigma=0.0)
    classes = choose_classes(np.random.default_rng(1), 12, (4, 3, 2))
    occluded = 0
    for seed in range(6):
        background = np.clip(np.rint(_background(np.random.default_rng(seed), params)), 0, 255)
        image, instances = draw_image(np.random.default_rng(seed), np.arange(0, 12, 2), classes, params)
        masks = np.stack([annotation_mask(i["segmentation"], 96, 96) for i in instances])
        assert masks.sum(0).max() == 1  # visible parts never overlap
        changed = (image != background).any(-1)
        assert np.array_equal(changed, masks.any(0))
        occluded += sum(isinstance(i["segmentation"], dict) for i in instances)
    assert occluded > 0  # the case with occlusion (RLE of the visible part) was exercised


def test_same_preset_and_seed_give_identical_files(tiny, tmp_path):
    again = ensure_embedded("tiny", 0, root=tmp_path / "again", progress=False)
    other = ensure_embedded("tiny", 1, root=tmp_path / "other", progress=False)
    assert again.train_json.read_bytes() == tiny.train_json.read_bytes()
    assert again.val_json.read_bytes() == tiny.val_json.read_bytes()
    for png in sorted(tiny.train_images.glob("*.png"))[:10]:
        assert (again.train_images / png.name).read_bytes() == png.read_bytes()
    assert other.train_json.read_bytes() != tiny.train_json.read_bytes()


def test_second_call_finds_the_data_at_once(tiny):
    stamp = tiny.train_json.stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_embedded("tiny", 0, progress=False) == tiny
    assert time.perf_counter() - start < 0.5
    assert tiny.train_json.stat().st_mtime_ns == stamp


def test_empty_folder_is_generated_into(tmp_path):
    (tmp_path / "empty").mkdir()
    paths = ensure_embedded("tiny", 0, root=tmp_path / "empty", progress=False)
    assert paths.train_json.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def fail(spec, seed, out, progress):
        (out / "annotations").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "generate", fail)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded("tiny", 0, root=tmp_path / "ds", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_not_mistaken_for_the_dataset(tiny, tmp_path):
    with pytest.raises(FasaError, match="not the embedded dataset 'tiny' seed 3"):
        ensure_embedded("tiny", 3, root=tiny.root, progress=False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(FasaError, match="delete that folder"):
        ensure_embedded("tiny", 0, root=tmp_path / "x", progress=False)
    with pytest.raises(FasaError, match="unknown embedded preset 'huge'"):
        ensure_embedded("huge", 0, progress=False)


def test_default_root_uses_env_then_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("FASA_DATA_DIR", str(tmp_path))
    assert embedded.default_root("small", 2) == tmp_path / f"small-seed2-v{embedded.GENERATOR_VERSION}"
    monkeypatch.delenv("FASA_DATA_DIR")
    repo = embedded.repo_root()
    assert (repo / "pyproject.toml").is_file()
    assert embedded.default_root("small", 2) == repo / "data" / "generated" / f"small-seed2-v{embedded.GENERATOR_VERSION}"


@pytest.mark.parametrize("name", sorted(embedded.PRESETS))
def test_every_preset_targets_a_real_rare_common_and_frequent_group(name):
    spec = embedded.PRESETS[name]
    targets = embedded._class_targets(spec)
    rare_thr, common_thr = spec.thresholds
    groups = np.searchsorted([rare_thr, common_thr], targets, side="right")
    shares = np.bincount(groups, minlength=3) / len(targets)
    assert (shares > 0.15).all(), shares  # LVIS v1: 28% / 38% / 34%
    assert targets.min() >= 2 and rare_thr <= 12  # a handful of images per rare class
    assert spec.num_classes <= len(choose_classes(np.random.default_rng(0), spec.num_classes, spec.vocab))


def test_info_records_generator_parameters(tiny):
    info = json.loads(tiny.train_json.read_text())["info"]
    assert info["preset"] == "tiny" and info["seed"] == 0 and info["split"] == "train"
    assert info["generator"]["num_classes"] == 10
    assert info["generator"]["draw"]["size"] == 64


def test_mmdet_lvis_v1_dataset_reads_it_unchanged(tiny):
    pytest.importorskip("mmdet")
    pytest.importorskip("mmcv._ext")
    from mmdet.datasets import LVISV1Dataset
    from mmdet.utils import register_all_modules

    register_all_modules()
    data = load_lvis_json(tiny.train_json)
    dataset = LVISV1Dataset(
        data_root=str(tiny.data_prefix), ann_file="annotations/lvis_v1_train.json", data_prefix=dict(img=""),
        metainfo=dict(classes=tuple(c["name"] for c in data["categories"])),
        pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
                  dict(type="PackDetInputs")])
    assert len(dataset) == len(data["images"])
    for i in range(len(dataset)):
        sample = dataset[i]["data_samples"]
        gt = sample.gt_instances
        assert len(sample.ignored_instances) == 0  # polygons and RLE masks are both accepted
        masks, boxes = gt.masks.to_ndarray(), gt.bboxes.numpy()
        for mask, box in zip(masks, boxes):
            ys, xs = np.nonzero(mask)
            assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box)
    assert any(isinstance(a["segmentation"], dict) for a in data["annotations"])  # RLE exercised
