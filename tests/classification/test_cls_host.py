"""The classifier host: FASA on the pooled feature (one virtual feature per selected class, as
on a box head), virtual features never moving TDE's mean, Chu's plug-in on the classifier, the
data preprocessor, and every classification method x profile building its config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fasa_cli.cls_ext.model import ClsModel, crop_and_flip
from fasa_cli.methods.cls_api import CROSS_ENTROPY, LINEAR
from fasa_cli.registry import PROFILES

BACKBONE = dict(type="fasa_cli.cls_ext.backbones:CifarResNet", depth=32, width=4)
COUNTS = [40, 20, 8, 3, 1]


def _model(**kwargs) -> ClsModel:
    torch.manual_seed(0)
    args = dict(backbone=BACKBONE, classifier=dict(type=LINEAR), loss=dict(type=CROSS_ENTROPY),
                num_classes=len(COUNTS), class_counts=COUNTS, class_frequency=["f", "f", "c", "r", "r"],
                data_preprocessor=dict(type="ClsDataPreprocessor", mean=[0.5] * 3, std=[0.25] * 3))
    args.update(kwargs)
    return ClsModel(**args)


def _batch(model, labels):
    torch.manual_seed(1)
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8)
    return model.data_preprocessor(dict(inputs=images, label=torch.tensor(labels)), training=True)


def test_fasa_on_the_classifier_samples_one_virtual_feature_per_selected_class():
    model = _model(fasa=dict(seed=0, start_epoch=0, init="uniform", scale=len(COUNTS)))  # p_c = 1
    model.set_epoch(0)
    seen_labels = [0, 0, 1, 2, 2, 2]   # classes 3 and 4 never seen: never sampled
    batch = _batch(model, seen_labels)
    calls = []
    original = model.fc_cls.forward

    def spy(x):
        calls.append(x.shape[0])
        return original(x)

    model.fc_cls.forward = spy
    losses = model(**batch, mode="loss")
    assert set(losses) == {"loss_cls", "loss_fasa"} and losses["loss_fasa"].requires_grad
    # One classifier call for the real images, one for the virtual features: 3 seen classes,
    # each selected (p = 1), one feature each.
    assert calls == [6, 3] and model.virtual_used == 3
    features, labels = model.fasa.sample()
    assert sorted(labels.tolist()) == [0, 1, 2] and features.shape == (3, model.backbone.out_dim)
    # The statistics are those of the pooled feature the classifier sees.
    x = model.features(batch["inputs"]).detach()
    assert torch.allclose(model.fasa.mean[2], x[3:].mean(0), atol=1e-5)


def test_no_virtual_feature_before_fasa_starts():
    model = _model(fasa=dict(seed=0, start_epoch=1, init="uniform", scale=len(COUNTS)))
    model.set_epoch(0)
    losses = model(**_batch(model, [0, 1, 2]), mode="loss")
    assert float(losses["loss_fasa"].detach()) == 0.0 and model.virtual_used == 0


def test_virtual_features_do_not_move_tde_s_mean():
    classifier = dict(type="fasa_cli.methods.tde:CausalNormClassifier", heads=2)
    model = _model(classifier=classifier, fasa=dict(seed=0, start_epoch=0, init="uniform", scale=5.0))
    model.set_epoch(0)
    batch = _batch(model, [0, 1, 2, 3])
    model(**batch, mode="loss")
    assert model.virtual_used > 0
    real = model.features(batch["inputs"]).detach().mean(0)
    assert torch.allclose(model.fc_cls.embed_mean, real, atol=1e-5)  # 0.9 * 0 + mean of the 4 real features


def test_chu_plug_in_runs_on_the_classifier():
    model = _model(plugins=[dict(name="chu", args={"start_epoch": 0})])
    model.set_epoch(0)
    batch = _batch(model, [0, 0, 1, 1, 2, 3, 3, 4])
    model(**batch, mode="loss")            # fills the confusion statistics
    losses = model(**batch, mode="loss")
    assert "loss_chu" in losses and losses["loss_chu"].requires_grad
    assert model.feature_plugins["chu"].fused > 0


def test_crop_and_flip_keeps_pixels_and_pads_with_zeros():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 8, 8) + 1.0          # no zero anywhere
    out = crop_and_flip(images, pad=2, flip=True)
    assert out.shape == images.shape
    # Every non-zero pixel comes from its own image (a crop is a shift, a flip a mirror).
    for i in range(16):
        kept = out[i][out[i] > 0]
        assert torch.isin(kept, images[i]).all()
    assert (out == 0).any()                          # some crops reach the zero padding
    assert torch.equal(crop_and_flip(images, pad=0, flip=False), images)


CLS_PROFILES = [name for name, entry in PROFILES.items() if entry.task == "classification"]


def _cls_methods():
    from fasa_cli.methods import registered_methods

    return sorted(name for name, m in registered_methods().items() if "classification" in m.tasks)


class _Data:
    name = "embedded-cifar-lt"
    class_names = ["a", "b", "c"]
    class_counts = [100, 10, 1]
    frequency = ["f", "c", "r"]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.mark.parametrize("profile", CLS_PROFILES)
@pytest.mark.parametrize("method", _cls_methods())
@pytest.mark.parametrize("with_fasa", [False, True])
def test_every_classification_method_and_profile_builds_its_config(method, profile, with_fasa):
    from fasa_cli.cls_ext.config import build_cls_config
    from fasa_cli.runconfig import RunConfig

    run = RunConfig(task="classification", dataset="embedded-cifar-lt", profile=profile, method=method,
                    fasa={} if with_fasa else None)
    cfg = build_cls_config(run, _Data(), Path("/tmp/run"), seed=0)
    json.dumps(cfg)  # plain data: it travels to the child as a config
    hooks = [h["type"] for h in cfg["custom_hooks"]]
    assert hooks[:2] == ["RNGStateHook", "ProgressHook"]
    assert hooks[-1] == ("ClsFASAHook" if with_fasa else "ClassifierNormsHook")
    assert (cfg["model"]["fasa"] is not None) == with_fasa
    phases = 2 if method == "m2m" else 1
    assert cfg["train_cfg"]["max_epochs"] == cfg["model"]["phase_epochs"] * phases
    assert cfg["model"]["type"] == ("M2mClassifier" if method == "m2m" else "ClsModel")
    assert [p["name"] for p in cfg["model"]["plugins"]] == (["chu"] if method == "chu" else [])


def test_a_detection_method_or_profile_in_a_classification_run_is_refused_at_its_key():
    from pydantic import ValidationError

    from fasa_cli.runconfig import RunConfig

    with pytest.raises(ValidationError, match="method 'rfs' has no classification form"):
        RunConfig(task="classification", dataset="embedded-cifar-lt", profile="cpu-compact-cls", method="rfs")
    with pytest.raises(ValidationError, match="profile 'cpu-compact' serves detection runs"):
        RunConfig(task="classification", dataset="embedded-cifar-lt", profile="cpu-compact")
    with pytest.raises(ValidationError, match="dataset 'embedded-cifar-lt' serves classification runs"):
        RunConfig(dataset="embedded-cifar-lt", profile="cpu-compact")
    with pytest.raises(ValidationError, match="method 'ldam' has no detection form"):
        RunConfig(dataset="embedded-tiny", profile="cpu-compact", method="ldam")


def test_tde_edit_gives_the_bbn_backbone_and_its_schedule():
    from fasa_cli.cls_ext.config import build_cls_config
    from fasa_cli.runconfig import RunConfig

    run = RunConfig(task="classification", dataset="cifar100_lt", profile="cifar-resnet32", method="tde")
    cfg = build_cls_config(run, _Data(), Path("/tmp/run"), seed=0)
    assert cfg["model"]["backbone"]["variant"] == "bbn"
    assert cfg["train_dataloader"]["batch_size"] == 256
    lr_hook = next(h for h in cfg["custom_hooks"] if h["type"] == "ClsLRHook")
    assert np.isclose(lr_hook["lr"], 0.2) and lr_hook["steps"] == [120, 160] and lr_hook["gamma"] == 0.1
    assert np.isclose(cfg["optim_wrapper"]["optimizer"]["weight_decay"], 5e-4)
