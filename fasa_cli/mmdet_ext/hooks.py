"""Hooks: FASA's per-epoch validation-loss pass and adaptive update, its state log, the
classifier weight norms, the figures' logs (figure_logs: true-class probability, final class
means), RNG state in checkpoints, and progress reporting."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import DATASETS, HOOKS

from fasa_cli.core import dist as fasa_dist
from fasa_cli.core.fasa import unstarted_extra_state
from fasa_cli.mmdet_ext import distributed  # noqa: F401  (registers FASADistributedDataParallel)
from fasa_cli.figure_artefacts import CLASS_MEANS_FILE
from fasa_cli.mmdet_ext.figure_logs import TrueClassProbabilityLog, write_class_means
from fasa_cli.mmdet_ext.heads import ValidationLossCollector, fasa_heads
from fasa_cli.rundir import append_jsonl, read_jsonl, rewrite_jsonl


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class FASAHook(TrueClassProbabilityLog, Hook):
    """After each training epoch: validation-loss pass, then `FASA.adapt` on every FASA head.

    The pass runs the detector's *loss* forward (RoI sampling included, as in the official
    code) over a fixed, class-balanced (repeat-factor) set of validation images, in eval mode
    and without gradients, so batch-norm statistics and weights are untouched.
    """

    priority = "LOW"  # after the optimizer/logger hooks, before CheckpointHook saves the state

    def __init__(self, val_dataset: dict, frequency: list[str], max_images: int | None = None,
                 batch_size: int = 2, oversample_thr: float = 1e-3, subset_seed: int = 0,
                 state_log: str = "fasa_state.jsonl", norms_file: str = "classifier_norms.json",
                 class_names: list[str] | None = None, class_counts: list[int] | None = None,
                 signal_norm: str = "class_mean", balance: str = "rfs", fasa_stats: str = "sync"):
        self.val_dataset_cfg = val_dataset
        # Under DDP: "sync" merges every rank's per-class moments each iteration (one state on
        # every rank); "per_rank" keeps each rank's own statistics, as the official code does.
        self.fasa_stats = fasa_stats
        self.signal_norm = signal_norm  # "class_mean" | "official" (see ValidationLossCollector)
        self.balance = balance          # "rfs": the paper's balanced val set; "none": official code
        self.frequency = np.asarray(frequency)
        self.max_images = max_images
        self.batch_size = batch_size
        self.oversample_thr = oversample_thr
        self.subset_seed = subset_seed
        self.state_log = state_log
        self.norms_file = norms_file
        self.class_names = class_names
        self.class_counts = class_counts
        self._indices: list[int] | None = None
        self._dataset = None

    def before_train(self, runner) -> None:
        rank, world = fasa_dist.rank_and_world()
        for head in fasa_heads(_unwrap(runner.model)):
            head.fasa.stream = rank  # each rank its own virtual features
            synced = world > 1 and self.fasa_stats == "sync"
            head.fasa.moment_reducer = fasa_dist.all_reduce_sum if synced else None
        # A resumed run redoes the epochs after its checkpoint: drop their old log lines.
        log = Path(runner.work_dir) / self.state_log
        if rank == 0 and log.exists():
            rewrite_jsonl(log, [e for e in read_jsonl(log) if e["epoch"] < runner.epoch])

    def before_train_epoch(self, runner) -> None:
        for head in fasa_heads(_unwrap(runner.model)):
            head.set_epoch(runner.epoch)
            head.virtual_used = 0

    def _validation_set(self):
        if self._dataset is None:
            base = DATASETS.build(self.val_dataset_cfg)
            # Repeat-factor balancing (the paper's RFS-balanced validation set), then a fixed
            # seeded subset so every epoch is judged on the same images.
            balanced = base if self.balance == "none" else DATASETS.build(
                dict(type="ClassBalancedDataset", dataset=base, oversample_thr=self.oversample_thr))
            order = np.random.default_rng(self.subset_seed).permutation(len(balanced))
            if self.max_images is not None:
                order = order[: self.max_images]
            # Under DDP each rank runs its share; the per-class sums are added up afterwards.
            self._dataset, self._indices = balanced, fasa_dist.shard(order.tolist())
        return self._dataset, self._indices

    @torch.no_grad()
    def _validation_signal(self, runner, heads, kind: str):
        model = _unwrap(runner.model)
        dataset, indices = self._validation_set()
        device = next(model.parameters()).device
        for head in heads:
            head.val_collector = ValidationLossCollector(head.num_classes, device)
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(indices), self.batch_size):
                batch = pseudo_collate([dataset[i] for i in indices[start:start + self.batch_size]])
                data = model.data_preprocessor(batch, training=True)
                model.loss(data["inputs"], data["data_samples"])
        finally:
            model.train(was_training)
        for head in heads:
            _merge_validation_sums(head.val_collector)
        signals = [head.val_collector.signal(kind, self.signal_norm) for head in heads]
        for head in heads:
            head.val_collector = None
        return signals

    def after_train_epoch(self, runner) -> None:
        heads = fasa_heads(_unwrap(runner.model))
        if not heads:
            return
        if heads[0].fasa.cfg.adaptive:
            # Python and numpy RNG draws in the pass (pipeline, samplers) must not shift training.
            rng_state = _capture_rng()
            signals = self._validation_signal(runner, heads, heads[0].fasa.cfg.signal)
            _restore_rng(rng_state)
        else:  # static sampling never reads the signal: skip the pass
            signals = [(torch.zeros(h.num_classes), torch.zeros(h.num_classes, dtype=torch.bool)) for h in heads]
        record = {"epoch": runner.epoch, "iter": runner.iter}
        world = fasa_dist.rank_and_world()[1]
        for stage, (head, (signal, valid)) in enumerate(zip(heads, signals)):
            summary = head.fasa.adapt(signal, valid) if head.fasa.cfg.adaptive else {"adapted": False, "static": True}
            probs = head.fasa.probs.detach().cpu().numpy()
            stage_record = {
                "probs": probs.round(8).tolist(),
                "group_mean_p": {g: float(probs[self.frequency == g].mean())
                                 for g in ("r", "c", "f") if (self.frequency == g).any()},
                "n_virtual": head.virtual_used if world == 1 else _summed_over_ranks(head.virtual_used, head.fasa.p),
                "groups": head.fasa.groups.cpu().tolist(),
                "signal": [float(s) if v else None
                           for s, v in zip(signal.cpu().tolist(), valid.cpu().tolist())],
                "adapt": _jsonable(summary),
            }
            if world > 1:  # (the state is rank 0's; `ranks_agree`: every rank holds it exactly)
                fasa = head.fasa
                stage_record["ranks_agree"] = fasa_dist.ranks_agree(
                    fasa.mean, fasa.spread, fasa.instances_seen, fasa.p, fasa.groups)
            if stage == 0:
                record.update(stage_record)
            else:
                record.setdefault("stages", []).append(stage_record)
        if fasa_dist.rank_and_world()[0] == 0:
            append_jsonl(Path(runner.work_dir) / self.state_log, record)
        if world > 1:  # for the epoch's checkpoint, which rank 0 alone writes (see below)
            everything = self.fasa_stats == "per_rank"
            own = {k: v.detach().cpu().clone() for k, v in _unwrap(runner.model).state_dict().items()
                   if k.endswith(_FASA_EXTRA_STATE) or (everything and ".fasa." in f".{k}")}
            self._rank_states = (runner.iter, fasa_dist.gather_objects(own))

    def after_train(self, runner) -> None:
        if fasa_dist.rank_and_world()[0] != 0:
            return
        write_classifier_norms(_unwrap(runner.model), Path(runner.work_dir) / self.norms_file,
                               self.class_names, self.frequency.tolist(), self.class_counts)
        heads = fasa_heads(_unwrap(runner.model))
        if heads:  # Fig. 5: the first FASA head's final means and groups, as in the state log
            write_class_means(heads[0].fasa, Path(runner.work_dir) / CLASS_MEANS_FILE, self.class_names)

    # Under DDP only rank 0 writes the checkpoint (mmengine's save_checkpoint is master-only):
    # it carries every rank's FASA generator (and, with per-rank statistics, every rank's
    # statistics), gathered at the end of the epoch, so a resumed rank continues as an
    # uninterrupted one would.
    _rank_states: tuple | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._rank_states is not None and self._rank_states[0] == runner.iter:
            checkpoint[_RANK_FASA_STATES] = self._rank_states[1]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Called before the weights are loaded into the model: swap in this rank's generators.
        rank = fasa_dist.rank_and_world()[0]
        saved = checkpoint.get(_RANK_FASA_STATES)
        if saved is not None and rank < len(saved):
            checkpoint["state_dict"].update(saved[rank])
        elif rank > 0:  # a checkpoint of fewer ranks: this rank starts its stream afresh
            for key in [k for k in checkpoint["state_dict"] if k.endswith(_FASA_EXTRA_STATE)]:
                checkpoint["state_dict"][key] = unstarted_extra_state()


_FASA_EXTRA_STATE = "fasa._extra_state"
_RANK_FASA_STATES = "fasa_rank_generators"


def _merge_validation_sums(collector: ValidationLossCollector) -> None:
    """Add up the ranks' shares of the validation pass (exact: the signal is a ratio of sums)."""
    if fasa_dist.rank_and_world()[1] == 1:
        return
    rois = torch.tensor([float(collector.all_rois)], dtype=torch.float64, device=collector.count.device)
    collector.loss_sum, collector.correct, collector.count, rois = fasa_dist.all_reduce_sums(
        collector.loss_sum, collector.correct, collector.count, rois)
    collector.all_rois = int(rois.item())


