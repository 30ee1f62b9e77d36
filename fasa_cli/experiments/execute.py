"""Run the (row, seed) pairs of a spec through a Runner, recording each finished run once."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import queue as queue_mod
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import fasa_cli
from fasa_cli.errors import FasaError, NotBuiltError, RunFailedError
from fasa_cli.figure_artefacts import CLASS_MEANS_FILE, TRUE_CLASS_PROB_FILE
from fasa_cli.runconfig import RunConfig
from fasa_cli.experiments.spec import ExperimentSpec, repo_root
from fasa_cli.experiments.store import ResultStore, RunKey
from fasa_cli.rundir import MATCHES_FILE, run_lock

PROVENANCE_FILE = "provenance.json"   # written by the backend: what decides the numbers

ProgressFn = Callable[[int, int, str], None]
# runner(config, run_dir, seed, on_progress) trains + evaluates one run inside run_dir and
# returns {"metrics": {name: float}, "wall_s": float, "peak_mem_mb": float}; it resumes
# from checkpoints it finds in run_dir.
Runner = Callable[[RunConfig, Path, int, Optional[ProgressFn]], dict]


def default_runner() -> Runner:
    """The real training backend, imported only when a run is really made."""
    try:
        from fasa_cli.backend import run_training
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("fasa_cli.backend"):
            raise NotBuiltError("the training backend (fasa_cli.backend)") from None
        raise
    return run_training


def run_key(spec: ExperimentSpec, row: str, seed: int, profile: str, dataset: str | None = None) -> RunKey:
    return RunKey(spec.name, profile, dataset or spec.dataset[profile], row, seed)


def execute_run(
    spec: ExperimentSpec,
    row: str,
    seed: int,
    profile: str,
    store: ResultStore,
    runner: Runner,
    progress: ProgressFn | None = None,
    dataset: str | None = None,
    reuse: bool = True,
    worker: bool = False,
) -> dict[str, Any] | None:
    """Run one (row, seed) unless already finished; return its record.

    `worker`: this process is a rank > 0 of a data-parallel run (fasa_cli.backend.launch).
    It makes the same decisions from the same store, trains beside rank 0 and leaves the
    folder's lock and the record to it; it returns the record if one exists, else None.

    With `reuse`, a finished run of the same config and seed under another spec or row (e.g.
    Table 1's FA + FS and Table 3's adaptive row) is recorded for this key instead of being
    trained again; the record says `reused_from`. The record is written only after the
    runner returns; a failed or interrupted run leaves no record (its folder may keep
    checkpoints the runner resumes from next time)."""
    profile = spec.check_profile(profile)
    config = spec.resolve(row, profile, dataset)
    key = run_key(spec, row, seed, profile, config.dataset)
    existing = store.read_record(key)
    if existing is not None:
        _check_same_config(existing, config, key)
        return existing
    config.require_built()
    if reuse:
        twin = next(iter(store.find(config_hash=config.config_hash(), seed=seed)), None)
        if twin is not None:
            if worker:
                return None  # rank 0 copies the twin's record; nothing to train
            record = {k: v for k, v in twin.items() if k not in ("run_dir", "record_id")}
            record.update(spec=spec.name, table=spec.table, row=row, profile=profile)
            record["reused_from"] = store.source_id(twin)
            store.write_record(key, record)
            return store.read_record(key)
    run_dir = store.run_dir(key)
    if worker:
        run_dir.mkdir(parents=True, exist_ok=True)
        runner(config, run_dir, seed, progress)
        return None
    # One trainer per run folder: a second command for the same run refuses at once.
    with run_lock(run_dir):
        existing = store.read_record(key)  # finished while we waited to look
        if existing is not None:
            return existing
        started = _now()
        result = runner(config, run_dir, seed, progress)
        metrics = _checked_metrics(result, key)
        record = {
            "spec": spec.name,
            "table": spec.table,
            "row": row,
            "seed": seed,
            "profile": profile,
            "dataset": config.dataset,
            "config": config.model_dump(mode="json"),
            "config_hash": config.config_hash(),
            "code_version": code_version(),
            "metrics": metrics,
            "wall_s": float(result.get("wall_s", math.nan)),
            "peak_mem_mb": float(result.get("peak_mem_mb", math.nan)),
            "started": started,
            "finished": _now(),
            "host": host_info(),
            **run_artefacts(run_dir),
        }
        store.write_record(key, record, matches=run_dir / MATCHES_FILE)
    return store.read_record(key)


def run_artefacts(run_dir: Path) -> dict[str, Any]:
    """The compact parts of a run folder that go into its committed record."""
    out: dict[str, Any] = {}
    provenance = ResultStore.read_artefact_json(run_dir, PROVENANCE_FILE)
    if provenance:
        out["provenance"] = provenance
    per_class = ResultStore.read_artefact_json(run_dir, "per_class_ap.json")
    if per_class:
        out["per_class_ap"] = per_class
    state = ResultStore.read_artefact_jsonl(run_dir, "fasa_state.jsonl")
    if state:
        out["fasa_state"] = state
    norms = ResultStore.read_artefact_json(run_dir, "classifier_norms.json")
    if norms:
        out["classifier_norms"] = norms
    # Figs. 1b and 5 (formats: fasa_cli.figure_artefacts).
    for key, name in (("true_class_prob", TRUE_CLASS_PROB_FILE), ("class_means", CLASS_MEANS_FILE)):
        artefact = ResultStore.read_artefact_json(run_dir, name)
        if artefact:
            out[key] = artefact
    return out


def _check_same_config(record: dict, config: RunConfig, key: RunKey) -> None:
    if record.get("config_hash") != config.config_hash():
        raise FasaError(
            f"run {key.relative_dir()} was finished with a different config "
            f"(hash {record.get('config_hash')}, the spec now gives {config.config_hash()})",
            "pass --force to redo it with the current spec (the old run is kept aside), or restore the spec",
        )


def _checked_metrics(result: Any, key: RunKey) -> dict[str, float]:
    metrics = result.get("metrics") if isinstance(result, dict) else None
    if not isinstance(metrics, dict):
        raise FasaError(f"the runner returned no metrics for {key.relative_dir()}", "check the backend's log in that folder")
    try:
        return {str(name): math.nan if value is None else float(value) for name, value in metrics.items()}
    except (TypeError, ValueError):
        raise FasaError(f"the runner returned a non-numeric metric for {key.relative_dir()}", "check the backend") from None


def run_ablation(
    spec: ExperimentSpec,
    profile: str | None,
    seeds: list[int] | None,
    store: ResultStore,
    runner: Runner,
    console: Console,
    rows: list[str] | None = None,
    dataset: str | None = None,
    force: bool = False,
    reuse: bool = True,
    jobs: int = 1,
    worker: bool = False,
) -> pd.DataFrame:
    """Run the missing (row, seed) pairs (seed-major, so an interrupted ablation already has
    every row at seed 0), then return the spec's table.

    `jobs` > 1 runs that many side by side (see `run_side_by_side`); `worker`: this process
    is a rank > 0 of data-parallel runs (see `execute_run`)."""
    from fasa_cli.experiments.tables import spec_table

    if jobs < 1:
        raise FasaError(f"--jobs {jobs} is not a positive number", "pass --jobs 1 or more")
    if jobs > 1 and worker:
        raise FasaError("--jobs runs several runs side by side; a --launcher run is one run on several processes",
                        "use one of the two")
    profile, configs, todo, reuse = plan_ablation(spec, profile, seeds, store, console, rows, dataset,
                                                  force, reuse, worker)
    done, done_lock = 0, threading.Lock()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        overall = bar.add_task("runs", total=len(todo))

        def run_one(pair: tuple[str, int], stop: threading.Event | None = None) -> None:
            nonlocal done
            name, seed = pair
            current = bar.add_task(f"  {name} seed {seed}", total=None)

            def on_progress(step: int, total: int, message: str, _task=current) -> None:
                if stop is not None and stop.is_set():
                    raise RunsStopped
                bar.update(_task, completed=step, total=total, description=f"  {name} seed {seed} {message}".rstrip())

            if worker and force:  # rank 0 moves the finished run aside: train, do not look
                key = run_key(spec, name, seed, profile, configs[name].dataset)
                runner(configs[name], store.run_dir(key), seed, on_progress)
            else:
                execute_run(spec, name, seed, profile, store, runner, on_progress, dataset, reuse, worker=worker)
            bar.remove_task(current)
            with done_lock:
                done += 1
            bar.advance(overall)

        if jobs == 1:
            for name, seed in todo:
                try:
                    run_one((name, seed))
                except KeyboardInterrupt:
                    console.print(
                        f"interrupted during {name} seed {seed}: {done} new run(s) recorded; "
                        "run the same command again to resume"
                    )
                    raise
        else:
            threads = _threads_per_run(jobs)
            console.print(f"{jobs} runs side by side, {threads} torch thread(s) each")
            try:
                with env_var(THREADS_ENV, str(threads)):
                    for phase in twin_phases(todo, lambda pair: (configs[pair[0]].config_hash(), pair[1])):
                        run_side_by_side(phase, jobs, run_one)
            except KeyboardInterrupt:
                console.print(f"interrupted: {done} new run(s) recorded; run the same command again to resume")
                raise
    return spec_table(spec, store, profile, dataset=dataset)


def plan_ablation(
    spec: ExperimentSpec,
    profile: str | None,
    seeds: list[int] | None,
    store: ResultStore,
    console: Console,
    rows: list[str] | None = None,
    dataset: str | None = None,
    force: bool = False,
    reuse: bool = True,
    worker: bool = False,
) -> tuple[str, dict[str, RunConfig], list[tuple[str, int]], bool]:
    """(profile, row configs, the (row, seed) pairs to run, reuse) of an ablation, after every
    check that can fail before training; `force` moves finished runs aside first."""
    profile = spec.check_profile(profile)
    seeds = list(seeds) if seeds else list(spec.seeds)
    row_names = [spec.row(name).name for name in rows] if rows else [r.name for r in spec.runnable_rows()]
    if not row_names:
        raise NotBuiltError(f"a runnable row of spec '{spec.name}' (every row is paper-only for now)")
    # Everything that can fail before training fails now, not after hours of runs.
    spec.require_built(row_names, profile, dataset)
    configs = {name: spec.resolve(name, profile, dataset) for name in row_names}
    pairs = [(name, seed) for seed in seeds for name in row_names]
    keys = {pair: run_key(spec, pair[0], pair[1], profile, configs[pair[0]].dataset) for pair in pairs}
    if force:
        reuse = False  # --force means "train these again", not "copy a twin"
        for pair in pairs if not worker else ():  # (rank 0 moves them aside)
            store.move_aside(keys[pair])
    for pair in pairs if not (force and worker) else ():
        existing = store.read_record(keys[pair])
        if existing is not None:
            _check_same_config(existing, configs[pair[0]], keys[pair])
    if not worker:
        store.save_spec(spec.model_dump(mode="json"))

    todo = [pair for pair in pairs if (force and worker) or not store.is_finished(keys[pair])]
    console.print(
        f"[bold]{spec.name}[/] (Table {spec.table}) profile {profile}, dataset {configs[row_names[0]].dataset}: "
        f"{len(pairs) - len(todo)} of {len(pairs)} runs finished, {len(todo)} to run"
    )
    return profile, configs, todo, reuse


# -- several runs at once ----------------------------------------------------------------------

THREADS_ENV = "FASA_NUM_THREADS"  # read by the training child (fasa_cli.backend.provenance)


class RunsStopped(Exception):
    """Raised in a run's progress callback once a side-by-side batch is stopping."""


