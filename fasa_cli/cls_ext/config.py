"""One mmengine config template for every classification profile, method and FASA setting.

`build_cls_config` turns (RunConfig, dataset, profile) into a plain config dict: the profile
gives the backbone and schedule, the run's method edits the classification view
(fasa_cli.methods.cls_api.ClsRunEdit), FASA goes on the pooled feature. The engine is the
detection path's: mmengine's Runner with the same checkpointing, RNG-state, progress and
classifier-norm hooks, so resume, progress bars and the result store work alike.
"""

from __future__ import annotations

from pathlib import Path

from fasa_cli.cls_ext.profiles import get_cls_profile
from fasa_cli.errors import FasaError
from fasa_cli.methods.cls_api import CROSS_ENTROPY, LINEAR, ClsRunEdit, apply_cls_method
from fasa_cli.registry import lookup
from fasa_cli.runconfig import RunConfig
from fasa_cli.rundir import MATCHES_FILE, engine_default_hooks

BACKBONE = "fasa_cli.cls_ext.backbones:CifarResNet"
PREDICTIONS_FILE = "predictions.npz"
PER_CLASS_FILE = "per_class_accuracy.json"


def build_cls_config(run: RunConfig, data, work_dir: Path, seed: int) -> dict:
    """The full mmengine config of one classification run (`data`: a ClsData)."""
    lookup("method", run.method)
    p = get_cls_profile(run.profile)
    t = run.train
    if t.max_iters is not None:
        raise FasaError("train.max_iters is not supported: FASA adapts once per epoch", "set train.epochs instead")
    if t.val_split == "train_holdout":
        raise FasaError("train.val_split train_holdout is a detection setting",
                        "leave it out: classification runs have a balanced validation split")
    view = ClsRunEdit(
        run, list(data.class_counts), list(data.frequency), seed,
        model=dict(type="ClsModel", backbone=dict(type=BACKBONE, depth=p.depth, width=p.width),
                   classifier=dict(type=LINEAR), loss=dict(type=CROSS_ENTROPY)),
        schedule=dict(epochs=t.epochs or p.epochs, batch_size=t.batch_size or p.batch_size, lr=t.lr or p.lr,
                      momentum=p.momentum, weight_decay=p.weight_decay, warmup_epochs=p.warmup_epochs,
                      lr_steps=list(p.lr_steps), lr_gamma=p.lr_gamma))
    apply_cls_method(view)
    s = view.schedule
    epochs, phases = int(s["epochs"]), len(view.phases)
    steps = [int(round(f * epochs)) for f in s["lr_steps"]]
    fasa = dict(run.fasa.core_settings(), seed=seed) if run.fasa is not None else None
    class_facts = dict(frequency=list(data.frequency), class_names=list(data.class_names),
                       class_counts=list(data.class_counts))
    if fasa is not None:
        last_hook = dict(type="ClsFASAHook", dataset=run.dataset, max_images=t.val_loss_images or p.val_images,
                         batch_size=p.test_batch_size, subset_seed=seed, signal_norm=run.fasa.val_signal,
                         **class_facts)
    else:
        last_hook = dict(type="ClassifierNormsHook", **class_facts)
    model = dict(view.model, num_classes=len(data.class_names), class_counts=list(data.class_counts),
                 class_frequency=list(data.frequency), fasa=fasa, plugins=list(view.plugins),
                 phase_epochs=epochs,
                 data_preprocessor=dict(type="ClsDataPreprocessor", mean=list(data.mean), std=list(data.std),
                                        pad=p.pad, flip=True, size=p.input_size))

    def loader(split: str, batch_size: int, sampler: dict) -> dict:
        return dict(batch_size=batch_size, num_workers=0, persistent_workers=False, sampler=sampler,
                    collate_fn=dict(type="default_collate"),
                    dataset=dict(type="ClsArrayDataset", dataset=run.dataset, split=split))

    stage = view.stage or {}
    cfg = dict(
        default_scope="mmdet",  # the detection glue's hooks (RNGStateHook, ProgressHook) live there
        custom_imports=dict(imports=["fasa_cli.mmdet_ext", "fasa_cli.cls_ext"], allow_failed_imports=False),
        work_dir=str(work_dir),
        model=model,
        train_dataloader=loader("train", int(s["batch_size"]),
                                dict(type="ClsEpochSampler", shuffle=True, seed=seed, phases=phases,
                                     phase_epochs=epochs, balanced_from=view.sampler.get("balanced_from"))),
        test_dataloader=loader("test", p.test_batch_size, dict(type="DefaultSampler", shuffle=False)),
        test_evaluator=dict(type="ClsAccuracyMetric", frequency=list(data.frequency),
                            outfile=str(work_dir / PREDICTIONS_FILE), per_class_file=str(work_dir / PER_CLASS_FILE),
                            matches_file=str(work_dir / MATCHES_FILE)),
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=epochs * phases, val_interval=epochs * phases + 1),
        test_cfg=dict(type="TestLoop"),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=float(s["lr"]),
                                                               momentum=float(s["momentum"]),
                                                               weight_decay=float(s["weight_decay"]))),
        default_hooks=engine_default_hooks(),
        custom_hooks=[dict(type="RNGStateHook"), dict(type="ProgressHook"),
                      dict(type="ClsEpochHook", freeze_from=stage.get("freeze_from"),
                           trainable=stage.get("trainable", [])),
                      dict(type="ClsLRHook", lr=float(s["lr"]), warmup_epochs=int(s["warmup_epochs"]), steps=steps,
                           gamma=float(s["lr_gamma"]), phase_epochs=epochs),
                      *view.hooks, last_hook],
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl")),
        randomness=dict(seed=seed, deterministic=False),
        log_processor=dict(type="LogProcessor", window_size=20, by_epoch=True),
        log_level="INFO",
        launcher="none",
    )
    return cfg
