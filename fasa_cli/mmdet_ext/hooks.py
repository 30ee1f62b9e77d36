"""Hooks: FASA's per-epoch validation-loss pass and adaptive update, its state log, the
classifier weight norms, RNG state in checkpoints, and progress reporting."""

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

from fasa_cli.mmdet_ext.heads import ValidationLossCollector, fasa_heads
from fasa_cli.rundir import append_jsonl, read_jsonl, rewrite_jsonl


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class FASAHook(Hook):
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
                 signal_norm: str = "class_mean", balance: str = "rfs"):
        self.val_dataset_cfg = val_dataset
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
        # A resumed run redoes the epochs after its checkpoint: drop their old log lines.
        log = Path(runner.work_dir) / self.state_log
        if log.exists():
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
            self._dataset, self._indices = balanced, order.tolist()
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
        for stage, (head, (signal, valid)) in enumerate(zip(heads, signals)):
            summary = head.fasa.adapt(signal, valid) if head.fasa.cfg.adaptive else {"adapted": False, "static": True}
            probs = head.fasa.probs.detach().cpu().numpy()
            stage_record = {
                "probs": probs.round(8).tolist(),
                "group_mean_p": {g: float(probs[self.frequency == g].mean())
                                 for g in ("r", "c", "f") if (self.frequency == g).any()},
                "n_virtual": head.virtual_used,
                "groups": head.fasa.groups.cpu().tolist(),
                "signal": [float(s) if v else None
                           for s, v in zip(signal.cpu().tolist(), valid.cpu().tolist())],
                "adapt": _jsonable(summary),
            }
            if stage == 0:
                record.update(stage_record)
            else:
                record.setdefault("stages", []).append(stage_record)
        append_jsonl(Path(runner.work_dir) / self.state_log, record)

    def after_train(self, runner) -> None:
        write_classifier_norms(_unwrap(runner.model), Path(runner.work_dir) / self.norms_file,
                               self.class_names, self.frequency.tolist(), self.class_counts)


def write_classifier_norms(model, path: Path, names, frequency, counts) -> None:
    """L2 norm of each class's classifier weight (Fig. 4), last stage's `fc_cls`."""
    fc = [m for name, m in model.named_modules() if name.endswith("fc_cls")][-1]
    num_classes = len(frequency)
    norms = fc.weight.detach()[:num_classes].norm(dim=1).cpu().tolist()
    path.write_text(json.dumps({
        "class_ids": list(range(num_classes)), "names": names, "frequency": frequency,
        "train_instance_count": counts, "norms": norms,
    }))


@HOOKS.register_module()
class ClassifierNormsHook(Hook):
    """Writes classifier weight norms for runs without FASA (FASAHook does it otherwise)."""

    def __init__(self, frequency: list[str], class_names=None, class_counts=None,
                 norms_file: str = "classifier_norms.json"):
        self.frequency, self.class_names, self.class_counts = frequency, class_names, class_counts
        self.norms_file = norms_file

    def after_train(self, runner) -> None:
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

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["rng_state"] = _capture_rng()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if "rng_state" in checkpoint:
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

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._settle()
        checkpoint["fasa_progress"] = {"step_times": list(self.step_times), "peak_mb": self.peak_mb}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("fasa_progress") or {}
        self.step_times = list(saved.get("step_times", []))
        self.peak_mb = float(saved.get("peak_mb", 0.0))

    def after_train(self, runner) -> None:
        self._settle()  # measured before evaluation, so the peak is training's own

    def mean_step_time(self) -> float:
        return float(np.mean(self.step_times)) if self.step_times else float("nan")
