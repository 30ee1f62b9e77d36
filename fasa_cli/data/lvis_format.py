"""LVIS/COCO-format dataset JSON: loading, validation, class groups, masks.

`check_dataset` returns every problem it finds as one readable line; `load_lvis_json`
raises a FasaError naming the file, the first problem and the fix.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd

from fasa_cli.errors import FasaError

# LVIS v1 groups classes by the number of training images containing them.
LVIS_FREQUENCY_THRESHOLDS = (10, 100)  # rare [1, 10), common [10, 100), frequent [100, inf)
FREQUENCY_LETTERS = ("r", "c", "f")
COCO_URL_PREFIX = "http://images.cocodataset.org/"


@dataclass(frozen=True)
class DatasetPaths:
    """Where a detection dataset lives. `data_prefix` is what image paths taken from
    `coco_url` (LVIS) are relative to -- mmdet's `data_root`; LVIS v1 val images live in
    both train2017/ and val2017/, so use data_prefix rather than the split folders."""

    root: Path
    train_json: Path
    val_json: Path
    train_images: Path
    val_images: Path
    data_prefix: Path


@dataclass(frozen=True)
class Problem:
    text: str
    fix: str


def image_relpath(image: dict) -> str:
    """The image's path relative to the data prefix: LVIS keys images by coco_url
    (mmdet strips the COCO host), COCO by file_name."""
    url = image.get("coco_url")
    if isinstance(url, str) and url.startswith(COCO_URL_PREFIX):
        return url[len(COCO_URL_PREFIX):]
    return str(image.get("file_name", ""))


def read_json(path: str | Path) -> object:
    """Parse a JSON file; a missing file or broken JSON is a FasaError naming the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a JSON file" if path.is_dir() else "does not exist"
        raise FasaError(f"{path} {what}", "pass the path of a dataset JSON file (or run `fasa data make`)")
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise FasaError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
            "re-download or regenerate the file; it may be truncated",
        ) from None
    except UnicodeDecodeError:
        raise FasaError(f"{path} is not a UTF-8 JSON text file", "pass the dataset's annotation JSON") from None


def load_lvis_json(path: str | Path) -> dict:
    """Parse and validate an LVIS-format JSON (structure, references, frequencies)."""
    data = read_json(path)
    problems = _structural_problems(data, "lvis")
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem kinds; `fasa data check {path}` lists them)" if len(problems) > 1 else ""
        raise FasaError(f"{path}: {first.text}{more}", first.fix)
    return data  # type: ignore[return-value]


def detect_format(data: dict, path: Path | None = None) -> str:
    """'lvis' if the JSON carries LVIS-only fields (or is named like LVIS), else 'coco'."""
    cats = data.get("categories") or []
    imgs = data.get("images") or []
    if path is not None and path.name.lower().startswith("lvis"):
        return "lvis"
    if any(isinstance(c, dict) and "frequency" in c for c in cats[:2000]):
        return "lvis"
    if any(isinstance(i, dict) and "neg_category_ids" in i for i in imgs[:2000]):
        return "lvis"
    return "coco"


IMAGE_CHECKS = ("decode", "header", "exists")


def check_dataset(json_path: str | Path, image_root: str | Path | None = None, fmt: str = "auto", *,
                  images: str = "decode", progress: bool = False) -> list[str]:
    """Every problem found in a LVIS/COCO-format JSON, one line each; [] if it is fine.

    With `image_root`, also checks the image files (paths from coco_url or file_name,
    relative to image_root): `images="decode"` decodes every one and compares its size
    with the record, "header" reads sizes only, "exists" only stats the files.
    A missing file or unparsable JSON raises FasaError instead (nothing else to check).
    """
    json_path = Path(json_path)
    return check_loaded(read_json(json_path), json_path, image_root, fmt, images=images, progress=progress)


