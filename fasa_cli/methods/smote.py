"""SMOTE (Chawla et al., JAIR 2002) on RoI features, as the FASA paper re-implements it.

Paper (FASA Appendix): "interpolates neighboring features (i.e., feature embeddings of region
proposals)", k = 5 nearest neighbours by cosine distance, x_hat = lam * x_i + (1 - lam) * x_j,
lam a random value in (0, 1]. Where the papers are silent, this module chooses:
  - neighbours are of the same class (original SMOTE), drawn from the batch's other positives
    and a bounded per-class FIFO bank of earlier features (`bank_size` per class): a batch of
    a few images rarely holds two RoIs of one rare class;
  - anchors are the positives of the under-represented classes (LVIS rare + common; SMOTE
    oversamples the minority), one synthetic feature per anchor with a neighbour; an anchor
    without any same-class neighbour yields none;
  - synthetic features are detached and go through fc_cls and the host's classification loss
    with weight 0.1, as FASA's virtual features do (so only the classifier learns from them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.feature import ClassBank, ClassifierBatch, FeaturePlugin


class SMOTEArgs(MethodArgs):
    k: int = Field(5, ge=1)
    bank_size: int = Field(8, ge=0)
    loss_weight: float = Field(0.1, ge=0.0)
    anchors: str = Field("tail", pattern="^(tail|all)$")


def smote_samples(x: Tensor, labels: Tensor, anchor: Tensor, bank: Tensor, bank_valid: Tensor,
                  k: int) -> tuple[Tensor, Tensor, Tensor]:
    """One synthetic feature per anchor that has a same-class neighbour.

    x [P, d], labels [P]: the batch's positives; anchor [P] bool: which of them are anchors;
    bank [A, M, d], bank_valid [A, M]: each anchor's bank slots of its own class.
    Candidates of anchor i: its valid bank slots and the batch positives of its class other
    than i; the k most cosine-similar are kept and one is drawn uniformly; lam ~ U(0, 1].
    Returns (samples [S, d], their labels [S], index of each sample's anchor in x [S])."""
    index = anchor.nonzero().squeeze(1)
    xa, ya = x[index], labels[index]
    if index.numel() == 0:
        return xa, ya, index
    num_bank = bank.shape[1]
    unit = F.normalize(x, dim=1)
    sim_batch = unit[index] @ unit.T                                        # [A, P]
    valid_batch = (labels[None, :] == ya[:, None])
    valid_batch[torch.arange(len(index), device=x.device), index] = False  # not itself
    sim_bank = torch.einsum("ad,amd->am", unit[index], F.normalize(bank, dim=2))
    sim = torch.cat([sim_bank, sim_batch], dim=1)
    valid = torch.cat([bank_valid, valid_batch], dim=1)
    sim = sim.masked_fill(~valid, float("-inf"))
    top = min(k, sim.shape[1])
    top_sim, top_idx = sim.topk(top, dim=1)
    available = torch.isfinite(top_sim).sum(dim=1)                         # neighbours, <= k
    has = available > 0
    pick = (torch.rand(len(index), device=x.device) * available).long().clamp_max(top - 1)
    column = top_idx.gather(1, pick[:, None]).squeeze(1)
    from_bank = column < num_bank
    rows = torch.arange(len(index), device=x.device)
    partner = torch.where(from_bank[:, None], bank[rows, column.clamp_max(num_bank - 1)] if num_bank else xa,
                          x[(column - num_bank).clamp_min(0)])
    lam = 1.0 - torch.rand(len(index), 1, device=x.device)                 # (0, 1]
    samples = lam * xa + (1.0 - lam) * partner
    return samples[has], ya[has], index[has]


@register_method("smote", table="2", summary="SMOTE interpolation of RoI features (Chawla et al., 2002)",
                 args=SMOTEArgs, changes=("classifier loss: synthetic RoI features (box head plug-in)",))
class SMOTE(FeaturePlugin):
    def __init__(self, args: SMOTEArgs, num_classes, feat_dim, class_counts, class_frequency=None):
        super().__init__(args, num_classes, feat_dim, class_counts, class_frequency)
        self.bank = ClassBank(num_classes, args.bank_size, feat_dim)
        self.synthesized = 0

    def losses(self, batch: ClassifierBatch) -> dict[str, Tensor]:
        positive = batch.positive
        x, labels = batch.features[positive].detach(), batch.labels[positive]
        anchor = self.tail[labels] if self.args.anchors == "tail" else torch.ones_like(labels, dtype=torch.bool)
        bank = self.bank.features[labels[anchor]]
        samples, sample_labels, _ = smote_samples(x, labels, anchor, bank, self.bank.valid(labels[anchor]), self.args.k)
        self.bank.push(x, labels)
        self.synthesized += int(sample_labels.numel())
        logits = batch.classifier(samples)
        if sample_labels.numel() == 0:
            return {"smote": logits.sum() * 0.0}
        return {"smote": self.args.loss_weight * batch.samples_loss(logits, sample_labels)}
