"""Long-tailed image classification data: the embedded CIFAR-like set and CIFAR-100-LT.

The embedded set is generated from (preset, seed) like the detection set (fasa_cli/data/embedded.py),
from the same visual vocabulary (fasa_cli/data/shapes.py): a class is a (colour, texture, shape)
triple, one object per 32 px image on cluttered background, so frequent and rare classes share
parts. Training counts follow LDAM's CIFAR-LT profile n_i = int(n_max * (1 / ratio) ** (i / (C - 1)))
(class 0 the most frequent); validation and test splits are balanced:

    cifar-lt       100 classes, ratio 100: 100 down to 1 training images (2,131 in all),
                   10 validation and 50 test images per class
    cifar-lt-tiny  10 classes, ratio 10 (CI)

Folder layout (written to a temporary sibling and renamed into place, so an interrupted run never
leaves half a dataset):

    <root>/fasa_dataset.json   manifest: generator, version, preset, seed
    <root>/classes.json        class names, training counts, frequency groups, generator settings
    <root>/{train,val,test}.npz  images uint8 [N, 32, 32, 3] (HWC, RGB) and labels int64 [N]

The validation split is what FASA's per-epoch signal is measured on (the paper does not say which
split it used for CIFAR): a balanced split disjoint from training and test. On CIFAR-100-LT it is
made of the training images the LT subset leaves out (10 per class; fasa_cli/data/real.py), so the
test set stays untouched and every class but the head one (which keeps all its 500 images for
training and so has no signal; FASA moves it with its group) has a signal, the rarest included.

Frequency groups (few / medium / many-shot, the letters r / c / f as LVIS's rare / common /
frequent): training counts below n_max / 25, up to n_max / 5, above -- on CIFAR-100-LT (n_max =
500) the usual < 20 / 20-100 / > 100.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from fasa_cli.data.real import cifar_lt_counts, make_cifar100_lt
from fasa_cli.data.shapes import DrawParams, choose_classes, draw_image
from fasa_cli.data.embedded import MANIFEST, build_into, check_manifest, generated_parent, generated_root
from fasa_cli.errors import FasaError

GENERATOR_VERSION = 1  # bump when the output for a (preset, seed) changes
GENERATOR = "fasa-embedded-classification"
CLASSES_FILE = "classes.json"
SPLITS = ("train", "val", "test")
CIFAR_ENV = "FASA_CIFAR100_ROOT"
CIFAR_VAL_PER_CLASS = 10
CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # CIFAR-100 train


@dataclass(frozen=True)
class ClsPreset:
    name: str
    num_classes: int
    vocab: tuple[int, int, int]     # shapes, colours, textures the classes are drawn from
    max_per_class: int              # n_max
    imbalance_ratio: float
    val_per_class: int
    test_per_class: int
    draw: DrawParams = field(default_factory=lambda: DrawParams(32, (7.0, 13.0), 0.0, 1, (0, 2), noise_sigma=8.0))

    def train_counts(self) -> np.ndarray:
        return cifar_lt_counts(self.imbalance_ratio, self.max_per_class, self.num_classes)


PRESETS = {
    "cifar-lt": ClsPreset("cifar-lt", 100, (10, 8, 4), 100, 100, 10, 50),
    "cifar-lt-tiny": ClsPreset("cifar-lt-tiny", 10, (4, 3, 2), 20, 10, 4, 6),
}
# Registry dataset name -> preset.
DATASET_PRESETS = {"embedded-cifar-lt": "cifar-lt", "embedded-cifar-lt-tiny": "cifar-lt-tiny"}


def frequency_groups(counts) -> list[str]:
    """'r' few-shot (< n_max / 25), 'c' medium (<= n_max / 5), 'f' many-shot, per class."""
    counts = np.asarray(counts)
    top = counts.max()
    return ["r" if n < top / 25 else "c" if n <= top / 5 else "f" for n in counts]


@dataclass(frozen=True)
class ClsData:
    """A classification dataset in memory, with the facts a run needs."""

    name: str
    root: Path
    files: tuple[str, ...]            # the files (relative to root) that decide the numbers
    class_names: list[str]
    class_counts: list[int]           # training images per class
    frequency: list[str]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 [N, 32, 32, 3], int64 [N])
    mean: tuple[float, float, float]  # per-channel pixel mean / std in [0, 1] units (training split)
    std: tuple[float, float, float]
    generator_version: int | None = None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.splits:
            raise FasaError(f"dataset '{self.name}' has no split '{name}'", f"use one of: {', '.join(self.splits)}")
        return self.splits[name]


# -- the embedded set ----------------------------------------------------------------------------


def get_preset(name: str) -> ClsPreset:
    if name not in PRESETS:
        raise FasaError(f"unknown classification preset '{name}'", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def default_root(preset: str, seed: int) -> Path:
    """$FASA_DATA_DIR/<preset>-seed<seed>-cls-v<version>, else the same under <repo>/data/generated/."""
    return generated_parent() / f"{preset}-seed{seed}-cls-v{GENERATOR_VERSION}"


def _manifest(preset: str, seed: int) -> dict:
    return {"generator": GENERATOR, "version": GENERATOR_VERSION, "preset": preset, "seed": seed}


def _check_manifest(root: Path, preset: str, seed: int) -> None:
    check_manifest(root, _manifest(preset, seed),
                   f"the embedded classification set '{preset}' seed {seed} of generator v{GENERATOR_VERSION}",
                   "delete that folder to regenerate it, or pass another --root")


def ensure_cls_embedded(preset: str = "cifar-lt", seed: int = 0, root: str | Path | None = None,
                        progress: bool = True) -> Path:
    """The embedded classification set's folder, generated first if it is not there yet."""
    spec = get_preset(preset)
    root = generated_root(seed, root, lambda: default_root(preset, seed))
    build_into(root, lambda out: generate(spec, seed, out, progress=progress),
               lambda: _check_manifest(root, preset, seed), "the dataset")
    return root


