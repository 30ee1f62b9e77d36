"""Fakes for the experiment-suite tests: a runner and the backend's artefacts, a tiny spec."""

from __future__ import annotations

import json
import random
from pathlib import Path


TINY_SPEC = """\
table: "T"
title: Tiny ablation
paper_setting: embedded data
profiles: [cpu-compact, lvis-r50]
dataset:
  cpu-compact: embedded-tiny
  lvis-r50: lvis_v1
base:
  method: baseline
metrics: [AP, APr]
seeds: [0, 1]
rows:
  - name: base
    label: Baseline
    baseline: true
    paper: {AP: 20.8, APr: 8.0}
  - name: fasa
    label: + FASA
    set:
      fasa: {adaptive: true}
    paper: {AP: 23.7, APr: 17.8}
  - name: static
    label: + FA only
    set:
      fasa: {adaptive: false, scale: 5}
"""


def fake_metrics(config, seed: int) -> dict[str, float]:
    """Deterministic per (config, seed); FASA lifts APr by 0.04 with a seed noise of ±0.005."""
    rng = random.Random(f"{config.config_hash()}-{seed}")
    lift = 0.04 if config.fasa is not None else 0.0
    return {
        "AP": 0.20 + lift / 4 + rng.uniform(-0.005, 0.005),
        "APr": 0.05 + lift + rng.uniform(-0.005, 0.005),
        "APc": 0.18 + rng.uniform(-0.005, 0.005),
        "APf": 0.27 + rng.uniform(-0.005, 0.005),
    }


def write_fake_artefacts(config, run_dir: Path, seed: int, num_classes: int = 12, epochs: int = 4) -> None:
    """The backend's artefact formats: fasa_state.jsonl (FASA runs) and classifier_norms.json."""
    rng = random.Random(seed)
    frequency = ["f"] * 4 + ["c"] * 4 + ["r"] * (num_classes - 8)
    counts = [400 - 30 * i for i in range(num_classes)]
    if config.fasa is not None:
        with open(run_dir / "fasa_state.jsonl", "w") as handle:
            for epoch in range(epochs):
                probs = [min(1.0, (0.02 + 0.01 * i) * (1 + 0.1 * epoch) + rng.uniform(0, 0.002)) for i in range(num_classes)]
                group_mean = {g: sum(p for p, f in zip(probs, frequency) if f == g) / frequency.count(g) for g in "rcf"}
                handle.write(json.dumps({"epoch": epoch, "iter": 10 * (epoch + 1), "probs": probs,
                                         "group_mean_p": group_mean, "n_virtual": 5, "groups": None,
                                         "signal": None}) + "\n")
    tail_boost = 1.0 if config.fasa is not None else 0.0
    norms = [2.0 - 0.1 * i * (1 - 0.5 * tail_boost) + rng.uniform(0, 0.05) for i in range(num_classes)]
    (run_dir / "classifier_norms.json").write_text(json.dumps({
        "class_ids": list(range(1, num_classes + 1)), "names": [f"c{i}" for i in range(num_classes)],
        "frequency": frequency, "train_instance_count": counts, "norms": norms}))


class FakeRunner:
    """Stands in for the backend; can be told to raise on its n-th call (1-based)."""

    def __init__(self, fail_on: int | None = None, error: BaseException | type = KeyboardInterrupt, artefacts: bool = True,
                 matches: bool = False):
        self.matches = matches
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on
        self.error = error
        self.artefacts = artefacts

    def __call__(self, config, run_dir: Path, seed: int, on_progress=None) -> dict:
        self.calls.append((config.config_hash(), seed))
        if on_progress is not None:
            for step in range(1, 4):
                on_progress(step, 3, f"iter {step}")
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            (run_dir / "epoch_1.pth").write_text("partial")  # a checkpoint left for resuming
            raise self.error
        if self.artefacts:
            write_fake_artefacts(config, run_dir, seed)
        if self.matches:
            write_fake_matches(config, run_dir, seed)
        return {"metrics": fake_metrics(config, seed), "wall_s": 1.5, "peak_mem_mb": 100.0}


def write_fake_matches(config, run_dir: Path, seed: int, images: int = 40) -> None:
    """A match table (fasa_cli.evaluation.bootstrap) of 40 images and 3 classes (r, c, f):
    each image has one ground truth per class and two detections; FASA runs find the rare
    class's object more often."""
    import numpy as np

    from fasa_cli.evaluation.bootstrap import IOU_THRS, MatchTable

    rng = np.random.default_rng([seed, 1 if config.fasa is not None else 0])
    hit_rate = np.array([0.75 if config.fasa is not None else 0.45, 0.6, 0.8])
    det_class, det_image, det_tp = [], [], []
    for k in range(3):
        for i in range(images):
            hits = rng.random() < hit_rate[k]
            det_class += [k, k]
            det_image += [i, i]
            det_tp += [hits, False]
    det_class, det_image, det_tp = np.array(det_class), np.array(det_image), np.array(det_tp)
    scores = rng.random(len(det_class)) + det_tp  # true positives score higher
    order = np.lexsort((-scores, det_class))
    tp = np.repeat(det_tp[order][None], len(IOU_THRS), axis=0)
    table = MatchTable(
        image_ids=np.arange(1, images + 1), class_ids=np.array([1, 2, 3]), frequency=np.array(["r", "c", "f"]),
        det_class=det_class[order], det_image=det_image[order], det_tp=tp, det_fp=~tp,
        gt_class=np.repeat(np.arange(3), images), gt_image=np.tile(np.arange(images), 3),
        gt_count=np.ones(3 * images, dtype=int))
    table.save(run_dir / "eval_matches.npz")
