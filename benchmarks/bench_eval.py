"""LVIS evaluation time, fast backend (faster-coco-eval) vs reference (lvis-api).

A synthetic LVIS-like problem: 1203 classes in rare/common/frequent groups, images with
a handful of objects, federated negative / not-exhaustive lists, and up to 300
detections per image (jittered true positives, wrong labels, false positives). Both
backends get the same detections through `evaluate_lvis`, so the time is what a user
waits for; the numbers they report are checked to agree.

    .venv/bin/python -m benchmarks.bench_eval [--quick]
writes results/benchmarks/eval.json and eval.md. Target (issue 12): fast >= 5x reference
with every metric within 1e-12.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/bench_eval.py` from anywhere
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from fasa_cli.evaluation import LVIS_METRICS, evaluate_lvis  # noqa: E402

NUM_CLASSES, WIDTH, HEIGHT = 1203, 640, 480
TARGET_SPEEDUP, TARGET_MAX_DIFF = 5.0, 1e-12


def synthetic_lvis(num_images: int, seed: int) -> dict:
    """LVIS-format ground truth with square-polygon objects (so masks exist for segm)."""
    rng = np.random.default_rng(seed)
    frequency = rng.choice(["r", "c", "f"], size=NUM_CLASSES, p=[0.28, 0.38, 0.34])
    # Long-tailed class draw: frequent classes appear most.
    weight = np.where(frequency == "f", 20.0, np.where(frequency == "c", 3.0, 0.5))
    weight /= weight.sum()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        classes = rng.choice(NUM_CLASSES, size=int(rng.integers(2, 12)), p=weight) + 1
        for category_id in classes:
            w, h = rng.uniform(10, 200, 2)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(category_id),
                "bbox": [x, y, w, h],
                "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
        present = set(int(c) for c in classes)
        absent = [int(c) for c in rng.choice(NUM_CLASSES, size=8, replace=False) + 1 if int(c) not in present]
        images.append({
            "id": image_id,
            "width": WIDTH,
            "height": HEIGHT,
            "neg_category_ids": absent[:6],
            "not_exhaustive_category_ids": sorted(present)[:1],
        })
    categories = [{"id": i + 1, "name": f"class_{i + 1}", "frequency": str(f)} for i, f in enumerate(frequency)]
    return {"images": images, "annotations": annotations, "categories": categories}


def synthetic_detections(gt: dict, per_image: int, with_masks: bool, seed: int) -> list[dict]:
    """Up to `per_image` detections per image on the image's verified classes."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    dets = []
    for image in gt["images"]:
        anns = by_image.get(image["id"], [])
        verified = sorted({a["category_id"] for a in anns} | set(image["neg_category_ids"]))
        for k in range(per_image):
            if anns and k < 3 * len(anns):  # three guesses per object, some relabelled
                ann = anns[k % len(anns)]
                x, y, w, h = ann["bbox"]
                dx, dy = rng.normal(0, 0.1, 2) * (w, h)
                box = [x + dx, y + dy, w * math.exp(rng.normal(0, 0.1)), h * math.exp(rng.normal(0, 0.1))]
                category = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(verified))
            else:  # background guesses
                w, h = rng.uniform(10, 150, 2)
                box = [rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), w, h]
                category = int(rng.choice(verified))
            det = {"image_id": image["id"], "category_id": category, "score": float(rng.random()), "bbox": box}
            if with_masks:
                x, y, w, h = box
                rle = mask_utils.merge(mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], HEIGHT, WIDTH))
                det["segmentation"] = {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}
            dets.append(det)
    return dets


def time_backends(gt: dict, dets: list[dict], iou_type: str) -> dict:
    row: dict = {"iou_type": iou_type, "images": len(gt["images"]), "classes": len(gt["categories"]), "detections": len(dets)}
    results = {}
    for backend in ("fast", "reference"):
        start = time.perf_counter()
        results[backend] = evaluate_lvis(gt, dets, iou_type, backend=backend)
        row[f"{backend}_s"] = round(time.perf_counter() - start, 3)
        print(f"  {iou_type:4s} {backend:9s} {row[f'{backend}_s']:7.2f} s  AP={results[backend]['AP']:.4f}", flush=True)
    row["speedup"] = round(row["reference_s"] / row["fast_s"], 2)
    diffs = [
        abs(results["fast"][k] - results["reference"][k])
        for k in LVIS_METRICS
        if not (math.isnan(results["fast"][k]) and math.isnan(results["reference"][k]))
    ]
    row["max_abs_metric_diff"] = float(max(diffs))
    row["target_met"] = row["speedup"] >= TARGET_SPEEDUP and row["max_abs_metric_diff"] <= TARGET_MAX_DIFF
    row["metrics_fast"] = {k: round(v, 6) for k, v in results["fast"].items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller problem (seconds), for a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "eval.json")
    args = parser.parse_args()

    sizes = {"bbox": (100, 100), "segm": (40, 50)} if args.quick else {"bbox": (500, 300), "segm": (150, 100)}
    rows = []
    for iou_type, (num_images, per_image) in sizes.items():
        gt = synthetic_lvis(num_images, seed=0)
        dets = synthetic_detections(gt, per_image, with_masks=iou_type == "segm", seed=1)
        rows.append(time_backends(gt, dets, iou_type))

    report = {
        "benchmark": "evaluate_lvis: fast (faster-coco-eval 1.8.0 C++ core, lvis_style, per-class-group "
        "driver in fasa_cli.evaluation.metrics) vs reference (lvis-api 0.5.3)",
        "target": {"speedup": TARGET_SPEEDUP, "max_abs_metric_diff": TARGET_MAX_DIFF},
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# LVIS evaluation time: fast backend vs lvis-api", "",
             f"Synthetic LVIS-like set, {NUM_CLASSES} classes; the same detections through `evaluate_lvis`"
             f"{' (quick mode)' if args.quick else ''}. Target: >= {TARGET_SPEEDUP:g}x with every metric "
             f"within {TARGET_MAX_DIFF:g}.", "",
             "| iou | images | detections | fast (s) | lvis-api (s) | speed-up | max metric diff | target |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {r['iou_type']} | {r['images']} | {r['detections']} | {r['fast_s']:.2f} | {r['reference_s']:.2f} | "
              f"{r['speedup']:.1f}x | {r['max_abs_metric_diff']:.1e} | {'met' if r['target_met'] else 'NOT met'} |"
              for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    for row in rows:
        print(f"{row['iou_type']}: {row['detections']} detections, fast {row['fast_s']} s, reference {row['reference_s']} s, "
              f"x{row['speedup']}, max metric diff {row['max_abs_metric_diff']:.2e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
