"""Train and evaluate one classification run in its folder (called in the run's child process
by fasa_cli.backend.run, which dispatches on RunConfig.task)."""

from __future__ import annotations

import time
from pathlib import Path

from fasa_cli.jsonio import write_json
from fasa_cli.rundir import last_checkpoint


def dataset_root(name: str) -> Path:
    """A missing or unreadable dataset fails here, in one line, before the child starts."""
    from fasa_cli.data.classification import cls_dataset_root

    return cls_dataset_root(name)


def _build_runner(cfg_dict: dict):
    import fasa_cli.cls_ext  # noqa: F401  (registers the modules before mmengine builds)
    import fasa_cli.mmdet_ext  # noqa: F401  (RNGStateHook, ProgressHook, ClassifierNormsHook)
    from mmengine.config import Config
    from mmengine.runner import Runner

    return Runner.from_cfg(Config(cfg_dict))


def provenance(data, threads: int) -> dict:
    """The detection provenance (versions, CPU, threads, determinism) with this data's files."""
    from fasa_cli.backend import provenance as prov

    info = prov.collect(_FilesOf(data), threads)
    info["data"] = {"name": data.name, "generator_version": data.generator_version,
                    **{f"{name}_sha256": prov.file_sha256(data.root / name) for name in data.files}}
    return info


class _FilesOf:
    """What provenance.collect reads of a dataset: its name and two files."""

    def __init__(self, data):
        self.name, self.root = data.name, data.root
        self.train_ann, self.val_ann = data.files[0], data.files[1]


def train_and_evaluate(run, run_dir: Path, seed: int) -> dict:
    """In-process: build the config, train (resuming from the folder's last checkpoint), test
    on the balanced test split, write metrics.json. Returns the runner's summary."""
    from fasa_cli.backend.provenance import configure_determinism
    from fasa_cli.cls_ext.config import build_cls_config
    from fasa_cli.data.classification import load_cls_dataset
    from fasa_cli.mmdet_ext.hooks import ProgressHook, peak_memory_mb

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = configure_determinism()
    data = load_cls_dataset(run.dataset)
    write_json(run_dir / "provenance.json", provenance(data, threads))
    cfg = build_cls_config(run, data, run_dir, seed)
    checkpoint = last_checkpoint(run_dir)
    cfg.update(resume=checkpoint is not None, load_from=str(checkpoint) if checkpoint else None)
    (run_dir / "run_config.json").write_text(run.model_dump_json(indent=2))
    runner = _build_runner(cfg)
    runner.train()
    progress = next(h for h in runner.hooks if isinstance(h, ProgressHook))
    metrics = dict(runner.test())
    metrics["train_s_per_iter"] = progress.mean_step_time()
    metrics["train_mem_gb"] = progress.peak_mb / 1024
    write_json(run_dir / "metrics.json", metrics)
    return {"metrics": metrics, "wall_s": time.time() - started, "peak_mem_mb": peak_memory_mb()}


def evaluate_checkpoint(run, run_dir: Path, checkpoint: Path) -> dict:
    """In-process: test a run folder's checkpoint again (eval_metrics.json; metrics.json stays)."""
    from fasa_cli.cls_ext.config import build_cls_config
    from fasa_cli.data.classification import load_cls_dataset

    data = load_cls_dataset(run.dataset)
    cfg = build_cls_config(run, data, run_dir, seed=0)
    cfg.update(load_from=str(checkpoint), resume=False)
    # The training's files (and its prediction table, which the record holds) stay as they are.
    cfg["test_evaluator"].update(outfile=str(run_dir / "eval_predictions.npz"),
                                 per_class_file=str(run_dir / "eval_per_class_accuracy.json"), matches_file=None)
    cfg["custom_hooks"] = []
    metrics = dict(_build_runner(cfg).test())
    write_json(run_dir / "eval_metrics.json", metrics)
    return metrics

