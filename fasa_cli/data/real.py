"""Real datasets the user has on disk: LVIS v1.0, COCO-LT, CIFAR-100-LT.

Nothing is downloaded: each preparer validates the files' layout and format and says
exactly what is missing.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fasa_cli.data.lvis_format import DatasetPaths, check_dataset, read_json
from fasa_cli.errors import FasaError

COCO_LT_BIN_EDGES = (20, 400, 8000)  # bins [1, 20), [20, 400), [400, 8000), [8000, inf) training instances


def _require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise FasaError(f"{what} {path} does not exist", fix)
    return path


def _require_valid(json_path: Path, image_root: Path | None, fmt: str) -> None:
    problems = check_dataset(json_path, image_root, fmt=fmt)
    if problems:
        more = f" (and {len(problems) - 1} more; `fasa data check {json_path}` lists them)" if len(problems) > 1 else ""
        raise FasaError(f"{json_path}: {problems[0]}{more}", f"repair or re-download {json_path.name}")


def lvis_v1_paths(root: str | Path, validate: bool = True) -> DatasetPaths:
    """Paths of LVIS v1.0 laid out as mmdet expects:

        <root>/annotations/lvis_v1_{train,val}.json
        <root>/train2017, <root>/val2017        (or <root>/coco/train2017, ...)

    LVIS v1 val images come from both COCO folders, so mmdet's data_root (`data_prefix`)
    is the folder holding train2017/ and val2017/. With `validate`, both JSONs are parsed
    and checked (slow on the real 1 GB train JSON) and image files must exist.
    """
    root = _require_dir(Path(root).expanduser(), "LVIS root", "pass the folder holding annotations/ and train2017/")
    ann = root / "annotations"
    jsons = [ann / "lvis_v1_train.json", ann / "lvis_v1_val.json"]
    for j in jsons:
        if not j.is_file():
            raise FasaError(f"{j} does not exist", "download LVIS v1.0 annotations from lvisdataset.org into annotations/")
    prefix = next((p for p in (root, root / "coco") if (p / "train2017").is_dir() and (p / "val2017").is_dir()), None)
    if prefix is None:
        raise FasaError(f"no train2017/ and val2017/ image folders under {root} or {root / 'coco'}",
                        "put (or symlink) the COCO 2017 images there")
    if validate:
        for j in jsons:
            _require_valid(j, prefix, "lvis")
    return DatasetPaths(root, jsons[0], jsons[1], prefix / "train2017", prefix / "val2017", prefix)


@dataclass(frozen=True)
class CocoLTPaths:
    train_json: Path   # the user's sampled COCO-LT training JSON (SimCal protocol)
    val_json: Path     # COCO val2017 annotations
    train_images: Path
    val_images: Path


def coco_lt_paths(train_json: str | Path, coco_root: str | Path, validate: bool = True) -> CocoLTPaths:
    """COCO-LT = a sampled COCO train2017 JSON (supplied by the user) + COCO val2017.

    Expects <coco_root>/annotations/instances_val2017.json, <coco_root>/train2017/ and
    <coco_root>/val2017/. With `validate`, both JSONs are checked and must share categories.
    """
    train_json = Path(train_json).expanduser()
    coco_root = _require_dir(Path(coco_root).expanduser(), "COCO root",
                             "pass the folder holding annotations/, train2017/ and val2017/")
    val_json = coco_root / "annotations" / "instances_val2017.json"
    for j in (train_json, val_json):
        if not j.is_file():
            raise FasaError(f"{j} does not exist", "COCO-LT needs the sampled train JSON and COCO's instances_val2017.json")
    train_images = _require_dir(coco_root / "train2017", "image folder", "put the COCO train2017 images there")
    val_images = _require_dir(coco_root / "val2017", "image folder", "put the COCO val2017 images there")
    if validate:
        _require_valid(train_json, train_images, "coco")
        _require_valid(val_json, val_images, "coco")
        train_cats = {c["id"] for c in read_json(train_json)["categories"]}
        val_cats = {c["id"] for c in read_json(val_json)["categories"]}
        if train_cats != val_cats:
            raise FasaError(f"{train_json} and {val_json} have different category ids",
                            "sample COCO-LT from COCO train2017 keeping all 80 categories")
    return CocoLTPaths(train_json, val_json, train_images, val_images)


def coco_lt_bins(train_json: str | Path | dict, edges: tuple[int, ...] | None = None) -> pd.Series:
    """COCO-LT bin index (0..3) per category id, by training instance count:
    [1, 20), [20, 400), [400, 8000), [8000, inf). A category with no training instance gets -1.

    `edges` replaces (20, 400, 8000); by default a JSON's own `info.coco_lt_bin_edges` (the
    embedded stand-in's scaled edges) are used when present."""
    data = train_json if isinstance(train_json, dict) else read_json(train_json)
    if edges is None:
        edges = stored_bin_edges(data) if isinstance(data, dict) else COCO_LT_BIN_EDGES
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) or not isinstance(data.get("annotations"), list):
        raise FasaError(f"{train_json if not isinstance(train_json, dict) else 'the JSON'} is not a COCO-format JSON",
                        "pass the COCO-LT training JSON (with 'categories' and 'annotations')")
    ids = np.array(sorted(c["id"] for c in data["categories"]), dtype=np.int64)
    ann_cats = np.array([a["category_id"] for a in data["annotations"]], dtype=np.int64)
    unknown = ~np.isin(ann_cats, ids)
    if unknown.any():
        raise FasaError(f"{int(unknown.sum())} annotations point at unknown categories (e.g. {ann_cats[unknown][0]})",
                        "use an unmodified COCO-LT training JSON")
    counts = np.bincount(np.searchsorted(ids, ann_cats), minlength=len(ids))
    bins = np.searchsorted(np.asarray(edges), counts, side="right")
    return pd.Series(np.where(counts > 0, bins, -1), index=pd.Index(ids, name="category_id"), name="bin")


