"""The host box head inside mmdet: each classifier-level plug-in changes what it says it
changes, and every feature-level method trains a few iterations of the compact Mask R-CNN on
the embedded `tiny` data (real RoI sampling, real losses, real backward)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mmdet.models.roi_heads.bbox_heads.bbox_head import BBoxHead

import fasa_cli.mmdet_ext  # noqa: F401  (registers the heads and hooks)
from fasa_cli.methods import registered_methods
from fasa_cli.mmdet_ext.heads import FASAPluginShared2FCBBoxHead, PluginShared2FCBBoxHead, plugin_hosts
from fasa_cli.mmdet_ext.method_hooks import MethodEpochHook
from fasa_cli.runconfig import RunConfig, TrainOverrides

NUM_CLASSES = 3
FEATURE_METHODS = sorted(n for n, m in registered_methods().items() if m.feature is not None)


def _head(method: str, fasa: bool = False, **args):
    torch.manual_seed(0)
    kwargs = dict(in_channels=2, fc_out_channels=8, roi_feat_size=2, num_classes=NUM_CLASSES,
                  plugins=[dict(name=method, args=args)], class_counts=[50, 10, 2],
                  class_frequency=["f", "c", "r"],
                  loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    if method == "liu":
        kwargs["cls_predictor_cfg"] = dict(type="NormedLinear", tempearture=20.0, bias=False)
    head = FASAPluginShared2FCBBoxHead(fasa=dict(start_epoch=0), **kwargs) if fasa else PluginShared2FCBBoxHead(**kwargs)
    head.init_weights()
    head.set_plugin_epoch(1)
    return head


def _fake_parent_targets(monkeypatch, labels):
    def fake(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg, concat=True, reduction_override=None):
        clean = self.loss_cls(cls_score, labels, torch.ones(len(labels)), avg_factor=len(labels))
        return {"loss_bbox": {"loss_cls": clean}, "bbox_targets": (labels, torch.ones(len(labels)), None, None)}

    monkeypatch.setattr(BBoxHead, "loss_and_target", fake)


@pytest.mark.parametrize("method", FEATURE_METHODS)
@pytest.mark.parametrize("fasa", [False, True])
def test_the_host_adds_each_plugins_losses_and_trains_fc_cls(monkeypatch, method, fasa):
    labels = torch.tensor([0, 1, 1, 2, 2, 0, NUM_CLASSES, NUM_CLASSES])
    _fake_parent_targets(monkeypatch, labels)
    head = _head(method, fasa)
    seen = []
    head.fc_cls.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    for _ in range(2):  # the second step has banks / statistics from the first
        cls_score, bbox_pred = head(torch.rand(len(labels), 2, 2, 2))
        losses = head.loss_and_target(cls_score, bbox_pred, None, None, None)["loss_bbox"]
    own = [k for k in losses if k.startswith(f"loss_{method}")]
    assert ("loss_fasa" in losses) == fasa
    if method in ("moex", "liu"):
        assert not own  # they replace the classification loss instead
    else:
        assert own
    head.zero_grad()
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    assert head.fc_cls.weight.grad is not None and head.fc_cls.weight.grad.abs().sum() > 0
    if method == "yin":  # the decoder sits before fc_cls at test time too
        plugin = head.feature_plugins["yin"]
        x = torch.rand(4, 2, 2, 2)
        with torch.no_grad():
            shared = head.shared_fcs[1](head.shared_fcs[0](x.flatten(1)).relu()).relu()
            assert torch.allclose(head(x)[0], head.fc_cls(plugin.transform_only(shared)), atol=1e-6)


def test_moex_replaces_the_clean_loss_and_liu_is_cosine(monkeypatch):
    labels = torch.tensor([0, 1, 2, NUM_CLASSES])
    _fake_parent_targets(monkeypatch, labels)
    head = _head("moex", p=0.0)  # p = 0: the clean loss stays
    cls_score, bbox_pred = head(torch.rand(4, 2, 2, 2))
    out = head.loss_and_target(cls_score, bbox_pred, None, None, None)["loss_bbox"]
    assert torch.allclose(out["loss_cls"], head.loss_cls(cls_score, labels, torch.ones(4), avg_factor=4))
    head = _head("liu", m_a=0.0, transfer=False)
    x = torch.rand(4, 2, 2, 2)
    cls_score, bbox_pred = head(x)
    out = head.loss_and_target(cls_score, bbox_pred, None, None, None)["loss_bbox"]
    assert torch.allclose(out["loss_cls"], head.loss_cls(cls_score, labels, torch.ones(4), avg_factor=4), atol=1e-4)


def test_the_method_hook_sets_epochs_and_freezes_the_second_stage():
    head = _head("chu")
    model = torch.nn.Module()
    model.roi_head = torch.nn.Module()
    model.roi_head.bbox_head = head
    hook = MethodEpochHook(freeze_from=2, trainable=("roi_head.bbox_head.fc_cls",))
    hook.before_train_epoch(SimpleNamespace(model=model, epoch=1))
    assert head.feature_plugins["chu"].epoch == 1 and all(p.requires_grad for p in model.parameters())
    hook.before_train_epoch(SimpleNamespace(model=model, epoch=2))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_cls.bias"]


def test_every_feature_method_trains_the_compact_detector_on_tiny_data(tiny_data_dir, tmp_path):
    """Two real iterations per method (the second with the augmentation on) (plus SMOTE + FASA): RoI sampling, the host's losses,
    backward and an optimizer step, in the model and pipeline build_config gives."""
    from mmengine.config import ConfigDict
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from mmdet.registry import DATASETS, MODELS

    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset

    data = resolve_dataset("embedded-tiny")
    runs = [(m, None) for m in FEATURE_METHODS] + [("smote", {})]
    import logging
    import time

    from mmengine.logging import MMLogger

    DefaultScope.get_instance("fasa-methods-test", scope_name="mmdet")
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every tensor
    for method, fasa in runs:
        started = time.perf_counter()
        run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", method=method, fasa=fasa,
                        train=TrainOverrides(batch_size=2))
        cfg = build_config(run, data, tmp_path, seed=0)
        torch.manual_seed(0)
        model = MODELS.build(ConfigDict(cfg["model"]))
        model.init_weights()
        model.train()
        dataset = DATASETS.build(ConfigDict(cfg["train_dataloader"]["dataset"]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        hosts = plugin_hosts(model)
        assert len(hosts) == 1
        for step in range(2):
            for host in hosts:
                host.set_plugin_epoch(0 if step == 0 else 1)
                if fasa is not None:
                    host.set_epoch(0 if step == 0 else 1)
            batch = model.data_preprocessor(pseudo_collate([dataset[2 * step], dataset[2 * step + 1]]), True)
            losses = model.loss(batch["inputs"], batch["data_samples"])
            total = sum(v for k, v in losses.items() if "loss" in k and torch.is_tensor(v))
            assert torch.isfinite(total), (method, losses)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        assert any(k.startswith(f"loss_{method}") for k in losses) or method in ("moex", "liu"), losses
        if fasa is not None:
            assert "loss_fasa" in losses
        print(f"{method}{' + fasa' if fasa is not None else ''}: {time.perf_counter() - started:.1f} s")


def test_instaboost_augments_the_training_pipeline_of_tiny_data(tiny_data_dir, tmp_path):
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope
    from mmdet.registry import DATASETS

    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.mmdet_ext.transforms import GuardedInstaBoost

    DefaultScope.get_instance("fasa-instaboost-test", scope_name="mmdet")
    run = RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="instaboost", method_args={"aug_ratio": 1.0})
    cfg = build_config(run, resolve_dataset("embedded-tiny"), tmp_path, seed=0)
    dataset = DATASETS.build(ConfigDict(cfg["train_dataloader"]["dataset"]))
    before = GuardedInstaBoost.fallbacks
    items = [dataset[i] for i in range(8)]
    assert all(len(item["data_samples"].gt_instances) > 0 for item in items)
    assert GuardedInstaBoost.fallbacks - before < 8  # most images are augmented, none crash
