"""Pictures of a dataset: example images with their labels, and the long-tail histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fasa_cli.data.lvis_format import DatasetPaths, annotation_mask, image_relpath, load_lvis_json

GROUP_COLOURS = {"r": "#d62728", "c": "#ff7f0e", "f": "#1f77b4"}
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_examples(paths: DatasetPaths, n: int = 8, out_png: str | Path = "examples.png",
                    split: str = "train", scale: int = 4) -> Path:
    """A grid of the first `n` images of a split with masks (tinted, outlined), boxes and
    class names overlaid; returns the PNG path."""
    from PIL import Image

    plt = _pyplot()
    data = load_lvis_json(paths.train_json if split == "train" else paths.val_json)
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = data["images"][:n]
    cols = min(2, max(1, len(images)))  # image pairs (raw, labelled) per row
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 3.4, rows * 3.6), squeeze=False)
    palette = plt.get_cmap("tab10")
    for ax in axes.ravel():
        ax.axis("off")
    for k, img in enumerate(images):
        pixels = _read_image(paths, img)
        h, w = pixels.shape[:2]
        raw_ax, ax = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        raw_ax.imshow(pixels, interpolation="nearest")
        raw_ax.set_title(f"image {img['id']}", fontsize=8)
        overlay = pixels.astype(float) * 0.45
        anns = by_image.get(img["id"], [])
        for j, ann in enumerate(anns):
            colour = np.array(palette(j % 10)[:3]) * 255
            mask = annotation_mask(ann["segmentation"], h, w)
            overlay[mask] = 0.45 * pixels[mask] + 0.55 * colour
        ax.imshow(overlay.astype(np.uint8), interpolation="nearest")
        for j, ann in enumerate(anns):
            x, y, bw, bh = ann["bbox"]
            colour = palette(j % 10)
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, lw=1, ec=colour))
            kind = "rle" if isinstance(ann["segmentation"], dict) else "poly"
            ax.text(x - 0.5, y - 1, f"{names[ann['category_id']]} ({kind})", fontsize=5, color="white",
                    va="bottom", bbox=dict(fc=colour, ec="none", pad=0.5, alpha=0.8))
        ax.set_title(f"{len(anns)} instances", fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100 * scale // 4 + 50)
    plt.close(fig)
    return out_png


def _read_image(paths: DatasetPaths, img: dict) -> np.ndarray:
    """RGB pixels of an image record; a missing, truncated or foreign file is a FasaError."""
    from PIL import Image

    from fasa_cli.errors import FasaError

    file = paths.data_prefix / image_relpath(img)
    fix = f"run `fasa data check {paths.root}`, then re-copy or regenerate the images"
    if not file.is_file():
        raise FasaError(f"image {img.get('id')} ({file}) does not exist", fix)
    try:
        with Image.open(file) as im:
            pixels = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise FasaError(f"image {file} cannot be decoded ({str(err).splitlines()[0] or type(err).__name__})", fix) from None
    if pixels.shape[:2] != (img.get("height"), img.get("width")):
        raise FasaError(f"image {file} is {pixels.shape[1]}x{pixels.shape[0]}, its record says "
                        f"{img.get('width')}x{img.get('height')}", fix)
    return pixels


def plot_long_tail(groups: pd.DataFrame, out_png: str | Path, title: str = "") -> Path:
    """Fig. 1a style: classes sorted by training instance count (log y), bars coloured by
    frequency group."""
    plt = _pyplot()
    ordered = groups.sort_values("train_instance_count", ascending=False, kind="stable")
    counts = ordered["train_instance_count"].to_numpy()
    colours = [GROUP_COLOURS.get(f, "grey") for f in ordered["frequency"]]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(np.arange(len(counts)), np.maximum(counts, 0.8), width=1.0, color=colours, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(counts) - 0.5)
    ax.set_xlabel("classes sorted by number of training instances")
    ax.set_ylabel("training instances")
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOURS[g]) for g in "rcf"]
    shares = ordered["frequency"].value_counts()
    ax.legend(handles, [f"{GROUP_NAMES[g]} ({shares.get(g, 0)} classes)" for g in "rcf"], frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
