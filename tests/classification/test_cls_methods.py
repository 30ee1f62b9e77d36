"""The classification methods' math on hand-made inputs: LDAM's margins and DRW's switch,
TDE's counterfactual removal and moving mean, M2m's slot filling, the class-balanced sampler
and the warm-up/step learning rate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fasa_cli.methods.ldam import LDAMArgs, LDAMLoss, drw_weights, ldam_margins
from fasa_cli.methods.m2m import M2mArgs, major_to_minor
from fasa_cli.methods.tde import CausalNormClassifier


def test_ldam_margin_per_class_follows_n_to_the_minus_quarter():
    # n^(-1/4) = 1/sqrt(10), 1/2, 1 -> scaled so the rarest class gets max_m = 0.5
    margins = ldam_margins([100, 16, 1], max_m=0.5)
    assert torch.allclose(margins, torch.tensor([0.5 / math.sqrt(10), 0.25, 0.5]), atol=1e-6)
    assert torch.allclose(ldam_margins([81, 81], max_m=0.3), torch.tensor([0.3, 0.3]))


def test_ldam_loss_lowers_the_true_logit_by_its_margin_and_scales_by_s():
    loss = LDAMLoss([100, 16, 1], max_m=0.5, s=30.0)
    logits = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.4, 0.5]])
    labels = torch.tensor([2, 1])
    shifted = logits.clone()
    shifted[0, 2] -= 0.5
    shifted[1, 1] -= 0.25
    expected = F.cross_entropy(30.0 * shifted, labels, reduction="none")
    assert torch.allclose(loss.per_sample(logits, labels), expected)
    assert torch.allclose(loss(logits, labels), expected.mean())


def test_drw_weights_switch_at_the_deferred_epoch():
    counts = [500, 100, 5]
    loss = LDAMLoss(counts, drw_from=160, drw_beta=0.9999)
    beta = 0.9999
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in counts])
    expected = raw / raw.sum() * 3
    loss.set_epoch(159)
    assert torch.equal(loss.class_weight, torch.ones(3))
    loss.set_epoch(160)
    assert torch.allclose(loss.class_weight, expected) and torch.allclose(drw_weights(counts), expected)
    assert loss.class_weight[2] > loss.class_weight[1] > loss.class_weight[0]
    # The weighted mean is sum(w l) / sum(w), as PyTorch's weighted cross-entropy.
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 2, 1])
    w = expected[labels]
    assert torch.allclose(loss(logits, labels), (w * loss.per_sample(logits, labels)).sum() / w.sum())
    loss.set_epoch(3)  # a resumed run back before the switch gets uniform weights again
    assert torch.equal(loss.class_weight, torch.ones(3))


def test_the_ldam_edit_defers_reweighting_to_epoch_160_of_200(cls_view):
    from fasa_cli.methods.ldam import ldam

    view = cls_view(epochs=200)
    ldam(view, LDAMArgs())
    assert view.model["loss"]["drw_from"] == 160 and view.model["classifier"]["type"].endswith("CosineClassifier")
    view = cls_view(epochs=30)
    ldam(view, LDAMArgs(drw=False))
    assert view.model["loss"]["drw_from"] is None


def test_tde_removes_the_counterfactual_direction_at_inference():
    clf = CausalNormClassifier(4, 2, heads=2, tau=16.0, gamma=0.0, alpha=1.5)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))
        clf.embed_mean.copy_(torch.tensor([2.0, 0.0, 0.0, 3.0]))
    x = torch.tensor([[3.0, 4.0, 1.0, 1.0]])
    # Head 1: x = (0.6, 0.8), d = (1, 0): cos 0.6 -> (0.6 - 0.9, 0.8) = (-0.3, 0.8).
    # Head 2: x = (1, 1)/sqrt2, d = (0, 1): cos 1/sqrt2 -> (1/sqrt2, 1/sqrt2 - 1.5/sqrt2).
    r = 1 / math.sqrt(2)
    removed = torch.tensor([[[-0.3, 0.8], [r, r - 1.5 * r]]])
    assert torch.allclose(clf.counterfactual_removed(x), removed, atol=1e-6)
    # Logits: (tau / K) * sum_k <x_k, w_ck / |w_ck|>, unit weights here.
    expected = 8.0 * torch.tensor([[-0.3 + (r - 1.5 * r), 0.8 + r]])
    assert torch.allclose(clf.predict(x), expected, atol=1e-5)
    training = 8.0 * torch.tensor([[0.6 + r, 0.8 + r]])
    assert torch.allclose(clf(x), training, atol=1e-5)  # training logits keep the direction


def test_tde_classifies_an_empty_batch():
    # FASA calls the classifier on no virtual feature at all when no class is drawn.
    clf = CausalNormClassifier(4, 3)
    assert clf(torch.zeros(0, 4)).shape == (0, 3) and clf.predict(torch.zeros(0, 4)).shape == (0, 3)


def test_tde_moving_mean_accumulates_real_batches():
    clf = CausalNormClassifier(4, 3, momentum=0.9)
    a, b = torch.randn(5, 4), torch.randn(3, 4)
    clf.observe(a)
    clf.observe(b)
    assert torch.allclose(clf.embed_mean, 0.9 * a.mean(0) + b.mean(0))


class _Confident:
    """A stand-in network: logits favour class `favour(x)` by a wide margin."""

    def __init__(self, num_classes: int, confident: bool = True):
        self.num_classes, self.confident = num_classes, confident

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Differentiable in x; the class it favours is read off the first pixel's value.
        target = (x[:, 0, 0, 0].detach() * 10).long().clamp(0, self.num_classes - 1)
        logits = x.flatten(1).sum(1, keepdim=True) * 0.0 + torch.zeros(len(x), self.num_classes)
        return logits + F.one_hot(target, self.num_classes) * (20.0 if self.confident else 0.0)


def test_m2m_fills_minority_slots_with_seeds_of_more_frequent_classes():
    torch.manual_seed(0)
    counts = torch.tensor([1000.0, 10.0, 1.0])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pixels = torch.rand(8, 3, 4, 4)
    uniform = _Confident(3, confident=False)
    # No translation steps, every seed of a larger class accepted (beta 0: p = 1), any
    # confidence enough (gamma 0): a generated slot holds its seed image unchanged.
    args = M2mArgs(attack_iter=0, random_start=0.0, beta=0.0, gamma=0.0)
    out, new_labels, info = major_to_minor(uniform, uniform, pixels, labels, counts, args)
    assert torch.equal(new_labels, labels)                 # a slot is re-generated as its own class
    assert torch.equal(out[:4], pixels[:4])                # n = n_max: never a slot
    changed = [i for i in range(8) if not torch.equal(out[i], pixels[i])]
    assert info["generated"] == len(changed) >= 3          # class 2 (n = 1) is a slot with p 0.999
    for i in changed:
        sources = [j for j in range(8) if torch.equal(out[i], pixels[j])]
        assert sources and all(counts[labels[j]] > counts[labels[i]] for j in sources)


def test_m2m_seed_acceptance_is_scaled_to_the_data_s_counts():
    from fasa_cli.methods.m2m import seed_acceptance

    cifar = torch.tensor([500.0, 100.0, 5.0])
    ours = cifar / 5   # the embedded set's n_max = 100
    p_cifar = seed_acceptance(cifar, cifar, cifar, M2mArgs())
    assert torch.allclose(p_cifar, 1 - 0.999 ** (cifar[None, :] - cifar[:, None]).clamp_min(0))
    assert torch.allclose(seed_acceptance(ours, ours, ours, M2mArgs()), p_cifar, atol=1e-6)
    raw = seed_acceptance(ours, ours, ours, M2mArgs(beta_reference_max=None))
    assert torch.allclose(raw, 1 - 0.999 ** (ours[None, :] - ours[:, None]).clamp_min(0))
    assert (torch.diagonal(p_cifar) == 0).all()   # a seed of the slot's own class never


def test_m2m_keeps_images_g_is_not_sure_of():
    torch.manual_seed(1)
    counts = torch.tensor([1000.0, 1.0])
    labels = torch.tensor([0, 0, 1, 1])
    pixels = torch.rand(4, 3, 4, 4)
    unsure = _Confident(2, confident=False)  # uniform softmax 0.5 < gamma 0.9
    out, new_labels, info = major_to_minor(unsure, unsure, pixels, labels, counts, M2mArgs(attack_iter=2))
    assert info["generated"] == 0 and torch.equal(out, pixels) and torch.equal(new_labels, labels)


def test_m2m_translation_moves_seeds_towards_the_target_under_g():
    from fasa_cli.methods.m2m import translate

    torch.manual_seed(2)
    weight = torch.randn(3, 48)

    def g(x):
        return x.flatten(1) @ weight.t()

    seeds = torch.rand(6, 3, 4, 4) * 0.5 + 0.25
    targets = torch.full((6,), 2)
    moved = translate(g, g, seeds, torch.zeros(6, dtype=torch.long), targets, lam=0.0, step_size=0.1,
                      iters=10, random_start=0.0)
    before = F.cross_entropy(g(seeds), targets)
    assert F.cross_entropy(g(moved), targets) < before
    assert moved.min() >= 0 and moved.max() <= 1
    steps = (moved - seeds).flatten(1).norm(dim=1)
    assert (steps <= 10 * 0.1 + 1e-5).all()  # ten L2 steps of size 0.1 at most


def test_sampler_is_seeded_by_epoch_and_balances_from_its_epoch():
    from fasa_cli.cls_ext.data import ClsEpochSampler

    class _Data:
        labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)

        def __len__(self):
            return 100

    sampler = ClsEpochSampler(_Data(), seed=3, balanced_from=4, phase_epochs=5, phases=2)
    sampler.set_epoch(2)
    first = list(sampler)
    assert sorted(first) == list(range(100))  # a permutation in phase 0
    sampler.set_epoch(2)
    assert list(sampler) == first
    sampler.set_epoch(4)   # phase 0, epoch 4: still uniform (balancing is the last phase's)
    assert sorted(sampler) == list(range(100))
    sampler.set_epoch(9)   # phase 1, epoch 4: class-balanced draws with replacement
    drawn = _Data.labels[list(sampler)]
    share = torch.bincount(drawn, minlength=3).float() / 100
    assert share.min() > 0.15 and share[0] < 0.55


def test_lr_warms_up_then_steps_and_restarts_per_phase():
    from fasa_cli.cls_ext.hooks import ClsLRHook

    hook = ClsLRHook(lr=0.1, warmup_epochs=5, steps=[160, 180], gamma=0.01, phase_epochs=200)
    assert [round(hook.lr_at(e), 6) for e in (0, 4, 5, 159)] == [0.02, 0.1, 0.1, 0.1]
    assert math.isclose(hook.lr_at(160), 1e-3) and math.isclose(hook.lr_at(199), 1e-5)
    assert math.isclose(hook.lr_at(200), 0.02) and math.isclose(hook.lr_at(365), 1e-3)


@pytest.fixture
def cls_view():
    from fasa_cli.methods.cls_api import CROSS_ENTROPY, LINEAR, ClsRunEdit

    def make(epochs: int = 200):
        return ClsRunEdit(run=None, class_counts=[500, 50, 5], frequency=["f", "c", "r"], seed=0,
                          model=dict(type="ClsModel", backbone=dict(depth=32), classifier=dict(type=LINEAR),
                                     loss=dict(type=CROSS_ENTROPY)),
                          schedule=dict(epochs=epochs, batch_size=128, lr=0.1, lr_steps=[0.8, 0.9], lr_gamma=0.01))

    return make
