"""Run the (row, seed) pairs of a spec through a Runner, recording each finished run once."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import fasa_cli
from fasa_cli.errors import FasaError, NotBuiltError
from fasa_cli.runconfig import RunConfig
from fasa_cli.experiments.spec import ExperimentSpec, repo_root
from fasa_cli.experiments.store import ResultStore, RunKey
from fasa_cli.rundir import run_lock

MATCHES_FILE = "eval_matches.npz"     # written by the backend (fasa_cli.evaluation.bootstrap)
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
) -> dict[str, Any]:
    """Run one (row, seed) unless already finished; return its record.

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
            record = {k: v for k, v in twin.items() if k not in ("run_dir", "record_id")}
            record.update(spec=spec.name, table=spec.table, row=row, profile=profile)
            record["reused_from"] = store.source_id(twin)
            store.write_record(key, record)
            return store.read_record(key)
    run_dir = store.run_dir(key)
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
) -> pd.DataFrame:
    """Run the missing (row, seed) pairs (seed-major, so an interrupted ablation already has
    every row at seed 0), then return the spec's table."""
    from fasa_cli.experiments.tables import spec_table

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
        for pair in pairs:
            store.move_aside(keys[pair])
    for pair in pairs:
        existing = store.read_record(keys[pair])
        if existing is not None:
            _check_same_config(existing, configs[pair[0]], keys[pair])
    store.save_spec(spec.model_dump(mode="json"))

    todo = [pair for pair in pairs if not store.is_finished(keys[pair])]
    console.print(
        f"[bold]{spec.name}[/] (Table {spec.table}) profile {profile}, dataset {configs[row_names[0]].dataset}: "
        f"{len(pairs) - len(todo)} of {len(pairs)} runs finished, {len(todo)} to run"
    )
    done = 0
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        overall = bar.add_task("runs", total=len(todo))
        for name, seed in todo:
            current = bar.add_task(f"  {name} seed {seed}", total=None)

            def on_progress(step: int, total: int, message: str, _task=current) -> None:
                bar.update(_task, completed=step, total=total, description=f"  {name} seed {seed} {message}".rstrip())

            try:
                execute_run(spec, name, seed, profile, store, runner, on_progress, dataset, reuse)
            except KeyboardInterrupt:
                console.print(
                    f"interrupted during {name} seed {seed}: {done} new run(s) recorded; "
                    "run the same command again to resume"
                )
                raise
            bar.remove_task(current)
            done += 1
            bar.advance(overall)
    return spec_table(spec, store, profile, dataset=dataset)


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
