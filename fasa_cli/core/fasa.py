"""The FASA module: online class statistics (Eq. 2), virtual features (Eq. 3), their
Bernoulli sampling with probabilities p_c (Eq. 4) and the end-of-epoch adaptation of p_c
(Sec. 3.2). Plain PyTorch; the host (an mmdet RoI head, a classifier) feeds it features.

Host protocol, per training iteration:   fasa.update(pos_feats, pos_labels)
                                          loss += fasa.virtual_loss(fc_cls, cross_entropy)
at each epoch start:                      fasa.set_epoch(epoch)            (0-based)
after each epoch's validation pass:       fasa.adapt(per_class_signal, has_signal)
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from fasa_cli.core import dist
from fasa_cli.core.config import FASAConfig
from fasa_cli.core.grouping import NO_GROUP, compute_groups
from fasa_cli.core.stats import initial_probs

_EXTRA_STATE_VERSION = 2  # 1: a dict {version, generator_device, generator_state}, still read


class FASA(nn.Module):
    """Feature Augmentation and Sampling Adaptation for one classifier.

    Statistics (`update`): for each class in the batch, the batch mean and the unbiased batch
    spread (std, or variance with cfg.spread="var") enter an exponential moving average with
    weight `momentum` (Eq. 2). The first observation of a class is copied, not averaged.
    A class with a single sample in a batch has no unbiased spread: its mean is updated as
    usual but its spread keeps the old value (cfg.single_sample_spread="blend_zero" blends a
    zero in instead, as the official code does); if the class has never had two samples in one
    batch, its spread is 0 (virtual features equal the mean) until it does, and the first
    batch that gives a spread copies it (so an early single sample does not drag the spread
    towards 0 for many iterations).

    State: every piece lives in buffers or in the extra state (the generator), so
    `load_state_dict` into a fresh module resumes bit-identically on the same device type.
    The generator follows the buffers: after `.to(device)` of another type, a new generator
    is seeded deterministically from the old one (same future on every run, but not the
    same numbers as on the old device, since CPU and CUDA generators differ).
    """

    def __init__(self, cfg: FASAConfig, class_counts: Sequence[int] | Tensor):
        super().__init__()
        counts = torch.as_tensor(class_counts).flatten()
        if counts.numel() != cfg.num_classes:
            raise ValueError(f"class_counts has {counts.numel()} entries; num_classes is {cfg.num_classes}")
        self.cfg = cfg
        num_classes, dim = cfg.num_classes, cfg.feat_dim
        init_p = initial_probs(counts, cfg.init, cfg.scale, cfg.power)
        self.register_buffer("class_counts", counts.to(torch.long))
        self.register_buffer("mean", torch.zeros(num_classes, dim))
        self.register_buffer("spread", torch.zeros(num_classes, dim))
        self.register_buffer("instances_seen", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("spread_updates", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("init_p", init_p)
        self.register_buffer("p", init_p.clone())
        self.register_buffer("prev_signal", torch.zeros(num_classes))
        self.register_buffer("prev_valid", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        self.register_buffer("groups", torch.full((num_classes,), NO_GROUP, dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self._generator: torch.Generator | None = None
        # Generator state read by set_extra_state, restored lazily on the buffers' device.
        self._saved_generator: tuple[str, Tensor] | None = None
        # Data-parallel hosts (fasa_cli.core.dist): `moment_reducer` sums each iteration's
        # per-class moments over ranks, so every rank folds in the same pooled batch (None:
        # each rank keeps its own statistics, as the official code does); `stream` gives each
        # rank its own virtual features (0 = a single process's stream).
        self.moment_reducer: Callable[[Tensor], Tensor] | None = None
        self.stream = 0

    # ------------------------------------------------------------------ host hooks
    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0 (0-based); got {epoch!r}")
        self.epoch.fill_(epoch)

    @property
    def probs(self) -> Tensor:
        """Current sampling probabilities p_c [C] (a copy)."""
        return self.p.clone()

    @property
    def seen(self) -> Tensor:
        """[C] bool: classes with at least one observed training feature."""
        return self.instances_seen > 0

    # ------------------------------------------------------------------ Eq. 2
    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Fold a batch of positive features [N, d] with labels [N] into the running statistics."""
        num_classes, dim = self.cfg.num_classes, self.cfg.feat_dim
        if features.dim() != 2 or features.shape[1] != dim or labels.shape != features.shape[:1]:
            raise ValueError(
                f"update expects features [N, {dim}] and labels [N]; "
                f"got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        if features.shape[0] == 0 and self.moment_reducer is None:
            return  # (with a reducer every rank must join the all-reduce, positives or not)
        labels = labels.to(device=self.mean.device, dtype=torch.long)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}) (positive samples only, no background); "
                f"got [{int(labels.min())}, {int(labels.max())}]"
            )
        if self.moment_reducer is not None:
            self._update_pooled(features, labels)
            return
        x = features.detach().to(device=self.mean.device, dtype=self.mean.dtype)

        # Work on the K classes present (K <= N), in place where possible: at LVIS scale each
        # [K, d] temporary is megabytes, and fresh CPU allocations cost as much as the math.
        classes, slot, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        present = classes.numel()
        batch_mean = x.new_zeros(present, dim).index_add_(0, slot, x).div_(counts[:, None])
        centered = batch_mean.index_select(0, slot)  # index_select: ~5x faster than [] on CPU
        torch.sub(x, centered, out=centered)
        batch_spread = x.new_zeros(present, dim).index_add_(0, slot, centered.square_())
        has_spread = counts > 1
        batch_spread.div_((counts - 1).clamp_min(1)[:, None])  # unbiased variance
        if self.cfg.spread == "std":
            # The floor keeps exact zeros (dead ReLU units, one-sample classes) out of sqrt:
            # on CPU they take a slow path (~15x, measured); a 1e-15 std floor changes nothing.
            batch_spread.clamp_min_(1e-30).sqrt_()

        self._fold(classes, counts, batch_mean, batch_spread, has_spread)

    def _update_pooled(self, features: Tensor, labels: Tensor) -> None:
        """Eq. 2 from per-class moments summed by `moment_reducer` (every rank's batch)."""
        moments = dist.class_moments(features.to(self.mean.device), labels, self.cfg.num_classes)
        counts, mean, variance = dist.moments_to_stats(self.moment_reducer(moments))
        classes = (counts > 0).nonzero().squeeze(1)
        counts = counts.index_select(0, classes)
        batch_mean = mean.index_select(0, classes).to(self.mean.dtype)
        batch_spread = variance.index_select(0, classes).to(self.mean.dtype)
        if self.cfg.spread == "std":
            batch_spread.clamp_min_(1e-30).sqrt_()  # the same floor as the per-rank path
        self._fold(classes, counts, batch_mean, batch_spread, counts > 1)

    def _fold(self, classes: Tensor, counts: Tensor, batch_mean: Tensor, batch_spread: Tensor,
              has_spread: Tensor) -> None:
        """Fold the batch statistics of `classes` [K] (counts [K], [K, d] mean and spread)."""
        dtype = batch_mean.dtype
        # Eq. 2 as lerp(old, batch, w): w = m, or 1 to copy a first observation, or 0 to keep
        # the old spread (lerp is exact at w = 0 and w = 1).
        m = self.cfg.momentum
        first_mean = self.instances_seen.index_select(0, classes) == 0
        first_spread = self.spread_updates.index_select(0, classes) == 0
        mean_weight = torch.where(first_mean, 1.0, m).to(dtype)[:, None]
        # "blend_zero" (official code): a one-RoI class blends its zero batch spread in.
        single = 0.0 if self.cfg.single_sample_spread == "keep" else m
        spread_weight = torch.where(has_spread, torch.where(first_spread, 1.0, m),
                                    torch.where(first_spread, 0.0, single)).to(dtype)[:, None]
        self.mean.index_copy_(0, classes, self.mean.index_select(0, classes).lerp_(batch_mean, mean_weight))
        self.spread.index_copy_(0, classes, self.spread.index_select(0, classes).lerp_(batch_spread, spread_weight))

        self.instances_seen.index_add_(0, classes, counts)
        self.spread_updates.index_add_(0, classes, has_spread.long())

    # ------------------------------------------------------------------ Eq. 3 + Bernoulli(p_c)
    @torch.no_grad()
    def sample(self) -> tuple[Tensor, Tensor]:
        """Virtual features [M, d] (float32) and their labels [M] (long) for this iteration.

        One uniform draw per class per call; class c is selected when u_c < p_c and it has been
        seen; each selected class gives `virtual_per_class` features mean_c + sigma_c * N(0, I).
        Empty before `start_epoch` (and then no random numbers are consumed).
        """
        device, dim = self.mean.device, self.cfg.feat_dim
        if int(self.epoch) < self.cfg.start_epoch:
            return self.mean.new_zeros(0, dim), torch.zeros(0, dtype=torch.long, device=device)
        gen = self._current_generator()
        draws = torch.rand(self.cfg.num_classes, generator=gen, device=device)
        selected = (draws < self.p) & (self.instances_seen > 0)
        labels = selected.nonzero().squeeze(1)
        if self.cfg.virtual_per_class > 1:
            labels = labels.repeat_interleave(self.cfg.virtual_per_class)
        noise = torch.randn(labels.numel(), dim, generator=gen, device=device, dtype=self.mean.dtype)
        sigma = self.spread.index_select(0, labels)
        if self.cfg.spread == "var":
            sigma = sigma.clamp_min(0).sqrt()
        return torch.addcmul(self.mean.index_select(0, labels), sigma, noise), labels

    def virtual_loss(self, classifier: Callable[[Tensor], Tensor], loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """loss_weight * loss_fn(classifier(virtual features), labels), or a connected zero.

        With no virtual feature this iteration the classifier still runs on an empty batch and
        the result is `logits.sum() * 0`: a zero on the classifier's device that is part of its
        graph, so DDP sees every parameter used and optimisers get (zero) gradients.
        """
        features, labels = self.sample()
        logits = classifier(features)
        if labels.numel() == 0:
            return logits.sum() * 0.0
        return self.cfg.loss_weight * loss_fn(logits, labels)

    # ------------------------------------------------------------------ Sec. 3.2 adaptation
    @torch.no_grad()
    def adapt(self, signal: Tensor, valid: Tensor) -> dict[str, Any]:
        """End-of-epoch update of p_c from a per-class validation signal [C] and mask [C].

        The first call only stores the signal. Later calls regroup the seen classes from the
        current statistics (group-wise) or treat each seen class alone (class-wise), then per
        group compare the mean signal of this epoch with the previous one over the classes
        valid in *both* epochs (so the two means average the same classes): an improvement
        (lower loss, or higher metric) multiplies the group's p by alpha, a worsening by beta,
        no change or no such class leaves it; p is clamped to [0, 1]. Classes without a signal
        move with their group; unseen classes (group -1) are left alone. Non-finite signal
        values count as missing. With cfg.adaptive False p never changes; the signal is still
        recorded, so switching adaptation on later compares against the latest epoch.
        """
        num_classes, device = self.cfg.num_classes, self.p.device
        signal = torch.as_tensor(signal).to(device=device, dtype=torch.float32).flatten()
        valid = torch.as_tensor(valid).to(device=device, dtype=torch.bool).flatten()
        if signal.numel() != num_classes or valid.numel() != num_classes:
            raise ValueError(
                f"adapt expects signal and valid of {num_classes} entries; got {signal.numel()} and {valid.numel()}"
            )
        valid = valid & torch.isfinite(signal)
        signal = torch.where(valid, signal, torch.zeros_like(signal))
        info: dict[str, Any] = {
            "first_call": not bool(self.has_prev),
            "adapted": False,
            "num_groups": 0,
            "num_valid": int(valid.sum()),
            "up": 0,
            "down": 0,
        }
        if bool(self.has_prev) and self.cfg.adaptive:
            info.update(self._adapt_probs(signal, valid))
        self.prev_signal.copy_(signal)
        self.prev_valid.copy_(valid)
        self.has_prev.fill_(True)
        info["mean_p"] = float(self.p.mean())
        info["max_p"] = float(self.p.max())
        return info

    def _adapt_probs(self, signal: Tensor, valid: Tensor) -> dict[str, Any]:
        groups = compute_groups(self.mean, self.spread, self.instances_seen > 0, self.cfg)
        self.groups.copy_(groups)
        grouped = groups >= 0
        if not bool(grouped.any()):
            return {"adapted": True}
        num_groups = int(groups.max()) + 1
        group_of = groups.clamp_min(0)
        if self.cfg.group_signal == "mean":
            compared = (valid & self.prev_valid & grouped).float()
        else:  # official: sum over every class of the group, a missing signal counting 0
            compared = grouped.float()
        members = torch.zeros(num_groups, device=signal.device).index_add_(0, group_of, compared)
        change = torch.zeros(num_groups, device=signal.device).index_add_(
            0, group_of, (signal - self.prev_signal) * compared
        )
        if self.cfg.group_signal == "mean":
            change = change / members.clamp_min(1)  # mean now - mean before, same classes
        if self.cfg.signal == "metric":
            change = -change  # a higher metric is an improvement
        has_members = members > 0
        improved, worsened = has_members & (change < 0), has_members & (change > 0)
        factor = torch.ones(num_groups, device=signal.device)
        factor[improved] = self.cfg.alpha
        factor[worsened] = self.cfg.beta
        class_factor = torch.where(grouped, factor[group_of], torch.ones_like(self.p))
        self.p.mul_(class_factor).clamp_(0.0, 1.0)
        sizes = torch.bincount(groups[grouped], minlength=num_groups)
        return {
            "adapted": True,
            "num_groups": num_groups,
            # Many one-class groups mean the clustering found no structure: group-wise
            # adaptation has silently become class-wise.
            "singleton_share": float((sizes == 1).sum()) / num_groups,
            "up": int((grouped & improved[group_of]).sum()),
            "down": int((grouped & worsened[group_of]).sum()),
        }

    # ------------------------------------------------------------------ generator state
    def _current_generator(self) -> torch.Generator:
        device = self.mean.device
        gen = self._generator
        if gen is not None and _same_device(gen.device, device):
            return gen
        fresh = torch.Generator(device=device)
        if gen is not None:
            # Moved to another device: continue from a seed drawn from the old stream.
            fresh.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device)))
        elif self._saved_generator is not None:
            device_type, state = self._saved_generator
            if device_type == device.type:
                fresh.set_state(state)
            else:  # a checkpoint from another device type: deterministic, not identical
                fresh.manual_seed(zlib.crc32(state.numpy().tobytes()))
            self._saved_generator = None
        else:
            fresh.manual_seed(dist.stream_seed(self.cfg.seed, self.stream))
        self._generator = fresh
        return fresh

    def get_extra_state(self) -> Tensor:
        """The generator as one uint8 tensor (format 2): [2, n, n bytes of the device type,
        the generator state]. One tensor, because mmengine broadcasts every state_dict entry
        across DDP ranks when it initialises weights, and its broadcast takes only tensors."""
        if self._generator is not None:
            device_type, state = self._generator.device.type, self._generator.get_state()
        elif self._saved_generator is not None:
            device_type, state = self._saved_generator[0], self._saved_generator[1].clone()
        else:
            return unstarted_extra_state()  # not started: seeded from cfg and the stream
        device = list(device_type.encode())
        return torch.cat([torch.tensor([_EXTRA_STATE_VERSION, len(device), *device], dtype=torch.uint8),
                          state.cpu().to(torch.uint8)])

    def set_extra_state(self, state: Tensor | dict[str, Any]) -> None:
        if isinstance(state, dict) and state.get("version") == 1:  # format 1: a dict (older checkpoints)
            device, saved = state["generator_device"], state["generator_state"]
        elif isinstance(state, Tensor) and state.dtype == torch.uint8 and state.numel() >= 2 \
                and int(state[0]) == _EXTRA_STATE_VERSION and state.numel() >= 2 + int(state[1]):
            state = state.cpu()
            length = int(state[1])
            device, saved = bytes(state[2:2 + length].tolist()).decode(), state[2 + length:]
        else:
            raise ValueError("FASA checkpoint extra state has an unknown format; was it saved by this version?")
        self._generator = None
        self._saved_generator = (device, saved.cpu().clone()) if saved.numel() else None

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"num_classes={c.num_classes}, feat_dim={c.feat_dim}, spread={c.spread}, init={c.init}, "
            f"adaptive={c.adaptive}, adapt_by={c.adapt_by}, clustering={c.clustering}"
        )


def unstarted_extra_state() -> Tensor:
    """FASA's extra state before its generator has drawn anything (seeded on first use)."""
    return torch.tensor([_EXTRA_STATE_VERSION, 0], dtype=torch.uint8)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)