def check_loaded(data: object, json_path: Path, image_root: str | Path | None = None, fmt: str = "auto", *,
                 images: str = "decode", progress: bool = False) -> list[str]:
    """`check_dataset` for a JSON already parsed from `json_path`."""
    if fmt not in ("auto", "lvis", "coco"):
        raise FasaError(f"unknown dataset format '{fmt}'", "use auto, lvis or coco")
    if images not in IMAGE_CHECKS:
        raise ValueError(f"images must be one of {IMAGE_CHECKS}, got {images!r}")
    if fmt == "auto":
        fmt = detect_format(data, json_path) if isinstance(data, dict) else "coco"
    problems = _structural_problems(data, fmt)
    if not problems and image_root is not None:
        problems += _image_file_problems(data, Path(image_root), images,
                                         label=f"images of {json_path.name}" if progress else None)
    return [f"{p.text} (fix: {p.fix})" for p in problems]


class _Collector:
    """Groups repeated problems of one kind into a single line with a few examples."""

    def __init__(self) -> None:
        self.examples: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, kind: str, fix: str, example: object) -> None:
        key = (kind, fix)
        self.counts[key] += 1
        if len(self.examples[key]) < 3:
            self.examples[key].append(str(example))

    def problems(self) -> list[Problem]:
        return [
            Problem(f"{n} {kind} (e.g. {', '.join(self.examples[(kind, fix)])})", fix)
            for (kind, fix), n in self.counts.items()
        ]


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> bool:
    """A finite number: JSON's NaN/Infinity literals parse as floats but are no coordinate."""
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x)


def _structural_problems(data: object, fmt: str) -> list[Problem]:
    if not isinstance(data, dict):
        return [Problem(f"the top level is a JSON {type(data).__name__}, expected an object",
                        "use a COCO/LVIS JSON with 'images', 'annotations' and 'categories'")]
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return [Problem(f"no list '{', '.join(missing)}' at the top level",
                        "use a COCO/LVIS JSON with 'images', 'annotations' and 'categories' lists")]
    empty = [Problem(f"no {k} (the '{k}' list is empty)", fix) for k, fix in (
        ("images", "a training or validation split needs its images listed"),
        ("annotations", "a training or validation split needs annotated instances; regenerate or re-download it"),
        ("categories", "list the dataset's categories"),
    ) if not data[k]]
    lvis = fmt == "lvis"
    bad = _Collector()

    cat_ids: set[int] = set()
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            bad.add("categories without an integer id", "give every category an integer 'id'", cat)
            continue
        if cat["id"] in cat_ids:
            bad.add("duplicate category ids", "make category ids unique", cat["id"])
        cat_ids.add(cat["id"])
        if not isinstance(cat.get("name"), str):
            bad.add("categories without a name", "give every category a 'name'", f"category {cat['id']}")
        if lvis and cat.get("frequency") not in FREQUENCY_LETTERS:
            bad.add("categories without a frequency 'r'/'c'/'f'",
                    "set each category's 'frequency' from its training image count (LVIS: r <10, c <100, f >=100)",
                    f"category {cat['id']} ({cat.get('name')!r}) has frequency {cat.get('frequency')!r}")

    images: dict[int, dict] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            bad.add("images without an integer id", "give every image an integer 'id'", img)
            continue
        if img["id"] in images:
            bad.add("duplicate image ids", "make image ids unique", img["id"])
        images[img["id"]] = img
        if not (_is_int(img.get("width")) and _is_int(img.get("height")) and img["width"] > 0 and img["height"] > 0):
            bad.add("images without a positive integer width/height", "store each image's pixel size",
                    f"image {img['id']}")
        if not image_relpath(img):
            bad.add("images without a file_name or coco_url", "store where each image file is", f"image {img['id']}")
        if lvis:
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                ids = img.get(key)
                if not isinstance(ids, list):
                    bad.add(f"images without a '{key}' list", f"add '{key}' (may be empty) to every image",
                            f"image {img['id']}")
                elif any(c not in cat_ids for c in ids):
                    bad.add(f"images whose {key} name unknown categories", "only list ids from 'categories'",
                            f"image {img['id']}")

    ann_ids: set[int] = set()
    present: set[tuple[int, int]] = set()  # (image, category) pairs with an annotation
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            bad.add("annotations without an integer id", "give every annotation an integer 'id'", ann)
            continue
        aid = ann["id"]
        if aid in ann_ids:
            bad.add("duplicate annotation ids", "make annotation ids unique", aid)
        ann_ids.add(aid)
        img = images.get(ann.get("image_id"))
        if img is None:
            bad.add("annotations point at unknown images", "every image_id must be an id in 'images'",
                    f"annotation {aid} -> image {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            bad.add("annotations point at unknown categories", "every category_id must be an id in 'categories'",
                    f"annotation {aid} -> category {ann.get('category_id')!r}")
        elif img is not None:
            present.add((img["id"], ann["category_id"]))
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            bad.add("annotations without a bbox [x, y, w, h] of finite numbers", "store each box as 4 finite numbers",
                    f"annotation {aid} bbox {bbox!r}")
        elif bbox[2] <= 0 or bbox[3] <= 0:
            bad.add("annotations with an empty box (w or h <= 0)", "drop empty instances", f"annotation {aid}")
        elif img is not None and _is_int(img.get("width")) and _is_int(img.get("height")) and (
            bbox[0] < -1 or bbox[1] < -1 or bbox[0] + bbox[2] > img["width"] + 1 or bbox[1] + bbox[3] > img["height"] + 1
        ):
            bad.add("annotations with a box outside their image", "clip boxes to the image",
                    f"annotation {aid} box {bbox} in {img['width']}x{img['height']}")
        if "area" in ann and not (_is_num(ann["area"]) and ann["area"] >= 0):
            bad.add("annotations with a negative, NaN or non-numeric area", "store the mask area in pixels",
                    f"annotation {aid}")
        segm = ann.get("segmentation")
        if segm is None:
            if lvis:
                bad.add("annotations without a segmentation", "store a polygon list or an RLE mask", f"annotation {aid}")
        elif not _segmentation_ok(segm, img):
            bad.add("annotations with a malformed segmentation",
                    "use polygons [[x1,y1,x2,y2,...]] (>= 3 points) or RLE {size: [h, w], counts}",
                    f"annotation {aid}")

    if lvis:
        for img in images.values():
            negs = img.get("neg_category_ids")
            if isinstance(negs, list):
                for c in negs:
                    if (img["id"], c) in present:
                        bad.add("images list an annotated category as negative",
                                "a neg_category_id must be verified absent from the image",
                                f"image {img['id']} category {c}")
    return empty + bad.problems()


