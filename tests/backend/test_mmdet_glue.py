"""The mmdet glue without training: what the FASA head captures, what the validation
collector averages, and how the per-epoch validation pass treats the model and the RNG."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.bbox_heads.bbox_head import BBoxHead

from fasa_cli.mmdet_ext.heads import FASAConvFCBBoxHead, ValidationLossCollector
from fasa_cli.mmdet_ext.hooks import FASAHook

NUM_CLASSES = 3


def _head(**fasa) -> FASAConvFCBBoxHead:
    # Separate cls and reg branches of the same width: capturing the reg branch's (or the
    # shared) features instead of fc_cls's input would go unnoticed with shared FCs alone.
    torch.manual_seed(0)
    head = FASAConvFCBBoxHead(
        num_shared_fcs=1, num_cls_fcs=1, num_reg_fcs=1, fc_out_channels=8, in_channels=2,
        roi_feat_size=2, num_classes=NUM_CLASSES, fasa=dict(start_epoch=0, **fasa), class_counts=[50, 10, 2],
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    head.init_weights()
    return head


def _fake_targets(monkeypatch, labels: torch.Tensor) -> None:
    def fake(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg, concat=True, reduction_override=None):
        return {"loss_bbox": {"loss_cls": cls_score.sum() * 0}, "bbox_targets": (labels, None, None, None)}

    monkeypatch.setattr(BBoxHead, "loss_and_target", fake)


def test_the_head_feeds_fasa_the_classifier_input_of_positive_rois_only(monkeypatch):
    head = _head()
    labels = torch.tensor([0, NUM_CLASSES, 2, NUM_CLASSES, 1, 2])  # NUM_CLASSES = background
    _fake_targets(monkeypatch, labels)
    seen_by_fc_cls = []
    head.fc_cls.register_forward_pre_hook(lambda module, args: seen_by_fc_cls.append(args[0].detach().clone()))
    fed = {}
    original_update = head.fasa.update

    def spy(features, labels_):
        fed["features"], fed["labels"] = features.clone(), labels_.clone()
        original_update(features, labels_)

    monkeypatch.setattr(head.fasa, "update", spy)
    cls_score, bbox_pred = head(torch.randn(len(labels), 2, 2, 2))
    out = head.loss_and_target(cls_score, bbox_pred, None, None, None)
    positive = labels < NUM_CLASSES
    assert torch.equal(fed["features"], seen_by_fc_cls[0][positive])
    assert torch.equal(fed["labels"], labels[positive])
    assert "loss_fasa" in out["loss_bbox"] and out["loss_bbox"]["loss_fasa"].requires_grad


def test_the_validation_collector_averages_per_class_and_ignores_background():
    collector = ValidationLossCollector(NUM_CLASSES, torch.device("cpu"))
    scores = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 0, 1, NUM_CLASSES, NUM_CLASSES])
    collector.add(scores, labels)
    signal, valid = collector.signal("loss")
    ce = F.cross_entropy(scores, labels.clamp(max=NUM_CLASSES), reduction="none")
    assert valid.tolist() == [True, True, False]  # class 2 only had a background-labelled RoI
    assert signal[0].item() == pytest.approx((ce[0] + ce[1]).item() / 2)  # a mean, not a sum
    assert signal[1].item() == pytest.approx(ce[2].item())
    accuracy, _ = collector.signal("metric")
    assert accuracy.tolist()[:2] == [0.5, 0.0]
    official, _ = collector.signal("loss", "official")  # loss sum over every RoI, background too
    assert official[0].item() == pytest.approx((ce[0] + ce[1]).item() / 5)


class _Detector(torch.nn.Module):
    """Stands in for a detector: its loss forward feeds the head's collector and draws random numbers."""

    def __init__(self, head):
        super().__init__()
        self.head = head
        self.calls = []

    def data_preprocessor(self, batch, training):
        return {"inputs": torch.stack([torch.as_tensor(b) for b in batch]), "data_samples": None}

    def loss(self, inputs, data_samples):
        self.calls.append((self.training, torch.is_grad_enabled()))
        random.random(), np.random.rand(), torch.rand(3)  # a pipeline or a sampler would
        scores = self.head.fc_cls(inputs)
        self.head.val_collector.add(scores, torch.tensor([0, 1, NUM_CLASSES][: len(inputs)]))
        return {}


def _runner(model, tmp_path):
    return SimpleNamespace(model=model, work_dir=str(tmp_path), epoch=0, iter=10)


def _hook(monkeypatch, items):
    hook = FASAHook(val_dataset={}, frequency=["f", "c", "r"], batch_size=2)
    monkeypatch.setattr(hook, "_validation_set", lambda: (items, list(range(len(items)))))
    return hook


def test_the_validation_pass_runs_in_eval_mode_without_gradients_and_leaves_training_as_it_was(monkeypatch, tmp_path):
    head = _head()
    model = _Detector(head)
    model.train()
    items = [torch.randn(8) for _ in range(3)]
    hook = _hook(monkeypatch, items)
    signals = hook._validation_signal(_runner(model, tmp_path), [head], "loss")
    assert model.calls == [(False, False), (False, False)]  # 3 images in batches of 2
    assert model.training and head.val_collector is None
    signal, valid = signals[0]
    assert valid.tolist() == [True, True, False]


def test_the_validation_pass_does_not_move_the_global_random_state(monkeypatch, tmp_path):
    head = _head()
    model = _Detector(head)
    hook = _hook(monkeypatch, [torch.randn(8) for _ in range(2)])
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    hook.after_train_epoch(_runner(model, tmp_path))
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    untouched = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert model.calls and after == untouched


def test_static_sampling_skips_the_validation_pass(monkeypatch, tmp_path):
    head = _head(adaptive=False, scale=5.0)
    model = _Detector(head)
    hook = _hook(monkeypatch, [torch.randn(8) for _ in range(2)])
    hook.after_train_epoch(_runner(model, tmp_path))
    assert model.calls == []
    assert (tmp_path / "fasa_state.jsonl").is_file()
