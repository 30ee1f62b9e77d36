"""The embedded long-tailed instance-segmentation dataset, generated from (preset, seed).

It is written in LVIS v1 format and laid out like real LVIS, so mmdet's stock
`LVISV1Dataset` reads it with data_root = the dataset folder:

    <root>/annotations/lvis_v1_{train,val}.json
    <root>/{train2017,val2017}/<12-digit id>.png   (referenced by coco_url)

Long tail: class k of the ranking (a seeded permutation) is targeted at
n_k = int(n_max * (n_min / n_max) ** (k / (C - 1))) training images, a log-uniform spread
like LVIS's. Frequency groups: LVIS's thresholds (10 and 100 images of ~100k) would make
every class here frequent, so they are scaled to each preset's count range: on a log
scale between n_min and n_max they sit where LVIS v1's class shares put them (28% rare,
38% common, 34% frequent):
    t_rare = round(n_min * (n_max / n_min) ** 0.28),  t_common = round(n_min * (n_max / n_min) ** 0.66)
Letters come from the *realized* training image counts; thresholds and generator
parameters are stored in each JSON's `info`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fasa_cli.data.lvis_format import COCO_URL_PREFIX, DatasetPaths, frequency_letters
from fasa_cli.data.progress import ProgressBar
from fasa_cli.data.shapes import DrawParams, ObjectClass, choose_classes, draw_image
from fasa_cli.errors import FasaError
from fasa_cli.paths import repo_root

GENERATOR_VERSION = 2  # bump when the output for a (preset, seed) changes (v2: small's larger val)
MANIFEST = "fasa_dataset.json"
LVIS_CLASS_SHARES = (0.28, 0.66)  # cumulative share of rare, rare+common classes in LVIS v1


@dataclass(frozen=True)
class Preset:
    name: str
    num_classes: int
    vocab: tuple[int, int, int]  # shapes, colours, textures the classes are drawn from
    train_images: int
    val_images: int
    max_class_images: int        # n_max: training images of the most frequent class
    min_class_images: int        # n_min: training images of the rarest class
    draw: DrawParams
    val_min_images: int = 2      # every class present in val gets at least this many images
    val_missing_rare: float = 0.0  # share of rare classes left out of val (LVIS val lacks some)
    neg_share: float = 0.25      # per class, share of a split's images listed as verified negatives

    @property
    def thresholds(self) -> tuple[int, int]:
        ratio = self.max_class_images / self.min_class_images
        rare, common = (round(self.min_class_images * ratio**s) for s in LVIS_CLASS_SHARES)
        return int(rare), int(max(common, rare + 1))


PRESETS = {
    "tiny": Preset("tiny", 10, (4, 3, 2), 40, 16, 24, 2,
                   DrawParams(64, (5.0, 13.0), 0.3, 5, (1, 2))),
    # The main job's data. Its val split is larger than LVIS's share and every class in it
    # has >= 40 images: with v1's 300 images (2-4 instances per rare class) the APr of one
    # run had a bootstrap sd of about 4 points, so no 2-point effect could be seen. Chosen
    # from baseline-only noise measurements; the training split is unchanged from v1.
    "small": Preset("small", 60, (8, 6, 3), 1200, 1500, 300, 2,
                    DrawParams(128, (7.0, 26.0), 0.35, 9, (2, 4)), val_min_images=40,
                    val_missing_rare=0.15),
    "medium": Preset("medium", 120, (10, 8, 4), 4000, 800, 900, 2,
                     DrawParams(256, (10.0, 48.0), 0.4, 12, (3, 6)), val_missing_rare=0.15),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise FasaError(f"unknown embedded preset '{name}'", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def default_root(preset: str, seed: int) -> Path:
    """$FASA_DATA_DIR/<preset>-seed<seed>-v<generator version>, else the same under <repo>/data/generated/."""
    return generated_parent() / f"{preset}-seed{seed}-v{GENERATOR_VERSION}"  # a new version never meets old data


def generated_parent() -> Path:
    """Where every embedded set is generated: $FASA_DATA_DIR, else <repo>/data/generated/."""
    parent = os.environ.get("FASA_DATA_DIR")
    if parent:
        return Path(parent).expanduser()
    repo = repo_root()
    return (repo if repo is not None else Path.cwd()) / "data" / "generated"


def embedded_paths(root: Path) -> DatasetPaths:
    return DatasetPaths(
        root=root,
        train_json=root / "annotations" / "lvis_v1_train.json",
        val_json=root / "annotations" / "lvis_v1_val.json",
        train_images=root / "train2017",
        val_images=root / "val2017",
        data_prefix=root,
    )


def ensure_embedded(preset: str = "small", seed: int = 0, root: str | Path | None = None,
                    progress: bool = True) -> DatasetPaths:
    """The embedded dataset's paths, generating it first if it is not there yet.

    `root` is the dataset folder itself (default: `default_root(preset, seed)`). The data
    is written to a temporary sibling folder and renamed into place at the end, so an
    interrupted run never leaves a half dataset.
    """
    spec = get_preset(preset)
    root = generated_root(seed, root, lambda: default_root(preset, seed))
    build_into(root, lambda out: generate(spec, seed, out, progress=progress),
               lambda: _check_manifest(root, preset, seed), "the dataset")
    return embedded_paths(root)


def generated_root(seed: int, root: str | Path | None, default) -> Path:
    """A generated set's folder: `root`, or `default()`; the seed checked first."""
    if not isinstance(seed, int) or seed < 0:
        raise FasaError(f"seed must be a non-negative integer, got {seed!r}", "pass e.g. --seed 0")
    return Path(root).expanduser() if root is not None else default()