def twin_phases(pairs: list, identity: Callable[[Any], Any]) -> list[list]:
    """Split pairs into phases in which no two share an identity (config hash and seed): a
    twin runs after the run it would reuse, never beside it (both would train)."""
    phases: list[list] = []
    count: dict[Any, int] = {}
    for pair in pairs:
        ident = identity(pair)
        level = count.get(ident, 0)
        count[ident] = level + 1
        while len(phases) <= level:
            phases.append([])
        phases[level].append(pair)
    return phases


def run_side_by_side(pairs: list, jobs: int, run_one: Callable[[Any, threading.Event], None]) -> None:
    """`run_one(pair, stop)` for every pair, `jobs` at a time.

    Each run trains in its own child process, so the threads here only wait on them. The
    store takes each finished record atomically, whichever thread finishes when. The first
    failure or Ctrl-C stops the rest: queued runs never start, running ones stop at their
    next step; the threads are daemons, so a dying command leaves none behind (and its
    training children die with it)."""
    pending: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
    for pair in pairs:
        pending.put(pair)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        while not stop.is_set():
            try:
                pair = pending.get_nowait()
            except queue_mod.Empty:
                return
            try:
                run_one(pair, stop)
            except BaseException as err:  # noqa: BLE001 - handed to the calling thread
                if not (stop.is_set() and isinstance(err, RunsStopped)):
                    errors.append(err)
                stop.set()

    threads = [threading.Thread(target=work, daemon=True, name=f"fasa-run-{i}") for i in range(min(jobs, len(pairs)))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        stop.set()
        raise
    if errors:
        raise errors[0]


def _threads_per_run(jobs: int) -> int:
    """Torch threads per run: FASA_NUM_THREADS if set, else the cores shared out."""
    if os.environ.get(THREADS_ENV):
        return int(os.environ[THREADS_ENV])
    return max(1, len(os.sched_getaffinity(0)) // jobs)


# -- cluster jobs (submitit) -------------------------------------------------------------------

# --executor values that go through submitit, and the submitit cluster each one names.
SUBMITIT_CLUSTERS = {"slurm": "slurm", "submitit-local": "local"}


@dataclass(frozen=True)
class ClusterOptions:
    """Resources of each submitted (row, seed) job."""

    partition: str | None = None
    gpus: int = 1            # per job; more than 1 trains one run on that many GPUs (DDP)
    time_min: int = 24 * 60  # wall-clock limit per job
    cpus_per_gpu: int = 4    # data loading workers + the training process
    fasa_stats: str = "sync"


@dataclass(frozen=True)
class PairJob:
    """One (row, seed) of a spec, as a cluster job receives it (pickled by submitit)."""

    spec: ExperimentSpec
    row: str
    seed: int
    profile: str
    dataset: str | None
    results_dir: str
    reuse: bool
    gpus: int
    fasa_stats: str = "sync"


def run_pair_job(job: PairJob) -> dict[str, Any] | None:
    """The body of a cluster job: train and record one (row, seed) into the shared store.

    With several GPUs the job has one task per GPU, each task a rank of the run (mmengine's
    `slurm` launcher); rank 0 returns the record's id and metrics, the others None."""
    from fasa_cli.backend import run_training
    from fasa_cli.backend.launch import from_env

    launcher = "slurm" if job.gpus > 1 else "none"
    if launcher == "slurm" and "MASTER_PORT" not in os.environ:
        # One port per job, so jobs sharing a node do not collide on torch's default.
        os.environ["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    launch = from_env(launcher, job.fasa_stats)

    def runner(config, run_dir, seed, on_progress):
        return run_training(config, run_dir, seed, on_progress, launcher=launcher, fasa_stats=job.fasa_stats)

    record = execute_run(job.spec, job.row, job.seed, job.profile, ResultStore(job.results_dir), runner,
                         None, job.dataset, job.reuse, worker=not launch.is_main)
    if record is None:
        return None
    return {"record_id": record["record_id"], "metrics": record["metrics"]}


def submit_ablation(
    spec: ExperimentSpec,
    profile: str | None,
    seeds: list[int] | None,
    store: ResultStore,
    console: Console,
    rows: list[str] | None = None,
    dataset: str | None = None,
    force: bool = False,
    reuse: bool = True,
    executor: str = "slurm",
    options: ClusterOptions = ClusterOptions(),
    poll_s: float | None = None,
) -> pd.DataFrame:
    """Submit every missing (row, seed) as one submitit job, wait for them, return the table.

    Jobs write their records into the same store (it must be on a filesystem every node
    sees); each record is created atomically, so jobs finishing together lose nothing. Twins
    (same config and seed) are submitted after the run they reuse has finished. Ctrl-C
    stops waiting, not the jobs: run the same command later to collect what finished
    (runs still in progress refuse a second trainer: their folders are locked)."""
    from fasa_cli.experiments.tables import spec_table

    if executor not in SUBMITIT_CLUSTERS:
        raise FasaError(f"unknown executor '{executor}'", f"use one of: local, {', '.join(SUBMITIT_CLUSTERS)}")
    if options.gpus < 0 or options.time_min < 1 or options.cpus_per_gpu < 1:
        raise FasaError("--gpus must be >= 0, --time and --cpus-per-gpu >= 1", "fix those options")
    if executor == "submitit-local" and options.gpus > 1:
        raise FasaError("submitit's local executor runs one task per job",
                        "use --gpus 0 or 1 here, or torchrun for several GPUs on one machine")
    try:
        import submitit
    except ModuleNotFoundError:
        raise FasaError(f"--executor {executor} needs submitit, which is not installed",
                        "install it: .venv/bin/pip install submitit") from None
    profile, configs, todo, reuse = plan_ablation(spec, profile, seeds, store, console, rows, dataset, force, reuse)
    tasks = max(1, options.gpus)
    cluster = submitit.AutoExecutor(folder=store.runs_root / "_submitit" / spec.name / "%j",
                                    cluster=SUBMITIT_CLUSTERS[executor])
    params: dict[str, Any] = dict(name=f"fasa-{spec.name}", timeout_min=options.time_min, nodes=1,
                                  tasks_per_node=tasks, gpus_per_node=options.gpus,
                                  cpus_per_task=options.cpus_per_gpu)
    if options.partition:
        params["slurm_partition"] = options.partition
    cluster.update_parameters(**params)
    failures: list[str] = []
    for phase in twin_phases(todo, lambda pair: (configs[pair[0]].config_hash(), pair[1])):
        jobs = {pair: cluster.submit(run_pair_job, PairJob(spec, pair[0], pair[1], profile, dataset, str(store.root),
                                                           reuse, options.gpus, options.fasa_stats))
                for pair in phase}
        console.print(f"submitted {len(jobs)} job(s) to {executor}: "
                      + ", ".join(f"{row}/seed{seed} = {job.job_id}" for (row, seed), job in jobs.items()))
        failures += _wait_for_jobs(jobs, console, poll_s or (2.0 if executor == "submitit-local" else 15.0))
    table = spec_table(spec, store, profile, dataset=dataset)
    if failures:
        raise RunFailedError(f"{len(failures)} of {len(todo)} job(s) failed: " + "; ".join(failures))
    return table


def _wait_for_jobs(jobs: dict, console: Console, poll_s: float) -> list[str]:
    """Wait for every job; one line per failed job (its pair, error and log)."""
    failures: list[str] = []
    waiting = dict(jobs)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("jobs", total=len(jobs))
        try:
            while waiting:
                for pair, job in list(waiting.items()):
                    if not job.done():
                        continue
                    del waiting[pair]
                    bar.advance(task)
                    try:
                        job.results()
                    except Exception as err:  # noqa: BLE001 - a job's failure is reported, not raised
                        reason = str(err).strip().splitlines()
                        failures.append(f"{pair[0]}/seed{pair[1]} (job {job.job_id}): "
                                        f"{reason[-1] if reason else type(err).__name__}, log {job.paths.stderr}")
                if waiting:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            console.print(f"stopped waiting; {len(waiting)} job(s) keep running: "
                          + ", ".join(str(job.job_id) for job in waiting.values())
                          + ". Run the same command again later to collect them.")
            raise
    return failures


@contextlib.contextmanager
def env_var(name: str, value: str):
    """Set one environment variable for a with-block (training children inherit it)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


# -- provenance --------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    version: dict[str, Any] = {"package": "fasa", "version": fasa_cli.__version__, "commit": None, "dirty": None}
    root = repo_root()
    if root is None or not (root / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    if commit.returncode == 0:
        version["commit"] = commit.stdout.strip()
    if status.returncode == 0:
        version["dirty"] = bool(status.stdout.strip())
    return version


def host_info() -> dict[str, Any]:
    """The machine that made the record; library versions and CPU features are in the
    record's `provenance`, written by the run's own process (where torch is imported)."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
