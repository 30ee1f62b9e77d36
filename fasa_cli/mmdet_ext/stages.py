"""The frozen second stage of a two-stage method (cRT, BAGS: fasa_cli.backend.stages)."""

from __future__ import annotations

from typing import Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS
from torch import nn


@HOOKS.register_module()
class FrozenStageHook(Hook):
    """Only parameters under the `trainable` prefixes train; everything else is frozen: no
    gradient (so no optimizer step or weight decay touches it), and batch-norm layers without
    a trainable parameter stay in eval mode, keeping the first stage's statistics. Applied at
    every epoch start (requires_grad) and every iteration (the loop and FASA's validation pass
    put the model back in train mode), so a resumed run is frozen the same way."""

    priority = "NORMAL"

    def __init__(self, trainable: Sequence[str]):
        if not trainable:
            raise ValueError("FrozenStageHook needs at least one trainable prefix")
        self.trainable = tuple(trainable)

    def _model(self, runner) -> nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train_epoch(self, runner) -> None:
        model = self._model(runner)
        names = [name for name, param in model.named_parameters() if name.startswith(self.trainable)]
        if not names:
            raise ValueError(f"no parameter of the model starts with {self.trainable}")
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(self.trainable))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        for module in self._model(runner).modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
