"""The classifier host: backbone -> pooled feature x -> plug-ins' transform -> `fc_cls` -> loss,
with FASA on x (the feature the classifier sees, as on a box head's fc_cls input) and
classifier-level plug-ins (fasa_cli.methods.feature) hosted as the box head hosts them.

Per training batch (mode "loss"):
  x = features(images); logits = fc_cls(x); loss_cls = loss(logits, y)
  fc_cls.observe(x)                     real features only (TDE's moving mean)
  plug-ins: ClassifierBatch of x, y, logits, fc_cls and the run's loss -> loss_<name> terms
  FASA: fasa.update(x, y); loss_fasa = fasa.virtual_loss(fc_cls, loss): one Bernoulli(p_c) draw
        per class, one virtual feature per selected class, through the same classifier and loss
Epochs reach the parts through `set_epoch` (ClsEpochHook); a model with a pre-training phase
(M2mClassifier) maps the run's epoch to its phase and the phase's own epoch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS
from torch import Tensor, nn

from fasa_cli.core import FASA, FASAConfig
from fasa_cli.methods.cls_api import CrossEntropyLoss, LinearClassifier, build_part


@MODELS.register_module()
class ClsDataPreprocessor(BaseDataPreprocessor):
    """uint8 images -> [0, 1] -> (training) zero-padded random crop + horizontal flip -> optional
    area down-sampling to `size` -> normalised. Random draws use the global torch generator,
    which RNGStateHook checkpoints, so a resumed run draws the same crops."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 4, flip: bool = True,
                 size: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.pad, self.flip, self.size = pad, flip, size

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        images = data["inputs"]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if training:
            images = crop_and_flip(images, self.pad, self.flip)
        if self.size is not None and self.size != images.shape[-1]:
            images = F.adaptive_avg_pool2d(images, self.size)
        return dict(inputs=self.normalize(images), label=data.get("label"))

    def normalize(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean) / self.std

    def denormalize(self, inputs: Tensor) -> Tensor:
        return inputs * self.std + self.mean