def build_into(root: Path, write, check_existing, what: str) -> None:
    """Make the generated folder `root` unless it exists (then `check_existing()` vets it).
    `write(tmp)` fills a temporary sibling folder that is renamed into place at the end, so an
    interrupted run never leaves half a dataset and two processes racing end with one copy."""
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder made by the user: generate into it
    if root.exists():
        check_existing()
        return
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(root.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}{PARTIAL_MARK}", dir=root.parent))
    except OSError as err:
        raise _unwritable(what, root, err) from None
    try:
        # mkdtemp makes 0700; a dataset is shared like any folder the user makes.
        os.chmod(tmp, 0o777 & ~_umask())
        (tmp / OWNER_FILE).write_text(json.dumps(_owner()))
        try:
            write(tmp)
        except OSError as err:  # a full disk, a read-only folder: one line naming where
            raise _unwritable(what, root, err) from None
        (tmp / OWNER_FILE).unlink()
        try:
            tmp.rename(root)
        except OSError:
            if not root.exists():
                raise
            # Another process finished the same dataset first; theirs is identical.
            shutil.rmtree(tmp, ignore_errors=True)
            check_existing()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _unwritable(what: str, root: Path, err: OSError) -> FasaError:
    from fasa_cli.errors import os_error

    why = os_error(err)
    return FasaError(f"cannot write {what} into {root.parent} ({why.problem})", why.fix)


def check_manifest(root: Path, expected: dict, what: str, fix: str) -> None:
    """A generated folder must say it is what its name claims (generator, version, preset, seed)."""
    path = root / MANIFEST
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = None
    if found != expected:
        raise FasaError(f"{root} exists but is not {what} ({path.name} says {found})", fix)


PARTIAL_MARK = ".partial-"
OWNER_FILE = ".fasa-owner.json"
_ORPHAN_AGE_S = 600  # a partial folder without an owner file (older code) this old is abandoned


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name may hold spaces


def _owner() -> dict:
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}


def _owner_gone(owner: dict) -> bool:
    import socket

    if owner.get("host") != socket.gethostname():
        return False  # another machine's process (a shared disk): we cannot tell, leave it
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    start = _process_start(pid)
    return owner.get("start") is not None and start is not None and start != owner["start"]


def remove_stale_partials(parent: Path) -> list[Path]:
    """Delete `.<name>.partial-*` folders in `parent` whose creating process is gone (a killed
    `fasa data make`); folders of live generations are kept. Returns what was removed."""
    import time

    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(".") and PARTIAL_MARK in p.name and p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
            stale = not isinstance(owner, dict) or _owner_gone(owner)
        except FileNotFoundError:
            try:
                stale = time.time() - folder.stat().st_mtime > _ORPHAN_AGE_S
            except OSError:
                continue
        except (OSError, ValueError):
            stale = False
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def _manifest(preset: str, seed: int) -> dict:
    return {"generator": "fasa-embedded", "version": GENERATOR_VERSION, "preset": preset, "seed": seed}


def _check_manifest(root: Path, preset: str, seed: int) -> None:
    check_manifest(root, _manifest(preset, seed),
                   f"the embedded dataset '{preset}' seed {seed} of generator v{GENERATOR_VERSION}",
                   "delete that folder to regenerate it, or pass another --root")


def _class_targets(spec: Preset) -> np.ndarray:
    """Training-image target per long-tail rank, log-uniform from n_max down to n_min."""
    ranks = np.arange(spec.num_classes)
    ratio = spec.min_class_images / spec.max_class_images
    return (spec.max_class_images * ratio ** (ranks / (spec.num_classes - 1))).astype(np.int64)


def _assign(rng: np.random.Generator, counts: np.ndarray, num_images: int) -> np.ndarray:
    """Bool [C, N]: class c placed in exactly min(counts[c], N) random images; images left
    empty get one class drawn in proportion to the counts (so mostly frequent ones)."""
    counts = np.minimum(counts, num_images)
    ranks = rng.random((len(counts), num_images)).argsort(1).argsort(1)
    present = ranks < counts[:, None]
    empty = np.flatnonzero(~present.any(0))
    if len(empty):
        present[rng.choice(len(counts), len(empty), p=counts / counts.sum()), empty] = True
    return present