def _draw(seed: int, split: int, index: int, cls: int, classes, params: DrawParams) -> np.ndarray:
    """One image of class `cls`; redrawn (next attempt's generator) if the object came out invisible."""
    for attempt in range(8):
        rng = np.random.default_rng([seed, split, index, attempt])
        pixels, instances = draw_image(rng, np.array([cls]), classes, params)
        if instances:
            return pixels
    raise RuntimeError(f"could not draw a visible object of class {cls}")  # pragma: no cover


def generate(spec: ClsPreset, seed: int, out: Path, progress: bool = True) -> None:
    """Write the set for (spec, seed) into the existing folder `out`."""
    from fasa_cli.data.progress import ProgressBar

    plan = np.random.default_rng([seed, 104729])
    classes = choose_classes(plan, spec.num_classes, spec.vocab)
    order = plan.permutation(spec.num_classes)  # class i of the long tail is vocabulary class order[i]
    classes = [classes[k] for k in order]
    per_split = {"train": spec.train_counts(),
                 "val": np.full(spec.num_classes, spec.val_per_class),
                 "test": np.full(spec.num_classes, spec.test_per_class)}
    total = int(sum(c.sum() for c in per_split.values()))
    with ProgressBar(progress, total, f"generating classification set '{spec.name}' seed {seed}") as bar:
        for code, split in enumerate(SPLITS):
            labels = plan.permutation(np.repeat(np.arange(spec.num_classes), per_split[split]))
            images = np.empty((len(labels), spec.draw.size, spec.draw.size, 3), np.uint8)
            for i, cls in enumerate(labels):
                images[i] = _draw(seed, code, i, int(cls), classes, spec.draw)
                bar.advance()
            np.savez(out / f"{split}.npz", images=images, labels=labels.astype(np.int64))
    counts = per_split["train"]
    doc = {
        "names": [c.name for c in classes],
        "train_counts": counts.tolist(),
        "frequency": frequency_groups(counts),
        "description": f"fasa embedded long-tailed classification, preset '{spec.name}', seed {seed}",
        "generator": {k: v for k, v in asdict(spec).items() if k != "name"},
    }
    (out / CLASSES_FILE).write_text(json.dumps(doc, indent=1))
    (out / MANIFEST).write_text(json.dumps(_manifest(spec.name, seed), indent=1))


