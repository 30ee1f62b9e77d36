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


def _categories(train_json: Path) -> tuple[list[str], list[str], list[int]]:
    try:
        with open(train_json) as f:
            categories = json.load(f)["categories"]
    except (OSError, ValueError, KeyError) as err:
        raise FasaError(f"cannot read categories from {train_json}: {err}",
                        "run `fasa data check` on it") from None
    missing = [c.get("name", c.get("id")) for c in categories
               if "frequency" not in c or "instance_count" not in c]
    if missing:
        raise FasaError(f"{train_json}: categories without frequency/instance_count "
                        f"(e.g. {missing[:3]})", "use LVIS v1 annotations, which carry both")
    return ([c["name"] for c in categories], [c["frequency"] for c in categories],
            [int(c["instance_count"]) for c in categories])


TRAIN_ANN, VAL_ANN = "annotations/lvis_v1_train.json", "annotations/lvis_v1_val.json"


def dataset_root(name: str) -> Path:
    """The dataset's folder, checked (LVIS layout) or generated (embedded) on first use, and
    pre-flight validated (the `fasa data check` checks, cached by the JSONs' sha256) so bad
    annotations fail before training, not silently or after it.

    The embedded data's generator seed is fixed (0): run seeds vary the training, not the data.
    """
    from fasa_cli.data.preflight import preflight_dataset

    lookup("dataset", name)
    if name.startswith("embedded-"):
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


def resolve_dataset(name: str) -> DatasetInfo:
    """Files and class facts of a dataset (reads the train JSON's categories)."""
    root = dataset_root(name)
    train_ann, val_ann = TRAIN_ANN, VAL_ANN
    names, frequency, counts = _categories(root / train_ann)
    return DatasetInfo(name, root, train_ann, val_ann, names, frequency, counts)