def _summed_over_ranks(count: int, like: torch.Tensor) -> int:
    total = torch.tensor([float(count)], dtype=torch.float64, device=like.device)
    return int(fasa_dist.all_reduce_sum(total).item())


def write_classifier_norms(model, path: Path, names, frequency, counts) -> None:
    """L2 norm of each class's classifier weight (Fig. 4), last stage's `fc_cls`."""
    fc = [m for name, m in model.named_modules() if name.endswith("fc_cls")][-1]
    num_classes = len(frequency)
    norms = fc.weight.detach()[:num_classes].norm(dim=1).cpu().tolist()
    path.write_text(json.dumps({
        "class_ids": list(range(num_classes)), "names": names, "frequency": frequency,
        "train_instance_count": counts, "norms": norms,
        # A normalised (cosine) classifier such as NormedLinear divides W_c by its norm at
        # forward time: then these raw parameter norms are not the norms the logits see.
        "classifier": type(fc).__name__,
    }))


@HOOKS.register_module()
class ClassifierNormsHook(TrueClassProbabilityLog, Hook):
    """Writes classifier weight norms for runs without FASA (FASAHook does it otherwise), and
    the true-class probability of the test pass (TrueClassProbabilityLog, as FASAHook)."""

    def __init__(self, frequency: list[str], class_names=None, class_counts=None,
                 norms_file: str = "classifier_norms.json"):
        self.frequency, self.class_names, self.class_counts = frequency, class_names, class_counts
        self.norms_file = norms_file

    def after_train(self, runner) -> None:
        if fasa_dist.rank_and_world()[0] != 0:  # under DDP the run folder is rank 0's
            return
        write_classifier_norms(_unwrap(runner.model), Path(runner.work_dir) / self.norms_file,
                               self.class_names, self.frequency, self.class_counts)


