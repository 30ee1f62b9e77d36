"""Top-1 accuracy on the balanced test split, overall and per frequency group, as fractions
(tables show them in %); the per-image predictions (also as the prediction table that paired
intervals resample) and per-class accuracies go to the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

from fasa_cli.evaluation.bootstrap import PredictionTable

@METRICS.register_module()
class ClsAccuracyMetric(BaseMetric):
    default_prefix = None

    def __init__(self, frequency: Sequence[str], outfile: str | None = None, per_class_file: str | None = None,
                 matches_file: str | None = None, collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.frequency = np.asarray(frequency)
        self.outfile, self.per_class_file, self.matches_file = outfile, per_class_file, matches_file

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for out in data_samples:
            self.results.append((out["pred"].cpu(), out["label"].cpu()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        pred = torch.cat([p for p, _ in results]).numpy()
        label = torch.cat([y for _, y in results]).numpy()
        metrics, per_class = accuracy_metrics(pred, label, self.frequency)
        if self.outfile:
            np.savez_compressed(self.outfile, pred=pred, label=label)
        if self.matches_file:
            PredictionTable(np.arange(len(label)), label, pred, self.frequency).save(Path(self.matches_file))
        if self.per_class_file:
            Path(self.per_class_file).write_text(json.dumps(
                {"accuracy": [None if np.isnan(a) else float(a) for a in per_class], "frequency": self.frequency.tolist()}))
        return metrics


def accuracy_metrics(pred: np.ndarray, label: np.ndarray, frequency: np.ndarray) -> tuple[dict, np.ndarray]:
    """Top-1 accuracy over all images and the mean per-class accuracy of each frequency group,
    and the per-class accuracies (fasa_cli.evaluation.bootstrap.PredictionTable with every image once)."""
    table = PredictionTable(np.arange(len(label)), label, pred, np.asarray(frequency))
    return {m: float(v[0]) for m, v in table.metrics().items()}, table.per_class()[0]