def _negatives(rng: np.random.Generator, present: np.ndarray, share: float) -> np.ndarray:
    """Bool [C, N]: per class, a random ceil(share * N) of the images verified to lack it
    (LVIS's federated negative sets; our labels are exhaustive, so any absent class is
    verifiably absent)."""
    keys = rng.random(present.shape)
    keys[present] = np.inf
    k = int(np.ceil(share * present.shape[1]))
    return (keys.argsort(1).argsort(1) < k) & ~present


def generate(spec: Preset, seed: int, out: Path, progress: bool = True) -> None:
    """Write the dataset for (spec, seed) into the existing folder `out`."""
    plan_rng = np.random.default_rng([seed, 7919])
    classes = choose_classes(plan_rng, spec.num_classes, spec.vocab)
    rank_of_class = plan_rng.permutation(spec.num_classes)
    targets = _class_targets(spec)[rank_of_class]
    rare_thr, common_thr = spec.thresholds

    val_targets = np.maximum(spec.val_min_images, targets * spec.val_images // spec.train_images)
    rare = np.flatnonzero(targets < rare_thr)
    missing = plan_rng.choice(rare, int(spec.val_missing_rare * len(rare)), replace=False)
    val_targets[missing] = 0

    train_present = _assign(plan_rng, targets, spec.train_images)
    val_present = _assign(plan_rng, val_targets, spec.val_images)

    (out / "annotations").mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(progress, spec.train_images + spec.val_images, f"generating embedded '{spec.name}' seed {seed}")
    with bar:
        splits = {}
        next_image_id, next_ann_id = 1, 1
        for split, present in (("train", train_present), ("val", val_present)):
            folder = out / f"{split}2017"
            folder.mkdir()
            images, annotations = [], []
            realized = np.zeros_like(present)
            for i in range(present.shape[1]):
                rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
                pixels, instances = draw_image(rng, np.flatnonzero(present[:, i]), classes, spec.draw)
                image_id = next_image_id
                next_image_id += 1
                name = f"{split}2017/{image_id:012d}.png"
                _write_png(out / name, pixels)
                images.append({"id": image_id, "width": spec.draw.size, "height": spec.draw.size,
                               "file_name": name, "coco_url": COCO_URL_PREFIX + name})
                for inst in instances:
                    realized[inst["class_index"], i] = True
                    annotations.append({"id": next_ann_id, "image_id": image_id,
                                        "category_id": inst["class_index"] + 1,
                                        "segmentation": inst["segmentation"], "bbox": inst["bbox"],
                                        "area": inst["area"], "iscrowd": 0})
                    next_ann_id += 1
                bar.advance()
            negatives = _negatives(plan_rng, realized, spec.neg_share)
            for i, image in enumerate(images):
                image["neg_category_ids"] = (np.flatnonzero(negatives[:, i]) + 1).tolist()
                image["not_exhaustive_category_ids"] = []  # every instance drawn is labelled
            splits[split] = (images, annotations, realized)

    train_anns = splits["train"][1]
    instance_count = np.bincount([a["category_id"] - 1 for a in train_anns], minlength=spec.num_classes)
    image_count = splits["train"][2].sum(1)
    letters = frequency_letters(image_count, (rare_thr, common_thr))
    categories = [_category(i, cls, letters[i], image_count[i], instance_count[i]) for i, cls in enumerate(classes)]

    for split, (images, annotations, realized) in splits.items():
        info = _info(spec, seed, split, rare_thr, common_thr, targets, np.flatnonzero(~realized.any(1)) + 1)
        doc = {"info": info, "licenses": [], "categories": categories, "images": images, "annotations": annotations}
        path = out / "annotations" / f"lvis_v1_{split}.json"
        path.write_text(json.dumps(doc, separators=(",", ":")))
    (out / MANIFEST).write_text(json.dumps(_manifest(spec.name, seed), indent=1))


def _category(index: int, cls: ObjectClass, letter: str, images: int, instances: int) -> dict:
    return {
        "id": index + 1,
        "name": cls.name,
        "synset": f"{cls.name}.n.01",
        "synonyms": [cls.name],
        "def": f"a {cls.colour} {cls.shape} with a {cls.texture} fill",
        "frequency": str(letter),
        "image_count": int(images),
        "instance_count": int(instances),
    }


def _info(spec: Preset, seed: int, split: str, rare_thr: int, common_thr: int, targets: np.ndarray,
          absent_ids: np.ndarray) -> dict:
    return {
        "description": f"fasa embedded long-tailed instance segmentation, preset '{spec.name}', seed {seed}, {split} split",
        "version": GENERATOR_VERSION,
        "preset": spec.name,
        "seed": seed,
        "split": split,
        "frequency_thresholds": {"rare": [1, rare_thr], "common": [rare_thr, common_thr], "frequent": [common_thr, None]},
        "threshold_rule": "t = round(n_min * (n_max / n_min) ** s) for s in (0.28, 0.66): LVIS v1's cumulative "
                          "rare/common class shares on the log image-count range; letters from realized train image counts",
        "generator": {k: v for k, v in asdict(spec).items() if k != "name"},
        "target_train_image_count": targets.tolist(),
        "categories_absent_from_split": absent_ids.tolist(),
    }


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)