def stored_bin_edges(data: dict) -> tuple[int, ...]:
    """`info.coco_lt_bin_edges` of a COCO-LT JSON (the stand-in's), else COCO-LT's own edges."""
    info = data.get("info")
    edges = info.get("coco_lt_bin_edges") if isinstance(info, dict) else None
    if edges is None:
        return COCO_LT_BIN_EDGES
    if (not isinstance(edges, list) or len(edges) != len(COCO_LT_BIN_EDGES)
            or not all(isinstance(e, int) and e > 0 for e in edges) or sorted(set(edges)) != edges):
        raise FasaError(f"info.coco_lt_bin_edges {edges!r} is not {len(COCO_LT_BIN_EDGES)} increasing positive integers",
                        "regenerate the COCO-LT stand-in, or drop the key to use COCO-LT's 20/400/8000")
    return tuple(edges)


@dataclass(frozen=True)
class CifarLT:
    train_images: np.ndarray  # uint8 [N, 32, 32, 3]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray   # uint8 [10000, 32, 32, 3]
    test_labels: np.ndarray
    class_names: list[str]
    class_counts: np.ndarray  # training images per class, in class order
    # A validation split from the training images the LT subset leaves out (up to
    # `val_per_class` per class; empty unless asked for): disjoint from train and test.
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None


def cifar_lt_counts(imbalance_ratio: float, per_class: int = 500, num_classes: int = 100) -> np.ndarray:
    """LDAM's exponential profile: n_i = int(per_class * (1 / ratio) ** (i / (C - 1)))."""
    i = np.arange(num_classes)
    return (per_class * (1.0 / imbalance_ratio) ** (i / (num_classes - 1))).astype(np.int64)


def _load_pickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    if not path.is_file():
        raise FasaError(f"{path} does not exist", "extract cifar-100-python.tar.gz (it holds train, test and meta)")
    try:
        with path.open("rb") as f:
            data = pickle.load(f, encoding="bytes")
    except Exception as err:  # any unpickling failure means the file is not CIFAR's
        raise FasaError(f"{path} is not a CIFAR-100 pickle ({type(err).__name__})",
                        "re-extract cifar-100-python.tar.gz") from None
    missing = [k.decode() for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise FasaError(f"{path} lacks the key(s) {', '.join(missing)}", "use the python version of CIFAR-100")
    return data


def _images(data: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(data[b"data"], dtype=np.uint8)
    labels = np.asarray(data[b"fine_labels"], dtype=np.int64)
    if raw.ndim != 2 or raw.shape[1] != 3072 or len(raw) != len(labels):
        raise FasaError(f"{path} has data of shape {raw.shape} for {len(labels)} labels, expected [N, 3072]",
                        "re-extract cifar-100-python.tar.gz")
    # Rows store the red, green, then blue 32x32 planes.
    return raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def make_cifar100_lt(cifar_dir: str | Path, imbalance_ratio: float = 100, seed: int = 0,
                     val_per_class: int = 0) -> CifarLT:
    """CIFAR-100-LT by the LDAM-DRW protocol from the python pickles on disk.

    `cifar_dir` is the cifar-100-python folder or its parent. Class i (original order)
    keeps the first n_i of its training indices after a shuffle by
    np.random.RandomState(seed), classes in order -- the same draw sequence as LDAM's
    IMBALANCECIFAR100, so seed 0 and ratio 100 give its 10,847 images. The test set is
    the full balanced one. `val_per_class` > 0 adds a validation split: per class, up to that
    many of the images the subset leaves out (the next ones of the same shuffle, so the draw
    sequence is unchanged); a class that keeps all its images (class 0 at ratio 100) has none.
    """
    if not imbalance_ratio >= 1:
        raise FasaError(f"imbalance ratio must be >= 1, got {imbalance_ratio}", "use e.g. 100 (the paper's), 50 or 10")
    cifar_dir = Path(cifar_dir).expanduser()
    if (cifar_dir / "cifar-100-python").is_dir():
        cifar_dir = cifar_dir / "cifar-100-python"
    _require_dir(cifar_dir, "CIFAR-100 folder", "pass the extracted cifar-100-python folder")
    train = _load_pickle(cifar_dir / "train", (b"data", b"fine_labels"))
    test = _load_pickle(cifar_dir / "test", (b"data", b"fine_labels"))
    meta = _load_pickle(cifar_dir / "meta", (b"fine_label_names",))
    train_images, train_labels = _images(train, cifar_dir / "train")
    test_images, test_labels = _images(test, cifar_dir / "test")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"fine_label_names"]]
    num_classes = len(names)
    available = np.bincount(train_labels, minlength=num_classes)
    per_class = int(available.max())
    counts = cifar_lt_counts(imbalance_ratio, per_class, num_classes)
    if np.any(available < counts):
        raise FasaError(f"{cifar_dir / 'train'} has fewer images per class than the protocol needs",
                        "use the full CIFAR-100 training pickle")
    # Sequential per-class shuffles (100 small ones, preparation only) reproduce LDAM's draw.
    rs = np.random.RandomState(seed)
    keep, val = [], []
    for cls, n in enumerate(counts):
        idx = np.flatnonzero(train_labels == cls)
        rs.shuffle(idx)
        keep.append(idx[:n])
        val.append(idx[n:n + val_per_class])
    keep, val = np.concatenate(keep), np.concatenate(val)
    return CifarLT(train_images[keep], train_labels[keep], test_images, test_labels, names, counts,
                   train_images[val], train_labels[val])
