"""Real-data preparers on small fake files written in the real formats."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from fasa_cli.data.embedded import default_root
from fasa_cli.data.real import (
    coco_lt_bins,
    coco_lt_paths,
    cifar_lt_counts,
    lvis_v1_paths,
    make_cifar100_lt,
)
from fasa_cli.errors import FasaError

PER_CLASS = 20  # the fake CIFAR keeps 20 images per class (the real one has 500)


def _write_cifar(folder, per_class=PER_CLASS, classes=100):
    """CIFAR-100 python pickles with the real keys; each image encodes its index and class."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", per_class), ("test", 3)):
        labels = rng.permutation(np.repeat(np.arange(classes), n))
        data = np.zeros((len(labels), 3072), np.uint8)
        data[:, :1024] = labels[:, None]          # red plane = class
        data[:, 1024:2048] = 200                  # green plane
        data[:, 2048] = np.arange(len(labels)) % 256  # first blue pixel = index
        doc = {b"filenames": [b"x.png"] * len(labels), b"batch_label": b"fake", b"fine_labels": labels.tolist(),
               b"coarse_labels": (labels // 5).tolist(), b"data": data}
        (folder / name).write_bytes(pickle.dumps(doc))
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(classes)], b"coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(meta))


def test_ldam_profile_gives_10847_images_at_ratio_100():
    counts = cifar_lt_counts(100)
    assert counts.sum() == 10847 and counts[0] == 500 and counts[-1] == 5
    assert (np.diff(counts) <= 0).all()


def test_cifar100_lt_from_pickles(tmp_path):
    _write_cifar(tmp_path / "cifar-100-python")
    lt = make_cifar100_lt(tmp_path, imbalance_ratio=10, seed=0)  # parent folder is accepted too
    expected = cifar_lt_counts(10, PER_CLASS)
    assert np.array_equal(lt.class_counts, expected)
    assert np.array_equal(np.bincount(lt.train_labels, minlength=100), expected)
    assert lt.train_images.shape == (expected.sum(), 32, 32, 3) and lt.train_images.dtype == np.uint8
    # HWC layout: the red plane (channel 0) holds the class, green is 200 everywhere.
    assert np.array_equal(lt.train_images[:, 5, 7, 0], lt.train_labels)
    assert (lt.train_images[..., 1] == 200).all()
    assert lt.test_images.shape == (300, 32, 32, 3) and lt.class_names[3] == "class3"
    # The subset is seeded: same seed, same images; another seed, another subset.
    again = make_cifar100_lt(tmp_path / "cifar-100-python", 10, seed=0)
    other = make_cifar100_lt(tmp_path / "cifar-100-python", 10, seed=1)
    assert np.array_equal(again.train_images, lt.train_images)
    assert not np.array_equal(other.train_images[:, 0, 0, 2], lt.train_images[:, 0, 0, 2])


def test_cifar_bad_input(tmp_path):
    with pytest.raises(FasaError, match="does not exist"):
        make_cifar100_lt(tmp_path / "missing")
    _write_cifar(tmp_path / "c")
    with pytest.raises(FasaError, match="imbalance ratio"):
        make_cifar100_lt(tmp_path / "c", imbalance_ratio=0.5)
    (tmp_path / "c" / "meta").write_bytes(pickle.dumps({b"other": 1}))
    with pytest.raises(FasaError, match="lacks the key.*fine_label_names"):
        make_cifar100_lt(tmp_path / "c")
    (tmp_path / "c" / "test").write_bytes(b"not a pickle")
    with pytest.raises(FasaError, match="not a CIFAR-100 pickle"):
        make_cifar100_lt(tmp_path / "c")


def _coco_doc(instances_per_category):
    cats = [{"id": 10 + i, "name": f"c{i}", "supercategory": "x"} for i in range(len(instances_per_category))]
    anns, next_id = [], 1
    for cat, n in zip(cats, instances_per_category):
        for _ in range(n):
            anns.append({"id": next_id, "image_id": 1, "category_id": cat["id"], "bbox": [0.0, 0.0, 4.0, 4.0],
                         "area": 16.0, "iscrowd": 0, "segmentation": [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]]})
            next_id += 1
    return {"images": [{"id": 1, "width": 8, "height": 8, "file_name": "000000000001.jpg"}],
            "annotations": anns, "categories": cats}


def test_coco_lt_bins_follow_simcal_edges(tmp_path):
    counts = [1, 19, 20, 399, 400, 7999, 8000, 0]
    path = tmp_path / "coco_lt_train.json"
    path.write_text(json.dumps(_coco_doc(counts)))
    bins = coco_lt_bins(path)
    assert bins.index.tolist() == [10 + i for i in range(len(counts))]
    assert bins.tolist() == [0, 0, 1, 1, 2, 2, 3, -1]
    doc = _coco_doc([3])
    doc["annotations"][0]["category_id"] = 99
    with pytest.raises(FasaError, match="unknown categories"):
        coco_lt_bins(doc)


def test_coco_lt_paths_validates_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "coco"
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "000000000001.jpg")
    train = tmp_path / "coco_lt_train.json"
    train.write_text(json.dumps(_coco_doc([2, 30])))
    with pytest.raises(FasaError, match="instances_val2017.json does not exist"):
        coco_lt_paths(train, root)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(_coco_doc([1, 1])))
    paths = coco_lt_paths(train, root)
    assert paths.val_images == root / "val2017" and paths.train_json == train
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(_coco_doc([1, 1, 1])))
    with pytest.raises(FasaError, match="different category ids"):
        coco_lt_paths(train, root)


def test_lvis_v1_paths(tiny_data_dir, tmp_path):
    src = default_root("tiny", 0)
    paths = lvis_v1_paths(src)
    assert paths.data_prefix == src and paths.train_images == src / "train2017"
    # Images under <root>/coco/ (the other mmdet convention) are found too.
    root = tmp_path / "lvis_v1"
    shutil.copytree(src / "annotations", root / "annotations")
    shutil.copytree(src / "train2017", root / "coco" / "train2017")
    shutil.copytree(src / "val2017", root / "coco" / "val2017")
    assert lvis_v1_paths(root).data_prefix == root / "coco"
    (root / "annotations" / "lvis_v1_val.json").write_text("{}")
    with pytest.raises(FasaError, match="lvis_v1_val.json.*no list"):
        lvis_v1_paths(root)
    assert lvis_v1_paths(root, validate=False).val_json.name == "lvis_v1_val.json"
    shutil.rmtree(root / "coco" / "val2017")
    with pytest.raises(FasaError, match="no train2017/ and val2017/"):
        lvis_v1_paths(root)
    with pytest.raises(FasaError, match="lvis_v1_train.json does not exist"):
        lvis_v1_paths(root / "annotations")
