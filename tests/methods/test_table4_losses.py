"""Table 4's classification losses (EQL v1, BAGS's group softmax, Seesaw) against hand-checked
values and mmdet's own losses, alone and through FASA's host head, and the thresholds scaled
to the embedded data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import CrossEntropyLoss, SeesawLoss
from mmdet.models.losses.seesaw_loss import seesaw_ce_loss
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead

import fasa_cli.mmdet_ext  # noqa: F401  (registers the losses)
from fasa_cli.methods._scaling import EQL_TAIL_SHARE, class_share_threshold
from fasa_cli.methods.bags import BAGSArgs, GroupLayout, class_groups, group_softmax_loss
from fasa_cli.methods.eql import EQLArgs, classifier_init_with_prior, eql_v1_weights, tail_classes
from fasa_cli.mmdet_ext.cls_losses import EQLv1Loss, GroupSoftmaxLoss, SourceAwareSeesawLoss, rois_source
from fasa_cli.mmdet_ext.heads import FASAShared2FCBBoxHead, ValidationLossCollector

C = 3


# ---------------------------------------------------------------------------------- EQL v1
def test_eql_with_lambda_zero_is_plain_sigmoid_bce():
    torch.manual_seed(0)
    logits = torch.randn(8, C, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1, C, C, 0, C])
    weights = torch.ones(8)
    tail = tail_classes([5, 50, 500], 1000, EQLArgs(lambda_=0.0, thresholds="lvis"), "lvis_v1")
    assert tail == [False, False, False]
    eql = EQLv1Loss(C, tail)(logits, labels, weights, avg_factor=8)
    onehot = torch.zeros(8, C)
    onehot[labels < C, labels[labels < C]] = 1.0
    plain = F.binary_cross_entropy_with_logits(logits, onehot, reduction="sum") / 8
    mmdet_bce = CrossEntropyLoss(use_sigmoid=True)(logits, labels, weights, avg_factor=8)
    assert torch.allclose(eql, plain) and torch.allclose(eql, mmdet_bce)
    # and on the scaled data a zero share puts no class in the tail either
    assert not any(tail_classes([5, 50, 500], 0, EQLArgs(tail_share=0.0), "embedded-small"))


def test_eql_drops_only_tail_negatives_from_other_classes_foreground_rois():
    tail = torch.tensor([False, True, False])
    labels = torch.tensor([0, 1, C])  # a head-class RoI, a tail-class RoI, a background RoI
    assert eql_v1_weights(labels, tail).tolist() == [[1, 0, 1], [1, 1, 1], [1, 1, 1]]
    logits = torch.zeros(3, C, requires_grad=True)
    EQLv1Loss(C, tail.tolist())(logits, labels).backward()
    grad = logits.grad
    assert grad[0, 1] == 0                       # class 0's RoI does not push the tail logit down
    assert grad[2, 1] > 0 and grad[1, 1] < 0     # background still does; its own RoI pulls it up
    assert grad[0, 2] > 0                        # a head class still gets the negative gradient


def test_eql_head_has_c_sigmoid_outputs_and_the_prior_bias():
    head = Shared2FCBBoxHead(in_channels=2, fc_out_channels=8, roi_feat_size=2, num_classes=C,
                             loss_cls=dict(type="EQLv1Loss", num_classes=C, tail=[False, True, True]),
                             init_cfg=classifier_init_with_prior(0.001))
    head.init_weights()
    assert head.fc_cls.out_features == C
    assert torch.allclose(head.fc_cls.bias, torch.full((C,), -math.log(999.0)), atol=1e-6)
    scores = head.loss_cls.get_activation(torch.zeros(2, C))
    assert scores.shape == (2, C + 1) and torch.all(scores[:, -1] == 0) and torch.allclose(scores[:, :C], torch.full((2, C), 0.5))
    # the rest of the init is mmdet's default for this head
    default = Shared2FCBBoxHead(in_channels=2, fc_out_channels=8, roi_feat_size=2, num_classes=C).init_cfg
    ours = [dict(c) for c in classifier_init_with_prior(0.001)]
    ours[0].pop("bias_prob")
    assert ours == default


def test_scaled_thresholds_follow_the_lvis_class_shares():
    assert class_share_threshold([0, 2, 30, 300], 0.5) == pytest.approx(2 * 150 ** 0.5)
    counts = list(range(1, 101))
    tail = tail_classes(counts, 0, EQLArgs(), "embedded-small")
    assert tail == [c < 100 ** EQL_TAIL_SHARE for c in counts]
    # on LVIS lambda applies to the image frequency, as eqlv2 does
    assert tail_classes([100, 120], 99388, EQLArgs(), "lvis_v1") == [True, False]
    assert class_groups([5, 10, 99, 100, 5000], BAGSArgs(), "lvis_v1") == [0, 1, 1, 2, 3]
    assert class_groups([5, 99, 5000], BAGSArgs(), "lvis_v1") == [0, 1, 2]  # empty bins dropped
    scaled = class_groups([2, 4, 10, 30, 100, 400], BAGSArgs(), "embedded-small")
    edges = [2 * 200 ** s for s in BAGSArgs().bin_shares]          # 4.8, 29.8, 127
    assert edges[0] < 10 < edges[1] < 30 < 100 < edges[2] < 400
    assert scaled == [0, 0, 1, 2, 2, 3]


# ---------------------------------------------------------------------------------- BAGS
# Classes 0 and 2 in object group 0, class 1 in group 1; columns: classes 0-2, others of
# groups 0 and 1 (3, 4), then the background group's foreground (5) and background (6).
GROUPS = [0, 1, 0]
# group 0: softmax(others 0, class 0 ln2, class 2 0) = (1/4, 1/2, 1/4); group 1: (others 0,
# class 1 ln3) = (1/4, 3/4); background group (fg ln4, bg 0) = (4/5, 1/5).
HAND = torch.tensor([[math.log(2), math.log(3), 0.0, 0.0, 0.0, math.log(4), 0.0]])


def test_group_outputs_targets_and_inference_on_a_hand_checked_example():
    layout = GroupLayout(GROUPS)
    assert layout.width == 7
    assert layout.columns.tolist() == [[3, 0, 2], [4, 1, -1], [5, 6, -1]]
    labels = torch.tensor([0, 1, 2, C])
    assert layout.targets(labels).tolist() == [[1, 0, 0], [0, 1, 0], [2, 0, 0], [0, 0, 1]]
    scores = layout.scores(HAND)
    assert torch.allclose(scores, torch.tensor([[0.5 * 0.8, 0.75 * 0.8, 0.25 * 0.8, 0.2]]))
    ce, _ = layout.cross_entropy(HAND.expand(4, 7), labels)
    expected = -torch.log(torch.tensor([[0.5, 0.25, 0.8], [0.25, 0.75, 0.8], [0.25, 0.25, 0.8], [0.25, 0.25, 0.2]]))
    assert torch.allclose(ce, expected)
    loss = GroupSoftmaxLoss(GROUPS)
    assert loss.get_cls_channels(C) == 7 and torch.allclose(loss.get_activation(HAND), scores)
    assert torch.allclose(loss.roi_loss(HAND.expand(4, 7), labels), expected.sum(dim=1))


def test_group_softmax_subsamples_others_to_eight_times_the_positives():
    layout = GroupLayout(GROUPS)
    labels = torch.tensor([1] + [C] * 9)  # one positive of group 1, nine background RoIs
    logits = HAND.expand(10, 7)
    torch.manual_seed(0)
    loss = group_softmax_loss(layout, logits, labels, None, ratio=8.0)
    # group 0 has no positive: nothing; group 1: its positive + 8 of the 9 others; background
    # group: all ten RoIs. Identical logits make the choice of others irrelevant.
    group1 = (-math.log(0.75) + 8 * -math.log(0.25)) / 9
    background = (-math.log(0.8) + 9 * -math.log(0.2)) / 10
    assert loss.item() == pytest.approx(group1 + background, rel=1e-6)
    # with every "others" kept, the loss is the mean over RoIs of the per-RoI loss FASA's
    # validation signal uses
    labels = torch.tensor([0, 1, 2, C])
    logits = torch.randn(4, 7)
    full = group_softmax_loss(layout, logits, labels, None, ratio=100.0)
    assert torch.allclose(full, GroupSoftmaxLoss(GROUPS).roi_loss(logits, labels).mean())


# ---------------------------------------------------------------------------------- Seesaw
NUM_ROIS = 8
LABELS = torch.tensor([0, 1, 1, 2, 2, 0, C, C])


def _seesaw_head(count_virtual: bool = False) -> FASAShared2FCBBoxHead:
    torch.manual_seed(0)
    head = FASAShared2FCBBoxHead(
        in_channels=2, fc_out_channels=8, roi_feat_size=2, num_classes=C,
        cls_predictor_cfg=dict(type="NormedLinear", tempearture=20.0),
        loss_cls=dict(type="SourceAwareSeesawLoss", num_classes=C, p=0.8, q=2.0, count_virtual=count_virtual),
        fasa=dict(start_epoch=0, scale=1e3), class_counts=[50, 10, 2])  # p = 1: every seen class
    head.init_weights()
    targets = (LABELS, torch.ones(NUM_ROIS), torch.zeros(NUM_ROIS, 4), torch.zeros(NUM_ROIS, 4))
    head.get_targets = lambda *args, **kwargs: targets
    return head


def _record_virtual(head) -> dict:
    seen = {}
    original = head.fasa.sample

    def sample():
        features, labels = original()
        seen.update(features=features, labels=labels)
        return features, labels

    head.fasa.sample = sample
    return seen


@pytest.mark.parametrize("count_virtual", [False, True])
def test_seesaw_through_the_fasa_host_head_is_mmdets_seesaw_loss(count_virtual):
    head = _seesaw_head(count_virtual)
    assert head.fc_cls.out_features == C + 2
    reference = SeesawLoss(p=0.8, q=2.0, num_classes=C)
    for step in range(2):  # the second step's weights depend on the first step's counts
        virtual = _record_virtual(head)
        cls_score, bbox_pred = head(torch.rand(NUM_ROIS, 2, 2, 2))
        losses = head.loss_and_target(cls_score, bbox_pred, torch.zeros(NUM_ROIS, 5), None, None)["loss_bbox"]
        real = reference(cls_score, LABELS, torch.ones(NUM_ROIS), avg_factor=NUM_ROIS)
        for key in ("loss_cls_objectness", "loss_cls_classes"):
            assert torch.equal(losses[key], real[key]), (step, key)
        assert virtual["labels"].tolist() == [0, 1, 2]
        logits = head.fc_cls(virtual["features"])
        if count_virtual:  # mmdet's loss as it is, counting the virtual RoIs too
            expected = sum(reference(logits, virtual["labels"]).values())
        else:  # weights from the real RoIs' counts only, and the counts left alone
            classes, objectness = logits[:, :C], logits[:, C:]
            expected = seesaw_ce_loss(classes, virtual["labels"], torch.ones(3), reference.cum_samples[:C], C,
                                      0.8, 2.0, 1e-2, "mean", None) + F.cross_entropy(objectness, torch.zeros(3, dtype=torch.long))
        assert torch.allclose(losses["loss_fasa"], 0.1 * expected, atol=1e-6), step
        assert torch.equal(head.loss_cls.cum_samples, reference.cum_samples), step
    real_counts = torch.bincount(LABELS, minlength=C + 1).float() * 2
    assert torch.equal(head.loss_cls.cum_samples, real_counts + (torch.tensor([1.0, 1, 1, 0]) * 2 if count_virtual else 0))


def test_fasas_validation_signal_uses_the_methods_loss_and_leaves_its_counts():
    head = _seesaw_head()
    cls_score, bbox_pred = head(torch.rand(NUM_ROIS, 2, 2, 2))
    head.loss_and_target(cls_score, bbox_pred, torch.zeros(NUM_ROIS, 5), None, None)  # counts real RoIs
    counts = head.loss_cls.cum_samples.clone()
    head.val_collector = ValidationLossCollector(C, torch.device("cpu"))
    cls_score, bbox_pred = head(torch.rand(NUM_ROIS, 2, 2, 2))
    head.loss_and_target(cls_score, bbox_pred, torch.zeros(NUM_ROIS, 5), None, None)
    assert torch.equal(head.loss_cls.cum_samples, counts)  # the validation pass is not counted
    fg = LABELS < C
    scores = cls_score.detach()[fg]
    per_roi = F.cross_entropy(scores[:, C:], torch.zeros(int(fg.sum()), dtype=torch.long), reduction="none") + \
        seesaw_ce_loss(scores[:, :C], LABELS[fg], None, counts[:C], C, 0.8, 2.0, 1e-2, "none")
    expected = torch.zeros(C, dtype=torch.float64).index_add_(0, LABELS[fg], per_roi.double())
    assert torch.allclose(head.val_collector.loss_sum, expected)
    signal, valid = head.val_collector.signal("metric")
    predicted = head.loss_cls.get_activation(scores).argmax(dim=1)
    hits = torch.zeros(C).index_add_(0, LABELS[fg], (predicted == LABELS[fg]).float())
    assert valid.all() and torch.allclose(signal, hits / torch.bincount(LABELS[fg], minlength=C))


def test_eql_and_group_softmax_give_the_validation_signal_their_own_per_roi_loss():
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 1, C])
    for loss, width in ((EQLv1Loss(C, [False, True, True]), C), (GroupSoftmaxLoss(GROUPS), 7)):
        logits = torch.randn(5, width)
        collector = ValidationLossCollector(C, torch.device("cpu"))
        collector.add(logits, labels, loss)
        fg = labels < C
        own = loss.roi_loss(logits[fg], labels[fg])
        assert torch.allclose(collector.loss_sum.float(), torch.zeros(C).index_add_(0, labels[fg], own))
    with pytest.raises(ValueError, match="per-RoI loss"):
        ValidationLossCollector(C, torch.device("cpu")).add(torch.randn(5, C + 2), labels, SeesawLoss(num_classes=C))


def test_rois_source_is_restored_and_checked():
    loss = SourceAwareSeesawLoss(num_classes=C)
    with rois_source(loss, "virtual"):
        assert loss.rois_source == "virtual" and not loss.counts_this_call()
    assert loss.rois_source == "real" and loss.counts_this_call()
    with pytest.raises(ValueError, match="RoI source"):
        with rois_source(loss, "fake"):
            pass