def crop_and_flip(images: Tensor, pad: int, flip: bool) -> Tensor:
    """Per image: a random crop of the zero-padded image (RandomCrop(size, padding=pad)) and a
    horizontal flip with probability 0.5, vectorised over the batch."""
    b, _, h, w = images.shape
    if pad > 0:
        offsets = torch.randint(0, 2 * pad + 1, (b, 2), device=images.device)
    else:
        offsets = torch.zeros(b, 2, dtype=torch.long, device=images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)
    if flip:
        flipped = torch.rand(b, device=images.device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    padded = F.pad(images, (pad, pad, pad, pad))
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


@MODELS.register_module()
class ClsModel(BaseModel):
    """An image classifier hosting FASA and classifier-level method plug-ins."""

    def __init__(self, backbone: dict, classifier: dict, loss: dict, num_classes: int,
                 class_counts: Sequence[int], class_frequency: Sequence[str] | None = None,
                 fasa: dict | None = None, plugins: Sequence[dict] = (), phase_epochs: int | None = None,
                 data_preprocessor: dict | None = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if len(class_counts) != num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries for {num_classes} classes")
        self.num_classes = num_classes
        self.phase_epochs = phase_epochs
        self.backbone = build_part(backbone)
        feat_dim = self.backbone.out_dim
        self.fc_cls = build_part(classifier, in_features=feat_dim, num_classes=num_classes)
        self.loss_fn = build_part(loss, class_counts=class_counts)
        self.feature_plugins = nn.ModuleDict(self._plugins(plugins, feat_dim, class_counts, class_frequency))
        # Built after the plug-ins: FASA models the features fc_cls really sees.
        self.fasa = FASA(FASAConfig(num_classes=num_classes, feat_dim=feat_dim, **fasa), class_counts) if fasa is not None else None
        self.virtual_used = 0  # virtual features since the last reset (for the state log)
        self.epoch = 0

    def _plugins(self, plugins, feat_dim, class_counts, class_frequency) -> dict:
        from fasa_cli.methods import get_method

        modules = {}
        for spec in plugins:
            method = get_method(spec["name"])
            modules[spec["name"]] = method.feature(method.resolve_args(spec.get("args")), self.num_classes,
                                                   feat_dim, list(class_counts), class_frequency)
        return modules

    # -- epochs ------------------------------------------------------------------------------
    def local_epoch(self, epoch: int) -> int:
        """The epoch within the current phase (the run's epoch when there is one phase)."""
        return epoch % self.phase_epochs if self.phase_epochs else epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        local = self.local_epoch(self.epoch)
        self.loss_fn.set_epoch(local)
        for plugin in self.feature_plugins.values():
            plugin.set_epoch(local)
        if self.fasa is not None:
            self.fasa.set_epoch(local)

    def fasa_enabled(self) -> bool:
        """Whether this epoch trains the network FASA augments (M2m's pre-training does not)."""
        return self.fasa is not None

    # -- forward -----------------------------------------------------------------------------
    def features(self, inputs: Tensor) -> Tensor:
        x = self.backbone(inputs)
        for plugin in self.feature_plugins.values():
            x = plugin.transform(x)
        return x

    def forward(self, inputs: Tensor, label: Tensor | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, label)
        logits = self.fc_cls.predict(self.features(inputs))
        if mode == "predict":
            return [dict(pred=logits.argmax(dim=1), label=label)]
        return logits

    def loss(self, inputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        x = self.features(inputs)
        logits = self.fc_cls(x)
        losses = {"loss_cls": self.loss_fn(logits, labels)}
        self.fc_cls.observe(x.detach())
        if len(self.feature_plugins):
            losses.update(self._plugin_losses(x, labels, logits))
        if self.fasa is not None and self.fasa_enabled():
            self.fasa.update(x, labels)
            losses["loss_fasa"] = self.fasa.virtual_loss(self._classify_virtual, self.loss_fn)
        return losses

    def _plugin_losses(self, x: Tensor, labels: Tensor, logits: Tensor) -> dict[str, Tensor]:
        from fasa_cli.methods.feature import ClassifierBatch, add_plugin_losses

        batch = ClassifierBatch(features=x, labels=labels, weights=torch.ones_like(labels, dtype=x.dtype),
                                cls_score=logits, num_classes=self.num_classes, classifier=self.fc_cls,
                                rois_loss=self.loss_fn, samples_loss=self.loss_fn)
        return add_plugin_losses(self.feature_plugins, batch, {})

    def _classify_virtual(self, features: Tensor) -> Tensor:
        self.virtual_used += features.shape[0]
        return self.fc_cls(features)

    @torch.no_grad()
    def validation_outputs(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Per image: the run's loss without class weights (on the training logits), and
        whether the prediction (inference logits) is right. The caller sets eval mode."""
        x = self.features(inputs)
        loss = self.loss_fn.per_sample(self.fc_cls(x), labels)
        return loss, self.fc_cls.predict(x).argmax(dim=1) == labels


class ClsNet(nn.Module):
    """A plain backbone + classifier, for a second network (M2m's g)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module):
        super().__init__()
        self.backbone, self.classifier = backbone, classifier

    def forward(self, inputs: Tensor) -> Tensor:
        return self.classifier(self.backbone(inputs))


@MODELS.register_module()
class M2mClassifier(ClsModel):
    """M2m's two networks in one run: phase 0 trains the baseline g (ERM: linear classifier,
    cross-entropy) for `phase_epochs`; phase 1 trains f (this model's own parts) with g frozen,
    translating majority images into minority slots from f's epoch `m2m.warm_epoch` on."""

    def __init__(self, *, m2m: dict, phase_epochs: int, backbone: dict, num_classes: int,
                 class_counts: Sequence[int], **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, class_counts=class_counts,
                         phase_epochs=phase_epochs, **kwargs)
        from fasa_cli.methods.m2m import M2mArgs

        settings = dict(m2m)
        self.warm_epoch = int(settings.pop("warm_epoch"))
        self.m2m = M2mArgs(**settings)
        g_backbone = build_part(dict(backbone, variant="plain") if "variant" in backbone else backbone)
        self.g = ClsNet(g_backbone, LinearClassifier(g_backbone.out_dim, num_classes))
        self.g_loss = CrossEntropyLoss(class_counts)
        self.register_buffer("class_counts_t", torch.as_tensor(list(class_counts), dtype=torch.float32),
                             persistent=False)
        self.phase = 0
        self.generated = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.phase = min(epoch // self.phase_epochs, 1)
        self.g.requires_grad_(self.phase == 0)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.phase == 1:
            self.g.eval()  # g is a fixed, pre-trained network in f's phase
        return self

    def fasa_enabled(self) -> bool:
        return self.fasa is not None and self.phase == 1

    def loss(self, inputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        if self.phase == 0:
            return {"loss_g": self.g_loss(self.g(inputs), labels)}
        if self.local_epoch(self.epoch) < self.warm_epoch:
            return super().loss(inputs, labels)
        inputs, labels, generated = self._major_to_minor(inputs, labels)
        losses = super().loss(inputs, labels)
        # Logged beside the losses (not summed: the key holds no "loss").
        losses["m2m_generated"] = torch.tensor(float(generated), device=inputs.device)
        return losses

    def _major_to_minor(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]:
        from fasa_cli.methods.m2m import major_to_minor

        pre = self.data_preprocessor
        pixels = pre.denormalize(inputs)
        was_training = self.training
        self.eval()  # both networks translate in eval mode (batch-norm statistics untouched)
        try:
            new_pixels, new_labels, info = major_to_minor(
                lambda p: self.g(pre.normalize(p)), lambda p: self.fc_cls(self.backbone(pre.normalize(p))),
                pixels, labels, self.class_counts_t, self.m2m)
        finally:
            self.train(was_training)
        self.generated += info["generated"]
        return pre.normalize(new_pixels), new_labels, info["generated"]
