"""Hooks of the classification run: the epoch reaching the model's parts (and a method's second
stage), the learning-rate schedule, and FASA's per-epoch validation pass and adaptation.

RNG states in checkpoints, progress and step time come from the detection glue's RNGStateHook
and ProgressHook, unchanged; classifier norms from its `write_classifier_norms`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from fasa_cli.rundir import append_jsonl, read_jsonl, rewrite_jsonl


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class ClsEpochHook(Hook):
    """Before each epoch: `model.set_epoch` (loss re-weighting, plug-ins, FASA, phases); from
    the phase's epoch `freeze_from` on, only parameters under the `trainable` prefixes train.
    Applied at every epoch start, so a resumed run is in the same state."""

    priority = "NORMAL"

    def __init__(self, freeze_from: int | None = None, trainable: Sequence[str] = ()):
        self.freeze_from, self.trainable = freeze_from, tuple(trainable)

    def before_train_epoch(self, runner) -> None:
        model = _unwrap(runner.model)
        model.set_epoch(runner.epoch)
        if self.freeze_from is not None and model.local_epoch(runner.epoch) >= self.freeze_from:
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith(self.trainable))


@HOOKS.register_module()
class ClsLRHook(Hook):
    """Per-epoch step schedule with linear warm-up, a function of the epoch alone (so resuming
    needs no scheduler state): epoch e of a phase gets lr * (e + 1) / warmup during the warm-up,
    then lr * gamma^(number of steps <= e). Every phase starts the schedule again."""

    priority = "NORMAL"

    def __init__(self, lr: float, warmup_epochs: int, steps: Sequence[int], gamma: float, phase_epochs: int):
        self.lr, self.warmup, self.steps, self.gamma = lr, warmup_epochs, tuple(steps), gamma
        self.phase_epochs = phase_epochs

    def lr_at(self, epoch: int) -> float:
        local = epoch % self.phase_epochs
        if local < self.warmup:
            return self.lr * (local + 1) / self.warmup
        return self.lr * self.gamma ** sum(local >= s for s in self.steps)

    def before_train_epoch(self, runner) -> None:
        lr = self.lr_at(runner.epoch)
        for group in runner.optim_wrapper.param_groups:
            group["lr"] = lr


@HOOKS.register_module()
class ClsFASAHook(Hook):
    """After each epoch: per-class validation signal on the validation split (eval mode, no
    gradient, no random draw), then `FASA.adapt`, and one line of fasa_state.jsonl in the
    detection hook's format. The split is balanced by construction, so the detection host's
    `val_balance` does not apply here."""

    priority = "LOW"  # after the optimizer and logger hooks, before CheckpointHook saves the state

    def __init__(self, dataset: str, frequency: Sequence[str], batch_size: int = 500,
                 max_images: int | None = None, subset_seed: int = 0, signal_norm: str = "class_mean",
                 class_names: Sequence[str] | None = None, class_counts: Sequence[int] | None = None,
                 split: str = "val", state_log: str = "fasa_state.jsonl",
                 norms_file: str = "classifier_norms.json"):
        self.dataset_name, self.split = dataset, split
        self.frequency = np.asarray(frequency)
        self.batch_size, self.max_images, self.subset_seed = batch_size, max_images, subset_seed
        self.signal_norm = signal_norm
        self.class_names, self.class_counts = class_names, class_counts
        self.state_log, self.norms_file = state_log, norms_file
        self._dataset = None

    def before_train(self, runner) -> None:
        log = Path(runner.work_dir) / self.state_log
        if log.exists():  # a resumed run redoes the epochs after its checkpoint
            rewrite_jsonl(log, [e for e in read_jsonl(log) if e["epoch"] < runner.epoch])

    def before_train_epoch(self, runner) -> None:
        _unwrap(runner.model).virtual_used = 0

    def _validation_set(self):
        if self._dataset is None:
            from fasa_cli.cls_ext.data import ClsArrayDataset

            self._dataset = ClsArrayDataset(self.dataset_name, self.split, self.max_images, self.subset_seed)
        return self._dataset

    @torch.no_grad()
    def validation_signal(self, model, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-class signal [C], valid [C]): mean loss or accuracy over the class's images
        ("official": the class's sum over all images of the pass, as the official code)."""
        data = self._validation_set()
        num_classes = model.num_classes
        device = next(model.parameters()).device
        total = torch.zeros(num_classes, dtype=torch.float64, device=device)
        count = torch.zeros(num_classes, dtype=torch.float64, device=device)
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(data), self.batch_size):
                batch = dict(inputs=data.images[start:start + self.batch_size],
                             label=data.labels[start:start + self.batch_size])
                batch = model.data_preprocessor(batch, training=False)
                loss, correct = model.validation_outputs(batch["inputs"], batch["label"])
                value = loss if kind == "loss" else correct
                total.index_add_(0, batch["label"], value.double())
                count.index_add_(0, batch["label"], torch.ones_like(value, dtype=torch.float64))
        finally:
            model.train(was_training)
        valid = count > 0
        norm = count.sum().clamp_min(1) if self.signal_norm == "official" else count.clamp_min(1)
        return (total / norm).float(), valid

    def after_train_epoch(self, runner) -> None:
        model = _unwrap(runner.model)
        fasa = model.fasa
        if fasa is None or not model.fasa_enabled():
            return
        if fasa.cfg.adaptive:
            signal, valid = self.validation_signal(model, fasa.cfg.signal)
            summary = fasa.adapt(signal, valid)
        else:  # static sampling never reads the signal: skip the pass
            signal = torch.zeros(fasa.cfg.num_classes)
            valid = torch.zeros(fasa.cfg.num_classes, dtype=torch.bool)
            summary = {"adapted": False, "static": True}
        from fasa_cli.mmdet_ext.hooks import _jsonable

        probs = fasa.probs.detach().cpu().numpy()
        record = {
            "epoch": runner.epoch, "iter": runner.iter,
            "probs": probs.round(8).tolist(),
            "group_mean_p": {g: float(probs[self.frequency == g].mean())
                             for g in ("r", "c", "f") if (self.frequency == g).any()},
            "n_virtual": model.virtual_used,
            "groups": fasa.groups.cpu().tolist(),
            "signal": [float(s) if v else None for s, v in zip(signal.cpu().tolist(), valid.cpu().tolist())],
            "adapt": _jsonable(summary),
        }
        append_jsonl(Path(runner.work_dir) / self.state_log, record)

    def after_train(self, runner) -> None:
        from fasa_cli.mmdet_ext.hooks import write_classifier_norms

        write_classifier_norms(_unwrap(runner.model), Path(runner.work_dir) / self.norms_file,
                               self.class_names, self.frequency.tolist(), self.class_counts)