def _load_split(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FasaError(f"{path} does not exist", "delete the dataset folder to regenerate it (`fasa data make`)")
    try:
        with np.load(path, allow_pickle=False) as doc:
            images, labels = doc["images"], doc["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise FasaError(f"{path} is not a readable split file ({type(err).__name__}: {err})",
                        "delete the dataset folder to regenerate it (`fasa data make`)") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or len(images) != len(labels):
        raise FasaError(f"{path} holds images {images.shape} {images.dtype} for {len(labels)} labels, "
                        "expected uint8 [N, H, W, 3]", "delete the dataset folder to regenerate it")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise FasaError(f"{path} has labels outside [0, {num_classes})", "delete the dataset folder to regenerate it")
    return images, labels.astype(np.int64)


def _pixel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def load_cls_folder(root: Path, name: str) -> ClsData:
    """An embedded set from its folder, checked (missing or corrupt files are one-line errors)."""
    try:
        doc = json.loads((root / CLASSES_FILE).read_text())
        names, counts = list(doc["names"]), [int(n) for n in doc["train_counts"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FasaError(f"{root / CLASSES_FILE} is missing or malformed ({type(err).__name__})",
                        "delete the dataset folder to regenerate it (`fasa data make`)") from None
    splits = {s: _load_split(root / f"{s}.npz", len(names)) for s in SPLITS}
    if np.bincount(splits["train"][1], minlength=len(names)).tolist() != counts:
        raise FasaError(f"{root / 'train.npz'} does not hold the training counts {CLASSES_FILE} lists",
                        "delete the dataset folder to regenerate it")
    mean, std = _pixel_stats(splits["train"][0])
    return ClsData(name, root, tuple(f"{s}.npz" for s in SPLITS), names, counts, frequency_groups(counts),
                   splits, mean, std, GENERATOR_VERSION)


# -- CIFAR-100-LT -----------------------------------------------------------------------------------


def cifar_root() -> Path:
    return Path(os.environ.get(CIFAR_ENV, "data/cifar-100-python")).expanduser()


def load_cifar100_lt(root: Path, name: str = "cifar100_lt", imbalance_ratio: float = 100, seed: int = 0) -> ClsData:
    """CIFAR-100-LT (LDAM's protocol, ratio 100) with its balanced validation split."""
    lt = make_cifar100_lt(root, imbalance_ratio, seed, val_per_class=CIFAR_VAL_PER_CLASS)
    folder = Path(root).expanduser()
    folder = folder / "cifar-100-python" if (folder / "cifar-100-python").is_dir() else folder
    counts = [int(n) for n in lt.class_counts]
    splits = {"train": (lt.train_images, lt.train_labels), "val": (lt.val_images, lt.val_labels),
              "test": (lt.test_images, lt.test_labels)}
    return ClsData(name, folder, ("train", "test", "meta"), list(lt.class_names), counts, frequency_groups(counts),
                   splits, CIFAR_MEAN, CIFAR_STD)


# -- by registry name -------------------------------------------------------------------------------


def cls_dataset_root(name: str) -> Path:
    """The dataset's folder: generated (embedded) or checked (CIFAR-100 on disk)."""
    if name in DATASET_PRESETS:
        return ensure_cls_embedded(DATASET_PRESETS[name], seed=0, progress=False)
    if name == "cifar100_lt":
        root = cifar_root()
        if not root.is_dir():
            raise FasaError(f"CIFAR-100 folder {root} does not exist",
                            f"set {CIFAR_ENV} to the extracted cifar-100-python folder")
        return root
    raise FasaError(f"dataset '{name}' is not a classification dataset",
                    f"use one of: {', '.join([*DATASET_PRESETS, 'cifar100_lt'])}")


@lru_cache(maxsize=4)
def load_cls_dataset(name: str) -> ClsData:
    """A classification dataset by registry name (cached: a run reads it once per process).
    The embedded data's generator seed is fixed (0): run seeds vary the training, not the data."""
    root = cls_dataset_root(name)
    if name == "cifar100_lt":
        return load_cifar100_lt(root, name)
    return load_cls_folder(root, name)
