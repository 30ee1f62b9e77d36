"""The classification data: the embedded set (`fasa data make --preset cifar-lt-tiny`), the
CIFAR-100-LT preparer (`fasa data cifar`) and their one-line errors on missing or corrupt files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fasa_cli.data.classification import (
    PRESETS,
    ensure_cls_embedded,
    frequency_groups,
    load_cifar100_lt,
    load_cls_folder,
)
from fasa_cli.data.real import cifar_lt_counts
from fasa_cli.errors import FasaError


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory):
    return ensure_cls_embedded("cifar-lt-tiny", seed=0, root=tmp_path_factory.mktemp("cls") / "tiny", progress=False)


def test_embedded_set_is_long_tailed_with_balanced_val_and_test(tiny_cls):
    spec = PRESETS["cifar-lt-tiny"]
    data = load_cls_folder(tiny_cls, "embedded-cifar-lt-tiny")
    expected = cifar_lt_counts(spec.imbalance_ratio, spec.max_per_class, spec.num_classes)
    assert data.class_counts == expected.tolist() and max(data.class_counts) / min(data.class_counts) == 10
    for split, per_class in (("val", spec.val_per_class), ("test", spec.test_per_class)):
        images, labels = data.split(split)
        assert np.bincount(labels, minlength=spec.num_classes).tolist() == [per_class] * spec.num_classes
        assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert data.frequency == frequency_groups(data.class_counts) and len(set(data.class_names)) == spec.num_classes
    # The full preset is the issue's: 100 classes, ratio 100, balanced test.
    full = PRESETS["cifar-lt"]
    assert full.num_classes == 100 and full.train_counts()[0] / full.train_counts()[-1] == 100


def test_generation_is_deterministic(tiny_cls, tmp_path):
    again = ensure_cls_embedded("cifar-lt-tiny", seed=0, root=tmp_path / "again", progress=False)
    for split in ("train", "val", "test"):
        a, b = np.load(tiny_cls / f"{split}.npz"), np.load(again / f"{split}.npz")
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])


def test_frequency_groups_follow_the_cifar_thresholds():
    # n_max = 500: few-shot < 20, medium 20-100, many-shot > 100
    assert frequency_groups([500, 101, 100, 20, 19, 5]) == ["f", "f", "c", "c", "r", "r"]


def test_data_make_for_the_classification_preset(run_cli, tmp_path):
    root = tmp_path / "made"
    code, out, err = run_cli("data", "make", "--preset", "cifar-lt-tiny", "--root", root)
    assert code == 0, err
    assert str(root) in out and "10 classes" in out and "ratio 10" in out
    assert (root / "train.npz").is_file() and (root / "classes.json").is_file()


@pytest.mark.parametrize(("breakage", "expected"), [
    (lambda root: (root / "test.npz").unlink(), "test.npz does not exist"),
    (lambda root: (root / "train.npz").write_bytes(b"PK\x03\x04 not a zip"), "train.npz is not a readable split file"),
    (lambda root: (root / "classes.json").write_text("{"), "classes.json is missing or malformed"),
])
def test_data_make_on_a_broken_set_is_one_error_line(run_cli, tmp_path, breakage, expected):
    root = tmp_path / "broken"
    assert run_cli("data", "make", "--preset", "cifar-lt-tiny", "--root", root)[0] == 0
    breakage(root)
    code, out, err = run_cli("data", "make", "--preset", "cifar-lt-tiny", "--root", root)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert "Fix:" in err and "Traceback" not in out + err


def _write_cifar(folder, per_class=30, classes=100):
    """Fake CIFAR-100 python pickles with the real keys; pixel (0, 0) of the green plane holds
    each training image's index, so splits can be told apart."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", per_class), ("test", 2)):
        labels = rng.permutation(np.repeat(np.arange(classes), n))
        data = np.zeros((len(labels), 3072), np.uint8)
        data[:, 1024] = np.arange(len(labels)) % 251
        data[:, 1025] = np.arange(len(labels)) // 251
        doc = {b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data}
        (folder / name).write_bytes(pickle.dumps(doc))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(classes)]}))


def test_cifar100_lt_has_a_val_split_disjoint_from_train(tmp_path):
    _write_cifar(tmp_path / "cifar-100-python")
    data = load_cifar100_lt(tmp_path, imbalance_ratio=10)
    def ids(images):
        return set((images[:, 0, 0, 1].astype(int) + 251 * images[:, 0, 1, 1].astype(int)).tolist())

    train_ids = ids(data.split("train")[0])
    val_images, val_labels = data.split("val")
    val_ids = ids(val_images)
    # Up to 10 per class from the images the LT subset leaves out: none for class 0 (it keeps all 30).
    expected = np.minimum(10, 30 - cifar_lt_counts(10, 30))
    assert np.bincount(val_labels, minlength=100).tolist() == expected.tolist() and expected[0] == 0
    assert len(val_ids) == expected.sum() and not train_ids & val_ids
    assert data.class_counts == cifar_lt_counts(10, 30).tolist()
    # The LT subset itself is unchanged by asking for a validation split.
    from fasa_cli.data.real import make_cifar100_lt

    plain = make_cifar100_lt(tmp_path, 10)
    assert np.array_equal(plain.train_images, data.split("train")[0])


def test_data_cifar_reports_the_split(run_cli, tmp_path):
    _write_cifar(tmp_path / "cifar-100-python")
    code, out, err = run_cli("data", "cifar", tmp_path, "--ratio", "10")
    assert code == 0, err
    val = np.minimum(10, 30 - cifar_lt_counts(10, 30)).sum()
    assert "100 classes, 30 down to 3" in out and f"val {val}" in out


@pytest.mark.parametrize(("breakage", "expected"), [
    (lambda folder: (folder / "train").unlink(), "train does not exist"),
    (lambda folder: (folder / "test").write_bytes(b"not a pickle"), "test is not a CIFAR-100 pickle"),
    (lambda folder: (folder / "meta").write_bytes(pickle.dumps({b"x": 1})), "lacks the key(s) fine_label_names"),
])
def test_data_cifar_on_a_missing_or_corrupt_file_is_one_error_line(run_cli, tmp_path, breakage, expected):
    folder = tmp_path / "cifar-100-python"
    _write_cifar(folder)
    breakage(folder)
    code, out, err = run_cli("data", "cifar", folder)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert "Traceback" not in out + err


def test_cifar100_lt_run_without_the_folder_is_one_line(monkeypatch, tmp_path):
    from fasa_cli.data.classification import cls_dataset_root

    monkeypatch.setenv("FASA_CIFAR100_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(FasaError, match="FASA_CIFAR100_ROOT"):
        cls_dataset_root("cifar100_lt")
