"""The hook of method plug-ins: the epoch for classifier-level plug-ins, and a method's
second training stage (from an epoch on, only some parameters train)."""

from __future__ import annotations

from typing import Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from fasa_cli.mmdet_ext.heads import plugin_hosts


@HOOKS.register_module()
class MethodEpochHook(Hook):
    """Before each training epoch: `set_plugin_epoch` on every plug-in host; from epoch
    `freeze_from` on, parameters outside the `trainable` prefixes get no gradient, so the
    run's remaining epochs are the method's second stage (batch-norm running statistics still
    update: the loop puts the model in train mode after this hook). Applied again at every
    epoch start, so a resumed run is in the same stage."""

    priority = "NORMAL"

    def __init__(self, freeze_from: int | None = None, trainable: Sequence[str] = ()):
        self.freeze_from = freeze_from
        self.trainable = tuple(trainable)

    def before_train_epoch(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for head in plugin_hosts(model):
            head.set_plugin_epoch(runner.epoch)
        if self.freeze_from is not None and runner.epoch >= self.freeze_from:
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith(self.trainable))