def _capture_rng() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the global RNG states in each checkpoint and restores them on resume, so a
    resumed run draws the same augmentations and RoI samples as an uninterrupted one."""

    priority = "VERY_HIGH"

    _rank_states: tuple | None = None

    def after_train_epoch(self, runner) -> None:
        # Under DDP rank 0 alone writes the epoch's checkpoint (mmengine's save_checkpoint is
        # master-only): every rank's RNG state reaches it here, first of the epoch-end hooks.
        if fasa_dist.rank_and_world()[1] > 1:
            self._rank_states = (runner.iter, fasa_dist.gather_objects(_capture_rng()))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["rng_state"] = _capture_rng()
        if self._rank_states is not None and self._rank_states[0] == runner.iter:
            checkpoint["rng_state_ranks"] = [checkpoint["rng_state"], *self._rank_states[1][1:]]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        rank = fasa_dist.rank_and_world()[0]
        ranks = checkpoint.get("rng_state_ranks") or []
        if rank < len(ranks):
            _restore_rng(ranks[rank])
        elif "rng_state" in checkpoint:
            _restore_rng(checkpoint["rng_state"])


# Progress is reported to whoever started the run (the CLI's rich progress bars) through a
# callable set at run time; it cannot travel in the (serialisable) config.
_progress_reporter = None


def set_progress_reporter(fn) -> None:
    global _progress_reporter
    _progress_reporter = fn


def peak_memory_mb() -> float:
    """This process's peak memory so far: CUDA allocations on a GPU, else the peak RSS."""
    import resource

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (CPU RSS), on a GPU machine too."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def peak_gpu_mb() -> float:
    """Peak CUDA memory allocated by this process so far; NaN without CUDA."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


@HOOKS.register_module()
class ProgressHook(Hook):
    """Reports (done, total) iterations and measures training step time and peak training
    memory (Table 12). Both travel in checkpoints, so a resumed run reports the whole run,
    not only its last part."""

    priority = "VERY_LOW"
    _skip = 5  # each process's first iterations include warm-up allocations

    def __init__(self) -> None:
        self.step_times: list[float] = []  # steady-state steps of every process of the run
        self.peak_mb = 0.0                  # training peak over every process of the run
        self.peak_rss_mb = 0.0              # ... of CPU RSS alone (Table 12 on CPU and beside a GPU)
        self.peak_gpu_mb = float("nan")     # ... of CUDA allocations (NaN: no GPU in any process)
        self._fresh: list[float] = []       # this process's steps, warm-up included
        self._start = None

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._start is not None:
            self._fresh.append(time.perf_counter() - self._start)
        if _progress_reporter is not None:
            _progress_reporter(runner.iter + 1, runner.max_iters, f"epoch {runner.epoch + 1}")

    def _settle(self) -> None:
        """Fold this process's steps (after its warm-up) and peak memory into the totals."""
        steady = self._fresh[self._skip:]
        # A process too short to pass its warm-up still says something about the step.
        self.step_times += steady or ([] if self.step_times else self._fresh)
        self._fresh = []
        self._skip = 0  # later steps of the same process are steady already
        self.peak_mb = max(self.peak_mb, peak_memory_mb())
        self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb())
        self.peak_gpu_mb = float(np.fmax(self.peak_gpu_mb, peak_gpu_mb()))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._settle()
        checkpoint["fasa_progress"] = {"step_times": list(self.step_times), "peak_mb": self.peak_mb,
                                       "peak_rss_mb": self.peak_rss_mb, "peak_gpu_mb": self.peak_gpu_mb}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("fasa_progress") or {}
        self.step_times = list(saved.get("step_times", []))
        self.peak_mb = float(saved.get("peak_mb", 0.0))
        self.peak_rss_mb = float(saved.get("peak_rss_mb", 0.0))
        self.peak_gpu_mb = float(saved.get("peak_gpu_mb", float("nan")))

    def after_train(self, runner) -> None:
        self._settle()  # measured before evaluation, so the peak is training's own

    def mean_step_time(self) -> float:
        return float(np.mean(self.step_times)) if self.step_times else float("nan")

    def step_time_std(self) -> float:
        """Sample sd of the steady-state step times (the paper's ± in Table 12)."""
        return float(np.std(self.step_times, ddof=1)) if len(self.step_times) > 1 else float("nan")