def _segmentation_ok(segm: object, img: dict | None) -> bool:
    if isinstance(segm, list):
        return len(segm) > 0 and all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_num(v) for v in p) for p in segm
        )
    if isinstance(segm, dict):
        size = segm.get("size")
        if not (isinstance(size, list) and len(size) == 2 and isinstance(segm.get("counts"), (str, list))):
            return False
        return img is None or size == [img.get("height"), img.get("width")]
    return False


def image_size(path: Path, decode: bool = True) -> tuple[int, int]:
    """(width, height) of an image file; with `decode`, every pixel is decoded first, so a
    truncated or corrupt file raises OSError (PIL raises SyntaxError/ValueError for some)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if decode:
                im.load()
            return im.size
    except (SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise OSError(f"{type(err).__name__}: {err}") from None


def _image_file_problems(data: dict, image_root: Path, mode: str = "decode", max_size_checks: int | None = None,
                         label: str | None = None) -> list[Problem]:
    """`mode`: "decode" every image, read only sizes ("header", the first `max_size_checks`),
    or only check that the files exist ("exists"). `label` shows a progress bar."""
    if not image_root.is_dir():
        return [Problem(f"image folder {image_root} does not exist", "pass the folder the image paths are relative to")]
    from fasa_cli.data.progress import ProgressBar

    bad = _Collector()
    with ProgressBar(label is not None, len(data["images"]), f"checking {label}") as bar:
        for n, img in enumerate(data["images"]):
            bar.advance()
            path = image_root / image_relpath(img)
            if not path.is_file():
                bad.add(f"image files missing under {image_root}", "copy the images there or pass the right image root",
                        path)
                continue
            if mode == "exists" or (max_size_checks is not None and n >= max_size_checks):
                continue
            try:
                size = image_size(path, decode=mode == "decode")
            except OSError as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                bad.add("image files that cannot be decoded (truncated or corrupt)", "re-copy or regenerate the images",
                        f"{path}: {reason}")
                continue
            if size != (img.get("width"), img.get("height")):
                bad.add("image files whose size differs from their record", "fix width/height in the JSON",
                        f"{path} is {size[0]}x{size[1]}, record says {img.get('width')}x{img.get('height')}")
    return bad.problems()


def category_problem(data: dict) -> str | None:
    """What keeps `class_groups` from counting this JSON's classes (None if nothing): no
    categories, ids that are not unique integers, annotations naming unknown categories."""
    cats = data.get("categories")
    anns = data.get("annotations")
    if not isinstance(cats, list) or not isinstance(anns, list):
        return "no 'categories' and 'annotations' lists"
    if not cats:
        return "no categories (the 'categories' list is empty)"
    ids = [c.get("id") if isinstance(c, dict) else None for c in cats]
    if not all(_is_int(i) for i in ids) or len(set(ids)) != len(ids):
        return "category ids are not unique integers"
    known = set(ids)
    unknown = [a.get("category_id") if isinstance(a, dict) else a for a in anns
               if not isinstance(a, dict) or a.get("category_id") not in known]
    if unknown:
        return f"{len(unknown)} annotations point at unknown categories (e.g. {', '.join(map(repr, unknown[:3]))})"
    if not all(isinstance(a.get("image_id"), int) for a in anns):
        return "annotations without an integer image_id"
    return None


def frequency_letters(image_counts: np.ndarray, thresholds: tuple[int, int] = LVIS_FREQUENCY_THRESHOLDS) -> np.ndarray:
    """'r'/'c'/'f' per class from training image counts: rare [1, t_r), common [t_r, t_c),
    frequent [t_c, inf). A class with no training image counts as rare."""
    group = np.searchsorted(np.asarray(thresholds), np.asarray(image_counts), side="right")
    return np.asarray(FREQUENCY_LETTERS)[group]


def dataset_thresholds(dataset_json: dict) -> tuple[int, int]:
    """The (rare, common) thresholds stored by the embedded generator, else LVIS's."""
    info = dataset_json.get("info")
    thr = info.get("frequency_thresholds") if isinstance(info, dict) else None
    if isinstance(thr, dict) and "common" in thr and "frequent" in thr:
        return int(thr["common"][0]), int(thr["frequent"][0])
    return LVIS_FREQUENCY_THRESHOLDS


