"""Yin et al., CVPR 2019, "Feature Transfer Learning for Face Recognition with
Under-Represented Data", re-implemented on RoI features as FASA describes it (no public code).

The box head's fc_cls input g (the "rich" feature of the shared FCs) goes through a decoder
f = ReLU(Dec(g)) to the classifier (training and test time), and a reconstruction head R maps
f back: L_recon = mean ||R(f) - g||^2 over positive RoIs (FASA: "we apply the reconstruction
loss to the feature embedding of each positive region proposal"). Feature transfer: with class
centres c (running means of g) and Q, the top principal directions of the within-class
deviations of the regular classes, a positive of regular class i becomes a feature of an
under-represented class j: g_t = c_j + Q Q^T (g - c_i), classified as j. Table 14:
alpha_recon = 0.5, alpha_reg = 0.25. Choices where the papers are silent:
  - regular = LVIS frequent classes, under-represented = rare + common; the target j of each
    transferred feature is drawn with probability proportional to 1 / (training count);
  - Dec and R are d x d linear layers initialised to the identity (the head starts as the
    baseline's); the reconstruction target g is detached (R and Dec learn, the shared FCs not);
  - the "m-L2" regulariser is read as decorrelating the classifier's class directions:
    L_reg = mean over pairs of distinct classes present in the batch of (w_a . w_b)^2 on
    unit-normalised fc_cls rows;
  - Q has `pca_rank` = 64 directions, recomputed (eigh of a running covariance, momentum 0.1)
    at the start of every epoch; the two-stage alternation is replaced by one schedule: epoch
    0 trains without transfer (the "pre-trained model" of stage 1), transfer is on from
    `start_epoch` = 1 with all layers training, the transferred features detached and
    weighted 0.1 as FASA's virtual features are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.feature import ClassifierBatch, FeaturePlugin


class YinArgs(MethodArgs):
    alpha_recon: float = Field(0.5, ge=0.0)
    alpha_reg: float = Field(0.25, ge=0.0)
    transfer_weight: float = Field(0.1, ge=0.0)
    pca_rank: int = Field(64, ge=1)
    momentum: float = Field(0.1, gt=0.0, le=1.0)
    start_epoch: int = Field(1, ge=0)


def transfer_features(g: Tensor, source: Tensor, target: Tensor, centres: Tensor, basis: Tensor) -> Tensor:
    """g_t = c_target + Q Q^T (g - c_source), for g [N, d], classes [N], centres [C, d], Q [d, k]."""
    deviation = g - centres[source]
    return centres[target] + (deviation @ basis) @ basis.T


def weight_decorrelation(weight: Tensor, classes: Tensor) -> Tensor:
    """Mean squared cosine between the distinct rows `classes` of `weight` (0 for < 2 classes)."""
    rows = F.normalize(weight[classes.unique()], dim=1)
    if rows.shape[0] < 2:
        return weight.sum() * 0.0
    gram = rows @ rows.T
    off = ~torch.eye(rows.shape[0], dtype=torch.bool, device=weight.device)
    return gram[off].square().mean()


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


@register_method("yin", table="2", summary="Feature transfer learning (Yin et al., CVPR'19)", args=YinArgs,
                 changes=("box head: decoder before fc_cls, reconstruction head",
                          "classifier loss: transferred features, reconstruction, regulariser (box head plug-in)"))
class Yin(FeaturePlugin):
    def __init__(self, args: YinArgs, num_classes, feat_dim, class_counts, class_frequency=None):
        super().__init__(args, num_classes, feat_dim, class_counts, class_frequency)
        self.decoder = _identity_linear(feat_dim)
        self.reconstruct = _identity_linear(feat_dim)
        self.register_buffer("centres", torch.zeros(num_classes, feat_dim))
        self.register_buffer("centre_seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("covariance", torch.zeros(feat_dim, feat_dim))
        self.register_buffer("covariance_seen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("basis", torch.zeros(feat_dim, min(args.pca_rank, feat_dim)))
        self.register_buffer("basis_ready", torch.zeros((), dtype=torch.bool))
        self._rich: Tensor | None = None

    def init_weights(self) -> None:
        """Keep the identity start when the host (mmengine) initialises the head's weights."""
        with torch.no_grad():
            for layer in (self.decoder, self.reconstruct):
                layer.weight.copy_(torch.eye(self.feat_dim))
                layer.bias.zero_()

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if epoch >= self.args.start_epoch and bool(self.covariance_seen):
            _, vectors = torch.linalg.eigh(self.covariance.double())
            self.basis.copy_(vectors[:, -self.basis.shape[1]:].to(self.basis.dtype))
            self.basis_ready.fill_(True)

    def transform(self, x: Tensor) -> Tensor:
        self._rich = x
        return F.relu(self.decoder(x))

    @torch.no_grad()
    def _update_statistics(self, g: Tensor, labels: Tensor) -> None:
        counts = torch.bincount(labels, minlength=self.num_classes)
        present = counts > 0
        mean = torch.zeros_like(self.centres).index_add_(0, labels, g) / counts.clamp_min(1)[:, None]
        m = torch.where(self.centre_seen, self.args.momentum, 1.0)[:, None]
        self.centres.copy_(torch.where(present[:, None], torch.lerp(self.centres, mean, m), self.centres))
        self.centre_seen |= present
        regular = ~self.tail[labels]
        if bool(regular.any()):
            deviation = g[regular] - self.centres[labels[regular]]
            batch_cov = deviation.T @ deviation / deviation.shape[0]
            m = self.args.momentum if bool(self.covariance_seen) else 1.0
            self.covariance.lerp_(batch_cov, m)
            self.covariance_seen.fill_(True)

    def losses(self, batch: ClassifierBatch) -> dict[str, Tensor]:
        rich, self._rich = self._rich, None
        positive = batch.positive
        f, g, labels = batch.features[positive], rich[positive], batch.labels[positive]
        recon = (self.reconstruct(f) - g.detach()).square().mean(dim=1).mean() if f.shape[0] else f.sum() * 0.0
        out = {"yin_recon": self.args.alpha_recon * recon,
               "yin_reg": self.args.alpha_reg * weight_decorrelation(batch.classifier.weight, labels)}
        self._update_statistics(g.detach(), labels)
        out["yin_transfer"] = self._transfer_loss(batch, g.detach(), labels)
        return out

    def _transfer_loss(self, batch: ClassifierBatch, g: Tensor, labels: Tensor) -> Tensor:
        source = ~self.tail[labels]
        targets = self.tail & self.centre_seen
        zero = batch.classifier(self.transform_only(g[:0])).sum() * 0.0
        if self.epoch < self.args.start_epoch or not bool(self.basis_ready) or not bool(source.any()) \
                or not bool(targets.any()):
            return zero
        weights = targets.float() / self.class_counts.clamp_min(1).float()
        target = torch.multinomial(weights, int(source.sum()), replacement=True)
        moved = transfer_features(g[source], labels[source], target, self.centres, self.basis)
        logits = batch.classifier(self.transform_only(moved))
        return self.args.transfer_weight * batch.samples_loss(logits, target)

    def transform_only(self, g: Tensor) -> Tensor:
        """The decoder without recording g (for transferred features)."""
        return F.relu(self.decoder(g))
