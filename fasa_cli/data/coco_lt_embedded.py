"""The embedded COCO-LT stand-in: a generated long-tailed dataset with COCO's 80 classes and
COCO-LT's file layout, so Table 6 runs on a CPU through the same code as real COCO-LT.

It is drawn by the embedded generator (fasa_cli.data.embedded: shapes x colours x textures,
log-uniform long tail) and written in COCO format, laid out like a COCO root with the
COCO-LT training JSON beside COCO's val annotations:

    <root>/annotations/coco_lt_train.json       (the sampled long-tailed training split)
    <root>/annotations/instances_val2017.json   (the validation split; every class present)
    <root>/{train2017,val2017}/<12-digit id>.png (file_name; coco_url as COCO's)

Bins (AP1..AP4): COCO-LT's edges 20 / 400 / 8000 training instances split its 80 classes
4 / 24 / 32 / 20. The stand-in's few hundred images would put every class in the first two
bins, so its edges are scaled the way the embedded data scales LVIS's frequency groups: put
where COCO-LT's bins split the classes, here on the stand-in's realized training instance
counts (edge k = the count of the class at COCO-LT's cumulative class share; ties move a class
or two between neighbouring bins). The edges are stored in the training JSON's
`info.coco_lt_bin_edges`, which the COCO-LT resolver reads (real COCO-LT has none: 20/400/8000).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fasa_cli.data.embedded import MANIFEST, Preset, build_into, check_manifest, generate, generated_parent
from fasa_cli.data.lvis_format import COCO_URL_PREFIX, read_json
from fasa_cli.data.shapes import DrawParams
from fasa_cli.errors import FasaError

GENERATOR_VERSION = 1  # bump when the output for a (preset, seed) changes
TRAIN_JSON = "annotations/coco_lt_train.json"
VAL_JSON = "annotations/instances_val2017.json"
COCO_LT_BIN_CLASSES = (4, 24, 32, 20)  # classes per bin in COCO-LT (METHODS.md section C)
NUM_CLASSES = sum(COCO_LT_BIN_CLASSES)

PRESETS = {
    # CI smoke size: every class at least once in val, a few per image.
    "tiny": Preset("coco-lt-tiny", NUM_CLASSES, (6, 5, 3), 120, 40, 12, 1,
                   DrawParams(64, (5.0, 13.0), 0.3, 6, (1, 2)), val_min_images=2, neg_share=0.0),
    # Table 6 on CPU. Like COCO val2017, the val split is not long-tailed the way the sampled
    # training split is: every class has at least 15 validation images.
    "small": Preset("coco-lt-small", NUM_CLASSES, (8, 6, 3), 1200, 600, 400, 1,
                    DrawParams(128, (7.0, 26.0), 0.35, 9, (2, 4)), val_min_images=15, neg_share=0.0),
}


@dataclass(frozen=True)
class CocoLTEmbeddedPaths:
    root: Path
    train_json: Path
    val_json: Path


def bin_edges(instance_counts: np.ndarray, bin_classes: tuple[int, ...] = COCO_LT_BIN_CLASSES) -> tuple[int, ...]:
    """Edges e1 < e2 < e3 (each > 1) with the number of classes below each edge as close as
    ties allow to COCO-LT's cumulative class counts (4, 28, 60 of 80), scaled to len(counts)."""
    counts = np.sort(np.asarray(instance_counts, dtype=np.int64))
    candidates = np.unique(np.r_[counts[counts >= 1] + 1, 2])  # an edge just above a count
    below = np.searchsorted(counts, candidates, side="left")   # classes under each candidate
    scale = len(counts) / sum(bin_classes)
    edges: list[int] = []
    for cum in np.cumsum(bin_classes)[:-1]:
        allowed = candidates > (edges[-1] if edges else 1)
        if not allowed.any():  # fewer distinct counts than bins: stack edges above the top
            edges.append((edges[-1] if edges else 1) + 1)
            continue
        best = np.argmin(np.where(allowed, np.abs(below - cum * scale), np.inf))
        edges.append(int(candidates[best]))
    return tuple(edges)


def default_root(preset: str, seed: int) -> Path:
    """$FASA_DATA_DIR/coco-lt-<preset>-seed<seed>-v<version>, else the same under <repo>/data/generated/."""
    return generated_parent() / f"coco-lt-{preset}-seed{seed}-v{GENERATOR_VERSION}"


def paths(root: Path) -> CocoLTEmbeddedPaths:
    return CocoLTEmbeddedPaths(root, root / TRAIN_JSON, root / VAL_JSON)


def _manifest(preset: str, seed: int) -> dict:
    return {"generator": "fasa-embedded-coco-lt", "version": GENERATOR_VERSION, "preset": preset, "seed": seed}


def _check_manifest(root: Path, preset: str, seed: int) -> None:
    check_manifest(root, _manifest(preset, seed),
                   f"the embedded COCO-LT stand-in '{preset}' seed {seed} of generator v{GENERATOR_VERSION}",
                   "delete that folder to regenerate it")


def ensure_coco_lt_embedded(preset: str = "small", seed: int = 0, root: str | Path | None = None,
                            progress: bool = True) -> CocoLTEmbeddedPaths:
    """The stand-in's paths, generating it first if needed (atomically, as every embedded set)."""
    if preset not in PRESETS:
        raise FasaError(f"unknown COCO-LT stand-in preset '{preset}'", f"use one of: {', '.join(PRESETS)}")
    root = Path(root).expanduser() if root is not None else default_root(preset, seed)

    def write(out: Path) -> None:
        _generate(PRESETS[preset], seed, out, progress)
        (out / MANIFEST).write_text(json.dumps(_manifest(preset, seed), indent=1))

    build_into(root, write, lambda: _check_manifest(root, preset, seed), "the COCO-LT stand-in")
    return paths(root)


def _generate(spec: Preset, seed: int, out: Path, progress: bool) -> None:
    generate(spec, seed, out, progress=progress)  # LVIS-format files, rewritten as COCO below
    lvis = {split: read_json(out / "annotations" / f"lvis_v1_{split}.json") for split in ("train", "val")}
    counts = np.bincount([a["category_id"] - 1 for a in lvis["train"]["annotations"]], minlength=spec.num_classes)
    edges = bin_edges(counts)
    for split, target in (("train", TRAIN_JSON), ("val", VAL_JSON)):
        doc = _coco_document(lvis[split], split, spec, seed, edges)
        (out / target).write_text(json.dumps(doc, separators=(",", ":")))
        (out / "annotations" / f"lvis_v1_{split}.json").unlink()


def _coco_document(lvis: dict, split: str, spec: Preset, seed: int, edges: tuple[int, ...]) -> dict:
    folder = f"{split}2017"
    images = []
    for image in lvis["images"]:
        name = Path(image["file_name"]).name
        images.append({"id": image["id"], "width": image["width"], "height": image["height"],
                       "file_name": name, "coco_url": f"{COCO_URL_PREFIX}{folder}/{name}"})
    categories = [{"id": c["id"], "name": c["name"], "supercategory": c["name"].split("_")[-1]}
                  for c in lvis["categories"]]
    info = {
        "description": f"fasa embedded COCO-LT stand-in, preset '{spec.name}', seed {seed}, {split} split",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "split": split,
        "coco_lt_bin_edges": list(edges),
        "bin_rule": "edges where COCO-LT's bins split its 80 classes (4/24/32/20), on this stand-in's "
                    "realized training instance counts",
    }
    return {"info": info, "licenses": [], "categories": categories, "images": images,
            "annotations": [dict(a, iscrowd=0) for a in lvis["annotations"]]}
