"""`fasa ablate`, `fasa compare`, `fasa report`: run experiment specs and tabulate the store."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fasa_cli.commands import wide_console
from fasa_cli.errors import FasaError
from fasa_cli.experiments.compare import WITH_CHOICES, build_compare_spec
from fasa_cli.experiments.spec import ExperimentSpec, load_spec, parse_csv, parse_seeds

# Tests swap in a fake runner here; None means the real backend (execute.default_runner).
RUNNER_FACTORY = None

_RESULTS_HELP = "Results root (default: $FASA_RESULTS_DIR, else results/ in the repository)."


def ablate(
    spec: str = typer.Argument(..., help="Spec name (e.g. table1, from experiments/) or a path to a spec YAML."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile to run under (default: the spec's first)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: the spec's, e.g. 0,1,2)."),
    rows: Optional[str] = typer.Option(None, "--rows", help="Comma-separated row names to run (default: all runnable rows)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Run on this dataset instead of the profile's (e.g. embedded-tiny)."),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=_RESULTS_HELP),
    force: bool = typer.Option(False, "--force", help="Redo finished runs of these rows/seeds (old folders are kept aside)."),
    no_reuse: bool = typer.Option(False, "--no-reuse", help="Train even when another spec already ran the same config and seed."),
    executor: str = typer.Option("local", "--executor", help="Where runs go: local (this machine), slurm (one submitit job per run), submitit-local (the slurm path on this machine)."),
    jobs: int = typer.Option(1, "--jobs", help="With --executor local: runs side by side (cores are shared out among them)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition of the jobs."),
    gpus: int = typer.Option(1, "--gpus", help="GPUs per job (--executor slurm); more than 1 trains each run with DDP on that many."),
    time_min: int = typer.Option(24 * 60, "--time", help="Wall-clock limit of each job, in minutes."),
    cpus_per_gpu: int = typer.Option(4, "--cpus-per-gpu", help="CPU cores per task of a job."),
    launcher: str = typer.Option("none", "--launcher", help="none, pytorch (started by torchrun) or slurm (started by srun): every run uses all ranks."),
    fasa_stats: str = typer.Option("sync", "--fasa-stats", help="FASA's statistics under DDP: sync (merged every iteration) or per_rank (official code)."),
) -> None:
    """Run the missing (row, seed) pairs of a spec (e.g. `table1`), then print its table."""
    loaded = load_spec(spec)
    _run_and_tabulate(loaded, profile, seeds, parse_csv(rows, "--rows") or None, dataset, results_dir, force, not no_reuse,
                      scale=_Scale(executor, jobs, partition, gpus, time_min, cpus_per_gpu, launcher, fasa_stats))


def compare(
    baselines: str = typer.Option(..., "--baselines", help="Comma-separated method names from the registry (e.g. rfs,smote)."),
    with_: Optional[str] = typer.Option(None, "--with", help="Add a +FASA variant of every row: --with fasa."),
    profile: str = typer.Option("cpu-compact", "--profile", "-p", help="Profile to run under."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default 0,1,2)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Run on this dataset instead of the profile's (e.g. embedded-tiny)."),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=_RESULTS_HELP),
) -> None:
    """Run and tabulate named methods against the baseline (with `--with fasa`, each also +FASA)."""
    if with_ is not None and with_ not in WITH_CHOICES:
        raise FasaError(f"--with '{with_}' is not a plug-in", f"use one of: {', '.join(WITH_CHOICES)}")
    spec = build_compare_spec(parse_csv(baselines, "--baselines"), with_fasa=with_ == "fasa", profile=profile, seeds=parse_seeds(seeds))
    _run_and_tabulate(spec, profile, None, None, dataset, results_dir, False, True)


def report(
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=_RESULTS_HELP),
) -> None:
    """Write results/REPORT.md (tables next to the paper's, figures, benchmarks) from the result store."""
    from fasa_cli.experiments.report import write_report
    from fasa_cli.experiments.store import ResultStore

    path = write_report(ResultStore(results_dir))
    wide_console().print(f"wrote {path}")


@dataclass(frozen=True)
class _Scale:
    """Where and how wide `fasa ablate` runs (see its options)."""

    executor: str = "local"
    jobs: int = 1
    partition: str | None = None
    gpus: int = 1
    time_min: int = 24 * 60
    cpus_per_gpu: int = 4
    launcher: str = "none"
    fasa_stats: str = "sync"


def _run_and_tabulate(
    spec: ExperimentSpec,
    profile: str | None,
    seeds: str | None,
    rows: list[str] | None,
    dataset: str | None,
    results_dir: Path | None,
    force: bool,
    reuse: bool,
    scale: _Scale = _Scale(),
) -> None:
    # Heavy imports (pandas, rich progress) only once a command really runs.
    from fasa_cli.backend.launch import from_env
    from fasa_cli.experiments.execute import (SUBMITIT_CLUSTERS, ClusterOptions, default_runner, run_ablation,
                                              submit_ablation)
    from fasa_cli.experiments.store import ResultStore
    from fasa_cli.experiments.tables import table_heading, to_rich, write_table

    launch = from_env(scale.launcher, scale.fasa_stats)  # a launcher without its variables fails now
    # Ranks > 0 of a DDP run train beside rank 0 and stay quiet; rank 0 reports.
    console = wide_console() if launch.is_main else Console(quiet=True)
    store = ResultStore(results_dir)
    profile = spec.check_profile(profile)
    seed_list = parse_seeds(seeds)
    if scale.executor in SUBMITIT_CLUSTERS:
        if launch.distributed:
            raise FasaError(f"--launcher {scale.launcher} is for a command every rank runs; "
                            f"--executor {scale.executor} starts the ranks of each job itself",
                            "drop --launcher and give --gpus per job")
        if scale.jobs != 1:
            raise FasaError("--jobs is for --executor local", "drop it: the cluster runs the submitted jobs side by side")
        options = ClusterOptions(scale.partition, scale.gpus, scale.time_min, scale.cpus_per_gpu, scale.fasa_stats)
        table = submit_ablation(spec, profile, seed_list, store, console, rows=rows, dataset=dataset, force=force,
                                reuse=reuse, executor=scale.executor, options=options)
    elif scale.executor == "local":
        factory = RUNNER_FACTORY or default_runner
        if launch.distributed:
            factory = _launched(factory, scale.launcher, scale.fasa_stats)
        # run_ablation checks rows, names and built-ness before the first run; the runner is
        # lazy, so a bad request never even imports the backend.
        table = run_ablation(
            spec, profile, seed_list, store, _lazy(factory), console,
            rows=rows, dataset=dataset, force=force, reuse=reuse, jobs=scale.jobs, worker=not launch.is_main,
        )
        if not launch.is_main:
            return  # the table is rank 0's to print and write
    else:
        raise FasaError(f"unknown --executor '{scale.executor}'",
                        f"use one of: local, {', '.join(SUBMITIT_CLUSTERS)}")
    used_dataset = dataset or spec.dataset[profile]
    console.print(to_rich(table, title=table_heading(spec, profile, used_dataset)))
    out = write_table(store, spec, profile, used_dataset)
    console.print(f"wrote {out}")


def _launched(factory, launcher: str, fasa_stats: str):
    """A runner factory whose runs are this process's rank of a launched (DDP) run."""
    return lambda: partial(factory(), launcher=launcher, fasa_stats=fasa_stats)


def _lazy(factory):
    """A runner that imports the backend on its first run, so a fully finished ablation
    (or one that fails validation) never imports torch or mmdet."""
    runner = None

    def run(config, run_dir, seed, on_progress):
        nonlocal runner
        if runner is None:
            runner = factory()
        return runner(config, run_dir, seed, on_progress)

    return run


def verify(
    spec: str = typer.Argument(..., help="Spec name (e.g. table1) or a path to a spec YAML."),
    rows: Optional[str] = typer.Option(None, "--rows", help="Comma-separated rows to re-run (default: every row with records)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: every committed seed)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile (default: the spec's first)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset (default: the profile's)."),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help=_RESULTS_HELP),
) -> None:
    """Re-run committed (row, seed) records into results/verify/ and say whether each reproduces:
    identical numbers where code, versions, CPU and threads match the record, else a paired
    interval that includes 0."""
    from rich.table import Table

    from fasa_cli.experiments.execute import default_runner
    from fasa_cli.experiments.store import ResultStore
    from fasa_cli.experiments.verify import default_scratch
    from fasa_cli.experiments.verify import verify as run_verify

    loaded = load_spec(spec)
    used_profile = loaded.check_profile(profile)
    store = ResultStore(results_dir)
    used_dataset = dataset or loaded.dataset[used_profile]
    wanted_rows = set(parse_csv(rows, "--rows")) or None
    wanted_seeds = set(parse_seeds(seeds) or []) or None
    for name in wanted_rows or ():
        loaded.row(name)
    records = [r for r in store.find(spec=loaded.name, profile=used_profile, dataset=used_dataset)
               if (wanted_rows is None or r["row"] in wanted_rows) and (wanted_seeds is None or r["seed"] in wanted_seeds)]
    if not records:
        raise FasaError(f"no committed records of {loaded.name} ({used_profile}, {used_dataset}) match",
                        f"run `fasa ablate {loaded.name}` first, or choose other --rows/--seeds")
    # A reused record is the same run as its source: verify the source once.
    pairs, seen = [], set()
    for record in sorted(records, key=lambda r: (r["seed"], r["row"])):
        source = store.source_id(record)
        if source not in seen:
            seen.add(source)
            pairs.append((record["row"], record["seed"]))
    console = wide_console()
    console.print(f"re-running {len(pairs)} run(s) of {loaded.name} into {default_scratch(store).root}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("re-run", total=None)

        def on_progress(done: int, total: int, note: str) -> None:
            bar.update(task, completed=done, total=total, description=f"re-run {note}")

        verdicts = run_verify(loaded, used_profile, pairs, store, default_scratch(store),
                              _lazy(RUNNER_FACTORY or default_runner), dataset=dataset, progress=on_progress)
    table = Table(title=f"fasa verify {loaded.name} ({used_profile}, {used_dataset})")
    for column in ("row", "seed", "case", "reproduced", "identical", "detail", "why the setting differs"):
        table.add_column(column)
    for v in verdicts:
        table.add_row(v.row, str(v.seed), v.case, "yes" if v.reproduced else "NO", "yes" if v.identical else "no",
                      v.detail, "; ".join(v.reasons) or "—")
    console.print(table)
    from datetime import datetime, timezone

    from fasa_cli.experiments.verify import write_log

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    console.print(f"verdicts logged in {write_log(store, loaded.name, used_profile, used_dataset, verdicts, when)}")
    failed = [v for v in verdicts if not v.reproduced]
    if failed:
        console.print(f"{len(failed)} of {len(verdicts)} run(s) did not reproduce")
        raise typer.Exit(1)
    same = sum(v.identical for v in verdicts)
    console.print(f"all {len(verdicts)} run(s) reproduced, {same} of them with every metric identical")
