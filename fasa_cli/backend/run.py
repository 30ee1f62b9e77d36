"""Train and evaluate one run in its folder, in a child process.

A child process per run keeps mmengine's global state (registries' scopes, loggers) and
memory from leaking between runs, gives each run its own peak-memory figure, and lets the
parent draw rich progress from the iteration counts the child reports.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from fasa_cli.errors import FasaError, RunFailedError, os_error
from fasa_cli.jsonio import write_json
from fasa_cli.backend.stages import pop_first_stage, prepare_second_stage
from fasa_cli.rundir import MATCHES_FILE, last_checkpoint, run_lock

ProgressFn = Callable[[int, int, str], None]
LOG_NAME = "train.log"
# Runs of another task (RunConfig.task) train through their own package on the same engine and
# in the same child process: train_and_evaluate, evaluate_checkpoint and dataset_root there.
TASK_BACKENDS = {"classification": "fasa_cli.cls_ext.run"}


def _task_backend(task: str):
    import importlib

    return importlib.import_module(TASK_BACKENDS[task])


def _build_runner(cfg_dict: dict):
    import fasa_cli.mmdet_ext  # noqa: F401  (registers the modules before mmengine builds)
    from mmengine.config import Config
    from mmengine.runner import Runner

    return Runner.from_cfg(Config(cfg_dict))


def train_and_evaluate(run, run_dir: Path, seed: int, launch=None) -> dict:
    """In-process: build the config, train (resuming from the folder's last checkpoint if
    any), evaluate on the val split, write metrics.json. Returns the runner's summary.

    Under a launcher (`launch`, fasa_cli.backend.launch.Launch) every rank calls this; rank 0
    alone decides on resuming and writes the folder's files, the others train beside it."""
    if run.task in TASK_BACKENDS:
        return _task_backend(run.task).train_and_evaluate(run, run_dir, seed)
    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.backend import provenance
    from fasa_cli.backend.launch import Launch, broadcast_from_main, dist_backend, init_process_group
    from fasa_cli.evaluation.bootstrap import match_table
    from fasa_cli.mmdet_ext.hooks import ProgressHook, peak_memory_mb

    launch = launch or Launch()
    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = provenance.configure_determinism()
    init_process_group(launch)  # first: rank 0's resume decision is every rank's
    data = resolve_dataset(run.dataset)
    if launch.is_main:
        facts = provenance.collect(data, threads)
        if launch.distributed:
            facts["launch"] = dict(launcher=launch.launcher, world_size=launch.world_size,
                                   fasa_stats=launch.fasa_stats, backend=dist_backend())
        write_json(run_dir / "provenance.json", facts)
    cfg = build_config(run, data, run_dir, seed, launch)
    prepare_second_stage(cfg, run_dir, _build_runner, launch)  # a two-stage method trains stage 1 first
    checkpoint = last_checkpoint(run_dir) if launch.is_main else None
    if launch.distributed:
        name = broadcast_from_main(checkpoint.name if checkpoint else None)
        checkpoint = run_dir / name if name else None
    # The checkpoint is named explicitly: mmengine's own pointer holds an absolute path.
    cfg.update(resume=checkpoint is not None, load_from=str(checkpoint) if checkpoint else cfg.get("load_from"))
    if launch.is_main:
        (run_dir / "run_config.json").write_text(run.model_dump_json(indent=2))
    runner = _build_runner(cfg)
    runner.train()
    progress = next(h for h in runner.hooks if isinstance(h, ProgressHook))
    metrics = dict(runner.test())
    if not launch.is_main:  # the evaluation's numbers reached every rank; the files are rank 0's
        return {"metrics": metrics, "wall_s": time.time() - started, "peak_mem_mb": peak_memory_mb()}
    detections = run_dir / "detections.json.gz"
    metrics.update(_tide_metrics(data, detections))
    metrics["train_s_per_iter"] = progress.mean_step_time()
    metrics["train_mem_gb"] = progress.peak_mb / 1024
    # Table 12: the step time's spread over iterations, CPU RSS and GPU memory separately.
    metrics["train_s_per_iter_std"] = progress.step_time_std()
    metrics["train_rss_gb"] = progress.peak_rss_mb / 1024
    metrics["train_gpu_mem_gb"] = progress.peak_gpu_mb / 1024
    write_json(run_dir / "metrics.json", metrics)
    if data.format == "lvis":  # match tables are lvis-api's federated matching (COCO-LT: none)
        # Per-detection matches: what a paired bootstrap over validation images needs.
        table = match_table(str(data.root / data.val_ann), _load(detections))
        table.save(run_dir / MATCHES_FILE)
        write_json(run_dir / "per_class_ap.json", table.per_class_ap())
    return {"metrics": metrics, "wall_s": time.time() - started, "peak_mem_mb": peak_memory_mb()}


def _load(detections_file: Path) -> list[dict]:
    from fasa_cli.evaluation import load_detections

    return load_detections(detections_file) if detections_file.exists() else []


def _tide_metrics(data, detections_file: Path) -> dict:
    """TIDE's six mask errors (Table 8) as fractions of AP, like the AP metrics."""
    from fasa_cli.evaluation import load_detections, tide_errors

    detections = load_detections(detections_file)
    if not detections:
        return {}
    errors = tide_errors(str(data.root / data.val_ann), detections, iou_type="segm")
    return {name: value / 100 for name, value in errors.items()}


