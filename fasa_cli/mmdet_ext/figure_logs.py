"""What a run logs for the paper's figures beyond the FASA state and classifier norms:

- `true_class_prob.json` (Fig. 1b): per class, the mean predicted probability of the true
  class over validation RoIs, measured during the run's own test pass (every run);
- `class_means.json` (Fig. 5): the final FASA class means, reduced to their leading principal
  components, with the final groups and the clustering that made them (FASA runs).

Both are small (C numbers, and C x 50 half floats) so they go into the committed record
(fasa_cli.experiments.execute.run_artefacts); fasa_cli.experiments.figures reads them. The
file formats are defined in fasa_cli.figure_artefacts.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fasa_cli.core import dist
from fasa_cli.figure_artefacts import (
    IOU_THRESHOLD,
    MEAN_COMPONENTS,
    TRUE_CLASS_PROB_DEFINITION,
    TRUE_CLASS_PROB_FILE,
    encode_components,
)
from fasa_cli.jsonio import write_json


class TrueClassProbability:
    """Accumulates Fig. 1b's per-class true-class probability over a test pass.

    Forward hooks on the box head's RoI extractor (its input RoIs) and on the box head (its
    class scores) capture each batch's proposals and scores; `add_batch` matches them to the
    batch's ground truth. The model's outputs are untouched.
    """

    def __init__(self, num_classes: int, iou_thr: float = IOU_THRESHOLD):
        self.num_classes = num_classes
        self.iou_thr = iou_thr
        self.prob_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.rois = torch.zeros(num_classes, dtype=torch.long)
        self.gt_instances = torch.zeros(num_classes, dtype=torch.long)
        self._pending: Tensor | None = None
        self._captured: list[tuple[Tensor, Tensor]] = []
        self._handles: list = []
        self._head: nn.Module | None = None

    def attach(self, model: nn.Module) -> bool:
        """Hook the (last) box head of a two-stage detector; False if it has none."""
        roi_head = getattr(model, "roi_head", None)
        extractor = getattr(roi_head, "bbox_roi_extractor", None)
        head = getattr(roi_head, "bbox_head", None)
        if extractor is None or head is None:
            return False
        if isinstance(head, nn.ModuleList):  # cascade: the final stage's head
            extractor, head = extractor[-1], head[-1]
        self._head = head
        self._handles = [extractor.register_forward_pre_hook(self._on_rois),
                         head.register_forward_hook(self._on_scores)]
        return True

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._pending, self._captured = [], None, []

    def _on_rois(self, module, args) -> None:
        self._pending = args[1] if len(args) > 1 else None

    def _on_scores(self, module, args, output) -> None:
        # Paired with the RoIs of the extractor call right before it (a shared mask extractor
        # may run in between without a box head call; its RoIs are simply replaced).
        rois, self._pending = self._pending, None
        cls_score = output[0] if isinstance(output, (tuple, list)) else output
        if rois is None or cls_score is None or cls_score.shape[0] != rois.shape[0]:
            return
        head = self._head
        if getattr(head, "custom_cls_channels", False):  # e.g. Seesaw: the loss's activation
            scores = head.loss_cls.get_activation(cls_score)
        else:
            scores = F.softmax(cls_score, dim=-1)
        self._captured.append((rois.detach(), scores.detach()))

    def add_batch(self, data_samples) -> None:
        """Match the captured RoIs of this batch to its ground truth."""
        from mmdet.structures.bbox import bbox_overlaps, get_box_tensor

        captured, self._captured = self._captured, []
        ground_truth = []
        for sample in data_samples:
            gt = sample.gt_instances
            labels = gt.labels.long().cpu()
            boxes = get_box_tensor(gt.bboxes).float().cpu()
            # Proposals live in the resized input; the test pipeline loads boxes unresized.
            scale = sample.metainfo.get("scale_factor", (1.0, 1.0))
            boxes = boxes * boxes.new_tensor([scale[0], scale[1], scale[0], scale[1]])
            ground_truth.append((boxes, labels))
            self.gt_instances += torch.bincount(labels, minlength=self.num_classes)[: self.num_classes]
        for rois, scores in captured:
            rois, scores = rois.cpu().float(), scores.cpu().double()
            for index, (boxes, labels) in enumerate(ground_truth):
                mine = rois[:, 0].long() == index
                if not mine.any() or labels.numel() == 0:
                    continue
                best, which = bbox_overlaps(rois[mine, 1:], boxes).max(dim=1)
                matched = best >= self.iou_thr
                truth = labels[which[matched]]
                prob = scores[mine][matched].gather(1, truth[:, None]).squeeze(1)
                self.prob_sum.index_add_(0, truth, prob)
                self.rois.index_add_(0, truth, torch.ones_like(truth))

    def merge_ranks(self) -> None:
        """Under DDP each rank saw its share of the validation images: add them up
        (collective: every rank calls it)."""
        parts = dist.gather_objects((self.prob_sum, self.rois, self.gt_instances))
        if len(parts) > 1:
            self.prob_sum, self.rois, self.gt_instances = (sum(p[i] for p in parts) for i in range(3))

    def summary(self, names, frequency, counts) -> dict:
        mean = (self.prob_sum / self.rois.clamp_min(1)).tolist()
        return {
            "definition": TRUE_CLASS_PROB_DEFINITION,
            "iou_thr": self.iou_thr,
            "class_ids": list(range(self.num_classes)),
            "names": names,
            "frequency": list(frequency),
            "train_instance_count": counts,
            "mean_prob": [m if n > 0 else None for m, n in zip(mean, self.rois.tolist())],
            "rois": self.rois.tolist(),
            "gt_instances": self.gt_instances.tolist(),
        }


class TrueClassProbabilityLog:
    """Hook mix-in: measures TrueClassProbability during the test pass, writes it after.

    The host hook provides `frequency`, `class_names` and `class_counts`."""

    true_prob_file = TRUE_CLASS_PROB_FILE
    _probe: TrueClassProbability | None = None

    def before_test(self, runner) -> None:
        from mmengine.model import is_model_wrapper

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        probe = TrueClassProbability(len(self.frequency))
        self._probe = probe if probe.attach(model) else None

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._probe is not None and data_batch is not None:
            self._probe.add_batch(data_batch["data_samples"])

    def after_test(self, runner) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        probe.detach()
        probe.merge_ranks()
        if dist.rank_and_world()[0] != 0:  # under DDP the run folder is rank 0's
            return
        counts = list(self.class_counts) if self.class_counts is not None else None
        write_json(Path(runner.work_dir) / self.true_prob_file,
                   probe.summary(self.class_names, list(self.frequency), counts))


def class_means_summary(fasa, names=None, components: int = MEAN_COMPONENTS) -> dict:
    """The seen classes' final means as their leading principal components (float16, base64),
    with the final groups and the clustering that formed them.

    Principal components keep the distances t-SNE starts from (all of them when fewer than
    `components` + 1 classes were seen); each component's sign is fixed (largest entry
    positive), so the record is deterministic."""
    seen = fasa.seen.nonzero().squeeze(1)
    mean = fasa.mean.index_select(0, seen).detach().double().cpu()
    n, dim = mean.shape
    k = min(components, n, dim)
    if n:
        centred = mean - mean.mean(dim=0)
        u, s, _ = torch.linalg.svd(centred, full_matrices=False)
        coords = u[:, :k] * s[:k]
        flip = coords.gather(0, coords.abs().argmax(dim=0, keepdim=True)).sign()
        coords = coords * torch.where(flip == 0, 1.0, flip)
        total = float(s.square().sum())
        explained = float(s[:k].square().sum()) / total if total > 0 else 1.0
    else:
        coords, explained = torch.zeros(0, 0, dtype=torch.float64), 1.0
    cfg = fasa.cfg
    return {
        "class_ids": seen.tolist(),
        "names": [names[c] for c in seen.tolist()] if names is not None else None,
        "groups": fasa.groups.index_select(0, seen.to(fasa.groups.device)).tolist(),
        "clustering": cfg.clustering if cfg.adapt_by == "group" else "none (class-wise)",
        "adapt_by": cfg.adapt_by,
        "adaptive": cfg.adaptive,
        "distance": cfg.distance,
        "feat_dim": dim,
        "components": k,
        "explained_variance": explained,
        **encode_components(coords.numpy()),
    }


def write_class_means(fasa, path: Path, names=None) -> None:
    write_json(path, class_means_summary(fasa, names))
