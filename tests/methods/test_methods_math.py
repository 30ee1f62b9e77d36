"""Each method's math on inputs small enough to check by hand (plain PyTorch, no mmdet)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fasa_cli.methods.chu import Chu, ChuArgs, channel_cam, fuse, pick_partners
from fasa_cli.methods.feature import ClassBank, ClassifierBatch, tail_mask
from fasa_cli.methods.liu import Liu, LiuArgs, cosine, margin_logits
from fasa_cli.methods.moex import MoEx, MoExArgs, moment_exchange
from fasa_cli.methods.smote import SMOTE, SMOTEArgs, smote_samples
from fasa_cli.methods.yin import Yin, YinArgs, transfer_features, weight_decorrelation

C, D = 3, 4  # classes, feature size; background label = C


def _batch(features, labels, classifier, scores=None):
    labels = torch.as_tensor(labels)
    weights = torch.ones(len(labels))
    return ClassifierBatch(
        features=features, labels=labels, weights=weights,
        cls_score=classifier(features) if scores is None else scores, num_classes=C, classifier=classifier,
        rois_loss=lambda logits, y, w: (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum().clamp_min(1),
        samples_loss=lambda logits, y: F.cross_entropy(logits, y))


def _on_segment(p, a, b) -> bool:
    """p lies on the segment a-b (p = lam a + (1 - lam) b with lam in (0, 1])."""
    direction = a - b
    lam = torch.dot(p - b, direction) / direction.dot(direction)
    return bool(torch.allclose(lam * a + (1 - lam) * b, p, atol=1e-6)) and 0.0 < float(lam) <= 1.0 + 1e-6


# -- SMOTE -----------------------------------------------------------------------------------------

def test_a_smote_sample_lies_between_two_features_of_its_class():
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])  # class 0 has two features, the others one each
    anchor = torch.ones(4, dtype=torch.bool)
    empty_bank = torch.zeros(4, 0, D)
    samples, sample_labels, source = smote_samples(x, labels, anchor, empty_bank, torch.zeros(4, 0, dtype=torch.bool), k=5)
    assert sample_labels.tolist() == [0, 0] and source.tolist() == [0, 1]  # lone features make none
    assert _on_segment(samples[0], x[0], x[1]) and _on_segment(samples[1], x[1], x[0])


def test_smote_takes_the_k_nearest_by_cosine_from_batch_and_bank():
    torch.manual_seed(1)
    x = torch.tensor([[1.0, 0.0, 0, 0]])                     # one anchor of class 1
    labels = torch.tensor([1])
    bank = torch.tensor([[[0.9, 0.1, 0, 0], [0.0, 1.0, 0, 0], [5.0, 0.2, 0, 0]]])  # its class's bank
    valid = torch.tensor([[True, True, False]])             # the third slot is empty
    for _ in range(20):                                     # k = 1: always the nearest valid one
        samples, _, _ = smote_samples(x, labels, torch.tensor([True]), bank, valid, k=1)
        assert _on_segment(samples[0], x[0], bank[0, 0])


def test_smote_plugin_keeps_a_bounded_bank_and_adds_a_loss():
    torch.manual_seed(2)
    plugin = SMOTE(SMOTEArgs(bank_size=2), C, D, class_counts=[100, 5, 1], class_frequency=["f", "c", "r"])
    fc = torch.nn.Linear(D, C + 1)
    x = torch.rand(6, D)
    batch = _batch(x, [1, 1, 1, 2, 0, C], fc)
    loss = plugin.losses(batch)["smote"]
    assert loss.requires_grad and loss.item() > 0
    assert plugin.bank.filled.tolist() == [1, 2, 1]          # class 1 keeps its last 2 of 3
    assert torch.equal(plugin.bank.features[1], x[1:3])
    assert plugin.synthesized == 3                           # tail anchors 1, 1, 1 (class 2 alone)


def test_class_bank_is_a_fifo_per_class():
    bank = ClassBank(2, 2, 1)
    bank.push(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([0, 1, 0]))
    bank.push(torch.tensor([[4.0]]), torch.tensor([0]))
    assert bank.features[0].flatten().tolist() == [4.0, 3.0] and bank.features[1].flatten().tolist() == [2.0, 0.0]
    assert bank.valid(torch.tensor([0, 1])).tolist() == [[True, True], [True, False]]


# -- MoEx ------------------------------------------------------------------------------------------

def test_moment_exchange_swaps_each_rows_mean_and_std():
    x = torch.tensor([[0.0, 2.0], [10.0, 14.0]])            # means 1, 12; stds 1, 2
    mixed = moment_exchange(x, torch.tensor([1, 0]), eps=0.0)
    assert torch.allclose(mixed, torch.tensor([[10.0, 14.0], [0.0, 2.0]]))
    assert torch.allclose(moment_exchange(x, torch.tensor([0, 1]), eps=0.0), x)  # identity perm


def test_moex_with_p_zero_is_the_identity_and_with_p_one_mixes_targets():
    fc = torch.nn.Linear(D, C + 1)
    x = torch.rand(5, D)
    batch = _batch(x, [0, 1, 2, C, C], fc)
    assert MoEx(MoExArgs(p=0.0), C, D, [1, 1, 1]).cls_loss(batch) is None
    torch.manual_seed(3)
    loss = MoEx(MoExArgs(p=1.0, lam=1.0), C, D, [1, 1, 1]).cls_loss(batch)
    torch.manual_seed(3)
    perm = torch.randperm(5)
    expected = F.cross_entropy(fc(moment_exchange(x, perm, 1e-5)), batch.labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# -- Liu -------------------------------------------------------------------------------------------

def test_liu_with_no_margin_and_no_transfer_is_a_cosine_classifier():
    torch.manual_seed(4)
    x, w = torch.rand(5, D), torch.randn(C + 1, D)
    labels, positive = torch.tensor([0, 1, 2, C, C]), torch.tensor([True, True, True, False, False])
    logits = margin_logits(cosine(x, w), labels, positive, torch.zeros(5), s=20.0, m_a=0.0)
    expected = 20.0 * (x / x.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    assert torch.allclose(logits, expected, atol=1e-4)


def test_liu_margin_lowers_only_the_target_logit_of_positives():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.0, 1.0]])  # 45 degrees from class 0's row
    labels, positive = torch.tensor([0, 2]), torch.tensor([True, False])
    logits = margin_logits(cosine(x, w), labels, positive, torch.zeros(2), s=2.0, m_a=0.1)
    assert logits[0, 0].item() == pytest.approx(2.0 * math.cos(math.pi / 4 + 0.1), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(2.0 * math.cos(math.pi / 4), abs=1e-5)
    assert torch.allclose(logits[1], 2.0 * cosine(x, w)[1])   # background row: plain cosine


def test_liu_transfers_the_head_tail_gap_in_angular_variance():
    plugin = Liu(LiuArgs(), C, D, class_counts=[100, 10, 1], class_frequency=["f", "c", "r"])
    plugin.angle_var.copy_(torch.tensor([0.09, 0.04, 0.10]))
    plugin.angle_seen.fill_(True)
    torch.manual_seed(5)
    alpha = plugin.transferred_angle(torch.tensor([0, 1, 1, 2]))
    assert alpha[0] == 0 and alpha[3] == 0                   # head class; tail wider than head
    torch.manual_seed(5)
    expected = (torch.randn(4) * torch.tensor([0.0, 0.05 ** 0.5, 0.05 ** 0.5, 0.0])).abs()
    assert torch.allclose(alpha, expected)


# -- Yin -------------------------------------------------------------------------------------------

def test_yin_transfer_moves_the_projected_deviation_to_the_target_centre():
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    basis = torch.tensor([[1.0], [0.0]])                     # keep only the first direction
    g = torch.tensor([[2.0, 3.0]])
    moved = transfer_features(g, torch.tensor([0]), torch.tensor([1]), centres, basis)
    assert moved.tolist() == [[12.0, 10.0]]


def test_yin_starts_as_the_identity_and_regularises_class_directions():
    plugin = Yin(YinArgs(), C, D, class_counts=[100, 10, 1], class_frequency=["f", "c", "r"])
    x = torch.rand(3, D)
    assert torch.allclose(plugin.transform(x), x)            # post-ReLU input: ReLU(I x) = x
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert weight_decorrelation(w, torch.tensor([0, 1])).item() == pytest.approx(0.0)
    assert weight_decorrelation(w, torch.tensor([0, 2, 2])).item() == pytest.approx(0.5)


def test_yin_plugin_transfers_from_epoch_one_after_estimating_its_basis():
    torch.manual_seed(6)
    plugin = Yin(YinArgs(pca_rank=2), C, D, class_counts=[100, 10, 1], class_frequency=["f", "c", "r"])
    fc = torch.nn.Linear(D, C + 1)
    for epoch in (0, 1):
        plugin.set_epoch(epoch)
        g = torch.rand(6, D)
        f = plugin.transform(g)
        out = plugin.losses(_batch(f, [0, 0, 1, 2, C, 0], fc))
        assert set(out) == {"yin_recon", "yin_reg", "yin_transfer"}
    assert bool(plugin.basis_ready) and out["yin_transfer"].item() > 0


# -- Chu -------------------------------------------------------------------------------------------

def test_channel_cam_and_fusion_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    w = torch.tensor([[1.0, 1.0, -1.0, 0.5]])
    cam = channel_cam(x, w, torch.tensor([0]))               # activations 1, 2, 0, 2 -> /2
    assert cam.tolist() == [[0.5, 1.0, 0.0, 1.0]]
    tail, partner = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[9.0, 8.0, 7.0, 6.0]])
    fused = fuse(tail, torch.tensor([[0.9, 0.1, 0.1, 0.1]]), partner, torch.tensor([[0.0, 0.2, 0.9, 0.5]]), 0.3, 0.6)
    assert fused.tolist() == [[1.0, 8.0, 0.0, 6.0]]          # specific | generic | dropped | generic


def test_pick_partners_takes_at_most_n_a_valid_columns():
    valid = torch.tensor([[True, False, True, True], [False, False, False, False]])
    rows, cols = pick_partners(valid, 2)
    assert rows.tolist() == [0, 0] and set(cols.tolist()) <= {0, 2, 3}


def test_chu_fuses_tail_positives_with_their_confusing_classes_in_the_batch():
    torch.manual_seed(7)
    plugin = Chu(ChuArgs(n_f=1), C, D, class_counts=[100, 10, 1], class_frequency=["f", "c", "r"])
    fc = torch.nn.Linear(D, C + 1)
    x = torch.rand(4, D)
    scores = torch.tensor([[5.0, 0, 0, 0], [4.0, 1, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0]])  # class 1 looks like 0
    batch = _batch(x, [0, 1, 2, C], fc, scores=scores)
    assert plugin.losses(batch)["chu"].item() == 0.0 and plugin.fused == 0   # phase I (epoch 0)
    plugin.set_epoch(1)
    assert plugin.confusing_classes()[1].tolist() == [0]
    loss = plugin.losses(batch)["chu"]
    assert loss.item() > 0 and plugin.fused == 2             # tail anchors 1 and 2, one partner each (n_f = 1)


def test_tail_is_lvis_rare_and_common():
    assert tail_mask(["r", "c", "f"], [1, 2, 3]).tolist() == [True, True, False]
    assert tail_mask(None, [1, 5, 100]).tolist() == [True, True, False]