def evaluate_checkpoint(run_dir: Path, checkpoint: Path | None = None) -> dict:
    """In-process: evaluate a run folder's checkpoint again with its saved config."""
    from fasa_cli.backend.config import build_config
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.runconfig import RunConfig

    config_file = run_dir / "run_config.json"
    if not config_file.exists():
        raise FasaError(f"{run_dir} is not a run folder (no run_config.json)",
                        "pass a folder written by `fasa train` or `fasa ablate`")
    if checkpoint is None:
        checkpoint = last_checkpoint(run_dir)  # the folder's own, wherever it was moved
        if checkpoint is None:
            raise FasaError(f"{run_dir} has no checkpoint", "train the run first")
    run = RunConfig.model_validate_json(config_file.read_text())
    if run.task in TASK_BACKENDS:
        return _task_backend(run.task).evaluate_checkpoint(run, run_dir, checkpoint)
    data = resolve_dataset(run.dataset)
    cfg = build_config(run, data, run_dir, seed=0)
    pop_first_stage(cfg)  # the run's own checkpoint is evaluated, never a stage 1
    cfg.update(load_from=str(checkpoint), resume=False)
    cfg["test_evaluator"]["outfile"] = str(run_dir / "eval_detections.json.gz")
    cfg["custom_hooks"] = []
    metrics = dict(_build_runner(cfg).test())
    # metrics.json belongs to the finished run; a re-evaluation never overwrites it.
    write_json(run_dir / "eval_metrics.json", metrics)
    return metrics


def _die_with_parent(parent_pid: int) -> None:
    """A run must never outlive the command that started it: an orphan would keep writing
    checkpoints into a folder a resumed command trains too."""
    try:  # Linux: the kernel kills us the moment the parent dies, even by SIGKILL
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:  # elsewhere (and as a second line of defence): poll
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _log_name(payload: dict) -> str:
    """The run's log; under DDP rank 0's, the other ranks beside it (train.rank<k>.log)."""
    rank = (payload.get("launch") or {}).get("rank", 0)
    return LOG_NAME if rank == 0 else f"train.rank{rank}.log"


def _child(job: str, payload: dict, messages) -> None:
    _die_with_parent(payload["parent_pid"])
    run_dir = Path(payload["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    # mmengine logs to the console; the run's log file is where that belongs.
    log = open(run_dir / _log_name(payload), "a")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    # torch >= 2.6 loads checkpoints weights-only by default; mmengine's resume needs the
    # full pickle (optimizer, message hub, RNG states), and these are the run's own files.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    try:
        from fasa_cli.runconfig import RunConfig
        from fasa_cli.mmdet_ext.hooks import set_progress_reporter

        set_progress_reporter(lambda done, total, msg: messages.put(("progress", done, total, msg)))
        if job == "train":
            from fasa_cli.backend.launch import Launch

            run = RunConfig.model_validate(payload["config"])
            launch = Launch(**payload["launch"]) if payload.get("launch") else None
            result = train_and_evaluate(run, run_dir, payload["seed"], launch)
        else:
            result = evaluate_checkpoint(run_dir, payload.get("checkpoint"))
        messages.put(("done", result))
    except FasaError as err:
        messages.put(("user_error", err.problem, err.fix))
    except OSError as err:  # a full or read-only disk is the user's to fix, not a crash
        problem = os_error(err)
        messages.put(("user_error", problem.problem, problem.fix))
    except BaseException:  # noqa: BLE001 - reported to the parent with the log's path
        traceback.print_exc()
        messages.put(("error", traceback.format_exc().strip().splitlines()[-1]))
    finally:
        log.flush()


def _in_child(job: str, payload: dict, on_progress: ProgressFn | None) -> dict:
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, payload, messages), daemon=False)
    proc.start()
    log_path = Path(payload["run_dir"]) / _log_name(payload)
    try:
        while True:
            try:
                msg = messages.get(timeout=1.0)
            except queue_mod.Empty:
                if not proc.is_alive():
                    raise RunFailedError(f"the run's process died (exit code {proc.exitcode}); "
                                       f"see {log_path}") from None
                continue
            kind = msg[0]
            if kind == "progress" and on_progress is not None:
                on_progress(*msg[1:])
            elif kind == "done":
                return msg[1]
            elif kind == "user_error":
                raise FasaError(msg[1], msg[2])
            elif kind == "error":
                raise RunFailedError(f"run failed: {msg[1]} (full log: {log_path})")
    except BaseException:
        # Ctrl-C, or a caller that gave up: stop the run now; its checkpoints stay for resuming.
        proc.kill()
        raise
    finally:
        proc.join(timeout=30)


def run_training(config, run_dir: Path, seed: int, on_progress: ProgressFn | None = None,
                 launcher: str = "none", fasa_stats: str = "sync") -> dict:
    """The experiment runner: {"metrics", "wall_s", "peak_mem_mb"} of one trained run.

    A folder holding checkpoints of an interrupted run is resumed, not restarted. With a
    `launcher` ("pytorch": torchrun, "slurm"), this process is one rank of the run (see
    fasa_cli.backend.launch); `fasa_stats` says how FASA's statistics meet across ranks."""
    from fasa_cli.backend.datasets import dataset_root
    from fasa_cli.backend.launch import from_env

    launch = from_env(launcher, fasa_stats)
    check = _task_backend(config.task).dataset_root if config.task in TASK_BACKENDS else dataset_root
    check(config.dataset)  # a missing dataset fails here, in one line, not in the child
    payload = {"config": config.model_dump(mode="json"), "run_dir": str(run_dir), "seed": seed,
               "parent_pid": os.getpid()}
    if launch.distributed:
        payload["launch"] = launch.to_dict()
    return _in_child("train", payload, on_progress)


def evaluate_run(run_dir: Path, checkpoint: Path | None = None) -> dict:
    payload = {"run_dir": str(run_dir), "checkpoint": str(checkpoint) if checkpoint else None,
               "parent_pid": os.getpid()}
    with run_lock(run_dir, "used"):
        return _in_child("eval", payload, None)
