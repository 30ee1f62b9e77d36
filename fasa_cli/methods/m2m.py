"""M2m (Kim, Jeong, Shin, CVPR 2020, "Imbalanced Classification via Major-to-minor Translation");
alinlab/M2m (train.py, config.py, data_loader.py, README) read for facts.

M2m needs a baseline g trained on the imbalanced data (ERM, a whole schedule); a second network
f is then trained with the same schedule, normally until `warm` (epoch 160 of 200), and from then
on from class-balanced batches (a sampler weighting each image by 1 / n_class) in which minority
slots are filled with majority images translated towards the minority class:

  slots     a sample of class y keeps its image with probability n_y / n_max, else its slot is
            re-generated with target y
  seeds     per slot, a batch image of class k drawn with probability p ~ 1 - beta^(n_k - n_y)+
            (beta = 0.999 for CIFAR-100-LT's n_max = 500; on other counts beta^(500 / n_max), so
            the embedded set's n_max = 100 uses 0.995: with 0.999 there a seed is accepted at most
            9 % of the time and almost nothing is generated; a slot whose p is all 0 keeps its image)
  translate from the seed plus an L2 random start of radius 0.5, 10 L2-normalised gradient steps of
            size 0.1 on CE(g(x), y) + lam * f(x)[k] (lam = 0.5), pixels clamped to [0, 1], both
            networks in eval mode
  accept    if g's softmax of y reaches gamma (0.9, README) and a Bernoulli(p of the seed) draw;
            else the slot keeps its original image

Here both networks train in one run (fasa_cli/cls_ext: M2mClassifier): a pre-training phase
trains g for the whole schedule, then f trains; checkpoints and resume cover both. `loss: ldam`
gives f LDAM margins with its cosine classifier (Table 7 pairs M2m with LDAM) but no DRW: M2m's
own deferred re-balancing is the balanced sampler from `warm`. M2m's code defaults to CE.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from fasa_cli.methods.api import MethodArgs, register_method
from fasa_cli.methods.cls_api import ClsRunEdit

Net = Callable[[Tensor], Tensor]   # pixels in [0, 1], [N, 3, H, W] -> logits


class M2mArgs(MethodArgs):
    loss: Literal["ce", "ldam"] = "ce"
    beta: float = Field(0.999, ge=0.0, lt=1.0)
    # beta is set for CIFAR-100-LT's head class of 500 images; on data whose largest class has
    # n_max images it is used as beta^(500 / n_max), so 1 - beta^gap accepts a seed as often at
    # the same gap relative to n_max (None: beta as given, whatever the counts).
    beta_reference_max: float | None = Field(500.0, gt=0.0)
    lam: float = Field(0.5, ge=0.0)
    gamma: float = Field(0.9, ge=0.0, le=1.0)
    step_size: float = Field(0.1, gt=0.0)
    attack_iter: int = Field(10, ge=0)
    random_start: float = Field(0.5, ge=0.0)     # L2 radius of the start's noise
    warm: float = Field(0.8, ge=0.0, le=1.0)     # share of f's schedule before generation


def _per_sample_l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def translate(g: Net, f: Net, seeds: Tensor, seed_labels: Tensor, targets: Tensor, *, lam: float,
              step_size: float, iters: int, random_start: float) -> Tensor:
    """Seed images moved towards `targets` under g while f's logit of the seed class is pushed down."""
    x = seeds
    if random_start > 0:
        noise = torch.randn_like(x)
        x = (x + noise / _per_sample_l2(noise).clamp_min(1e-12) * random_start).clamp(0.0, 1.0)
    for _ in range(iters):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(g(x), targets) + lam * f(x).gather(1, seed_labels[:, None]).mean()
        (grad,) = torch.autograd.grad(loss, [x])
        x = (x - step_size * grad / (_per_sample_l2(grad) + 1e-10)).clamp(0.0, 1.0)
    return x.detach()


def seed_acceptance(counts: Tensor, seed_counts: Tensor, target_counts: Tensor, args: M2mArgs) -> Tensor:
    """[G, B] 1 - beta^(n_seed - n_target)+ for every (slot, batch image) pair."""
    beta = args.beta if args.beta_reference_max is None else args.beta ** (args.beta_reference_max / float(counts.max()))
    return 1.0 - beta ** (seed_counts[None, :] - target_counts[:, None]).clamp_min(0.0)


def major_to_minor(g: Net, f: Net, pixels: Tensor, labels: Tensor, class_counts: Tensor,
                   args: M2mArgs) -> tuple[Tensor, Tensor, dict]:
    """One batch with its minority slots re-generated: (pixels, labels, counts for the log).
    Random draws come from the global torch generator (checkpointed by the run)."""
    counts = class_counts.to(device=pixels.device, dtype=torch.float32)
    n = counts[labels]
    slots = (torch.bernoulli(n / counts.max()) == 0).nonzero().squeeze(1)
    out_pixels, out_labels = pixels.clone(), labels.clone()
    info = {"slots": int(slots.numel()), "generated": 0}
    if slots.numel() == 0:
        return out_pixels, out_labels, info
    targets = labels[slots]
    p_accept = seed_acceptance(counts, n, counts[targets], args)                         # [G, B]
    has_seed = p_accept.sum(dim=1) > 0
    slots, targets, p_accept = slots[has_seed], targets[has_seed], p_accept[has_seed]
    if slots.numel() == 0:
        return out_pixels, out_labels, info
    seed_index = torch.multinomial(p_accept, 1, replacement=True).squeeze(1)
    p_seed = p_accept.gather(1, seed_index[:, None]).squeeze(1)
    made = translate(g, f, pixels[seed_index], labels[seed_index], targets, lam=args.lam,
                     step_size=args.step_size, iters=args.attack_iter, random_start=args.random_start)
    with torch.no_grad():
        confident = g(made).softmax(dim=1).gather(1, targets[:, None]).squeeze(1) >= args.gamma
    accepted = confident & (torch.bernoulli(p_seed) > 0)
    out_pixels[slots[accepted]] = made[accepted]
    out_labels[slots[accepted]] = targets[accepted]
    info["generated"] = int(accepted.sum())
    return out_pixels, out_labels, info


@register_method("m2m", table="7", summary="Major-to-minor translation (Kim et al., CVPR'20)",
                 args=M2mArgs, task="classification",
                 changes=("a pre-training phase: the baseline g (ERM) trains for a whole schedule first",
                          "sampler: class-balanced from 0.8 of f's schedule",
                          "batches: minority slots filled with majority images translated by g and f"))
def m2m(view: ClsRunEdit, args: M2mArgs) -> None:
    if args.loss == "ldam":
        from fasa_cli.methods.ldam import LDAMArgs, use_ldam

        use_ldam(view, LDAMArgs(), drw=False)
    view.pretrain_phase()
    warm = view.epoch_at(args.warm)
    view.sampler["balanced_from"] = warm
    view.model.update(type="M2mClassifier", m2m=dict(args.model_dump(), warm_epoch=warm))