def class_groups(dataset_json: dict) -> pd.DataFrame:
    """One row per category (sorted by id): id, name, frequency, image_count,
    instance_count, plus train_image_count / train_instance_count.

    image_count / instance_count are counted in this JSON's annotations;
    train_* are the category records' own counts (LVIS stores the training counts in
    both splits) or, when absent, the counted ones. `frequency` is the record's letter,
    or derived from train_image_count with the dataset's thresholds.
    """
    cats = sorted(dataset_json["categories"], key=lambda c: c["id"])
    ids = np.array([c["id"] for c in cats], dtype=np.int64)
    if len(dataset_json["annotations"]):
        pairs = np.array([(a["category_id"], a["image_id"]) for a in dataset_json["annotations"]], dtype=np.int64)
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    index = np.searchsorted(ids, pairs[:, 0])
    instance_count = np.bincount(index, minlength=len(ids))
    unique_pairs = np.unique(pairs, axis=0)
    image_count = np.bincount(np.searchsorted(ids, unique_pairs[:, 0]), minlength=len(ids))
    train_images = np.array([c.get("image_count", n) for c, n in zip(cats, image_count)], dtype=np.int64)
    train_instances = np.array([c.get("instance_count", n) for c, n in zip(cats, instance_count)], dtype=np.int64)
    derived = frequency_letters(train_images, dataset_thresholds(dataset_json))
    frequency = [c.get("frequency", d) for c, d in zip(cats, derived)]
    return pd.DataFrame({
        "id": ids,
        "name": [c.get("name", str(c["id"])) for c in cats],
        "frequency": frequency,
        "image_count": image_count,
        "instance_count": instance_count,
        "train_image_count": train_images,
        "train_instance_count": train_instances,
    })


def annotation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """Decode a polygon list or RLE (compressed or not) to a bool HxW mask, as the
    COCO/LVIS tools and mmdet do."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)
