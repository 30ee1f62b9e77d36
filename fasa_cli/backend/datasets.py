"""Resolve a registry dataset name to files on disk plus the class facts a run needs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fasa_cli.errors import FasaError
from fasa_cli.registry import lookup


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    root: Path
    train_ann: str            # relative to root, as mmdet's LVISV1Dataset wants it
    val_ann: str
    class_names: list[str]    # in the JSON's category order = the detector's label order
    frequency: list[str]      # 'r' | 'c' | 'f' per class
    instance_counts: list[int]  # training instances per class (FASA's inverse-frequency init)
    # COCO-format data (COCO-LT and its embedded stand-in); LVIS data keeps the defaults.
    format: str = "lvis"          # "lvis" (federated LVIS AP) | "coco" (COCO AP + AP1..AP4 bins)
    train_prefix: str = ""        # image folder of each split, relative to root (COCO: "train2017/")
    val_prefix: str = ""
    bins: dict[str, list[int]] | None = None  # metric name -> category ids (COCO-LT's AP1..AP4)
    image_counts: list[int] | None = None  # training images per class (EQL's image frequency)
    train_images: int | None = None        # training images with annotations (LVIS v1: 99,388)


def _categories(train_json: Path) -> tuple[list[str], list[str], list[int], list[int], int]:
    """Names, frequency letters, instance counts, image counts per class, and the number of
    training images with annotations."""
    try:
        with open(train_json) as f:
            train = json.load(f)
        categories = train["categories"]
    except (OSError, ValueError, KeyError) as err:
        raise FasaError(f"cannot read categories from {train_json}: {err}",
                        "run `fasa data check` on it") from None
    missing = [c.get("name", c.get("id")) for c in categories
               if "frequency" not in c or "instance_count" not in c]
    if missing:
        raise FasaError(f"{train_json}: categories without frequency/instance_count "
                        f"(e.g. {missing[:3]})", "use LVIS v1 annotations, which carry both")
    annotated = len({a["image_id"] for a in train.get("annotations", [])})
    return ([c["name"] for c in categories], [c["frequency"] for c in categories],
            [int(c["instance_count"]) for c in categories],
            [int(c.get("image_count", 0)) for c in categories], annotated)


TRAIN_ANN, VAL_ANN = "annotations/lvis_v1_train.json", "annotations/lvis_v1_val.json"


def dataset_root(name: str) -> Path:
    """The dataset's folder, checked (LVIS layout) or generated (embedded) on first use, and
    pre-flight validated (the `fasa data check` checks, cached by the JSONs' sha256) so bad
    annotations fail before training, not silently or after it.

    The embedded data's generator seed is fixed (0): run seeds vary the training, not the data.
    """
    from fasa_cli.data.preflight import preflight_dataset

    lookup("dataset", name)
    if name in COCO_LT_DATASETS:
        root = _coco_lt_files(name)[0]
    elif name.startswith("embedded-"):
        from fasa_cli.data import ensure_embedded

        paths = ensure_embedded(preset=name.removeprefix("embedded-"), seed=0)
        root = Path(paths.root)
        # Small: every image is decoded too (once per annotation hash).
        preflight_dataset(root, TRAIN_ANN, VAL_ANN, data_prefix=paths.data_prefix, images="decode")
    elif name == "lvis_v1":
        from fasa_cli.data.real import lvis_v1_paths

        root = Path(os.environ.get("FASA_LVIS_ROOT", "data/lvis_v1"))
        if not root.is_dir():
            raise FasaError(f"LVIS v1 root {root} does not exist",
                            "set FASA_LVIS_ROOT to the folder holding annotations/ and train2017/")
        paths = lvis_v1_paths(root, validate=False)
        # Image files are only stat'ed: decoding 120k images belongs to `fasa data check`.
        preflight_dataset(root, TRAIN_ANN, VAL_ANN, data_prefix=paths.data_prefix, images="exists")
    else:  # pragma: no cover - lookup() already refused unbuilt datasets
        raise FasaError(f"dataset '{name}' has no resolver", "pick a built dataset")
    return root


# COCO-LT (Table 6): the real one on disk, and the embedded stand-ins (name -> preset).
COCO_LT_DATASETS = {"coco_lt": None, "embedded-coco-lt-tiny": "tiny", "embedded-coco-lt-small": "small"}
COCO_VAL_ANN = "annotations/instances_val2017.json"


def _coco_lt_files(name: str) -> tuple[Path, str]:
    """(COCO root, training JSON relative to it or absolute), checked and pre-flight validated.

    Real COCO-LT: $FASA_COCO_LT_TRAIN is the sampled training JSON (SimCal's
    train_coco2017_LT_sampled.json), $FASA_COCO_ROOT the folder with annotations/
    instances_val2017.json, train2017/ and val2017/."""
    from fasa_cli.data.preflight import preflight_dataset

    preset = COCO_LT_DATASETS[name]
    if preset is not None:
        from fasa_cli.data.coco_lt_embedded import TRAIN_JSON, ensure_coco_lt_embedded

        root, train = ensure_coco_lt_embedded(preset=preset, seed=0).root, TRAIN_JSON
        images = "decode"
    else:
        from fasa_cli.data.real import coco_lt_paths

        train_env, root_env = os.environ.get("FASA_COCO_LT_TRAIN"), os.environ.get("FASA_COCO_ROOT")
        if not train_env or not root_env:
            raise FasaError("COCO-LT needs FASA_COCO_LT_TRAIN (the sampled train JSON) and FASA_COCO_ROOT "
                            "(annotations/instances_val2017.json, train2017/, val2017/)",
                            "export both, e.g. FASA_COCO_LT_TRAIN=/data/coco/annotations/train_coco2017_LT_sampled.json "
                            "FASA_COCO_ROOT=/data/coco")
        found = coco_lt_paths(train_env, root_env, validate=False)
        root, train = Path(root_env).expanduser(), str(found.train_json.resolve())
        images = "exists"  # 100k images are only stat'ed; `fasa data check` decodes them
    # Image paths come from coco_url (train2017/... or val2017/...), relative to the root.
    preflight_dataset(root, train, COCO_VAL_ANN, data_prefix=root, images=images, fmt="coco")
    return root, train


def _resolve_coco_lt(name: str) -> DatasetInfo:
    from fasa_cli.data.lvis_format import read_json
    from fasa_cli.data.real import coco_lt_bins

    root, train = _coco_lt_files(name)
    data = read_json(root / train)
    categories = data["categories"]  # label order = the JSON's category order (mmdet CocoDataset)
    val_ids = [c["id"] for c in read_json(root / COCO_VAL_ANN)["categories"]]
    if val_ids != [c["id"] for c in categories]:
        # mmdet numbers classes in each file's category order, so the orders must agree.
        raise FasaError(f"{root / train} and {root / COCO_VAL_ANN} do not list the same category ids in the same order",
                        "sample COCO-LT from COCO train2017 keeping all 80 categories in COCO's order")
    bins = coco_lt_bins(data)
    ids = [c["id"] for c in categories]
    position = {cat_id: k for k, cat_id in enumerate(ids)}
    counts = [0] * len(ids)
    images_of = [set() for _ in ids]
    for ann in data["annotations"]:
        k = position[ann["category_id"]]
        counts[k] += 1
        images_of[k].add(ann["image_id"])
    annotated = len(set().union(*images_of))
    # FASA's r/c/f logging groups: AP1's bin as rare, AP2's as common, AP3 and AP4 as frequent.
    letters = {-1: "r", 0: "r", 1: "c", 2: "f", 3: "f"}
    frequency = [letters[int(bins[c])] for c in ids]
    metric_bins = {f"AP{k + 1}": [int(c) for c in ids if int(bins[c]) == k] for k in range(4)}
    return DatasetInfo(name, root, train, COCO_VAL_ANN, [c["name"] for c in categories], frequency, counts,
                       image_counts=[len(images) for images in images_of], train_images=annotated,
                       format="coco", train_prefix="train2017/", val_prefix="val2017/", bins=metric_bins)


def resolve_dataset(name: str) -> DatasetInfo:
    """Files and class facts of a dataset (reads the train JSON's categories)."""
    if name in COCO_LT_DATASETS:
        lookup("dataset", name)
        return _resolve_coco_lt(name)
    root = dataset_root(name)
    train_ann, val_ann = TRAIN_ANN, VAL_ANN
    names, frequency, counts, image_counts, annotated = _categories(root / train_ann)
    return DatasetInfo(name, root, train_ann, val_ann, names, frequency, counts,
                       image_counts=image_counts, train_images=annotated)
