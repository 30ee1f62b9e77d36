"""`fasa train`, `fasa eval`, `fasa tide`: one run at a time."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fasa_cli.commands import wide_console
from fasa_cli.errors import FasaError
from fasa_cli.jsonio import write_json

_PERCENT = {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}


def _metrics_table(title: str, metrics: dict) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        if value is None:  # a metric with nothing to measure (e.g. an empty size range)
            shown = "n/a"
        elif name.removeprefix("bbox_") in _PERCENT:
            shown = f"{100 * value:.1f}"
        else:
            shown = f"{value:.4g}"
        table.add_row(name, shown)
    return table


def train(
    spec: str = typer.Argument(..., help="spec name (e.g. table1) or path to a spec YAML"),
    row: Optional[str] = typer.Option(None, "--row", help="row to run (required if the spec has several)"),
    seed: int = typer.Option(0, "--seed", min=0, help="training seed (a non-negative integer)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="profile (default: the spec's first)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="run on this dataset instead of the profile's (e.g. embedded-tiny)"),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help="result store root"),
    force: bool = typer.Option(False, "--force", help="redo a finished run (its old record and folder are kept aside)"),
    launcher: str = typer.Option("none", "--launcher", help="none, pytorch (every rank started by torchrun) or slurm (by srun): one run on all ranks"),
    fasa_stats: str = typer.Option("sync", "--fasa-stats", help="FASA's statistics under DDP: sync (merged every iteration) or per_rank (official code)"),
) -> None:
    """Train and evaluate one (spec, row, seed) run into its run folder; resumes if interrupted."""
    from fasa_cli.backend.launch import from_env
    from fasa_cli.experiments.execute import default_runner, execute_run, run_key
    from fasa_cli.experiments.spec import load_spec
    from fasa_cli.experiments.store import ResultStore

    launch = from_env(launcher, fasa_stats)  # a launcher without its variables fails now
    loaded = load_spec(spec)
    rows = [r.name for r in loaded.rows]
    if row is None:
        if len(rows) != 1:
            raise FasaError(f"spec '{loaded.name}' has rows {', '.join(rows)}",
                            "choose one with --row NAME")
        row = rows[0]
    loaded.row(row)  # an unknown row fails before anything starts
    store = ResultStore(results_dir)
    if launch.distributed and not launch.is_main:
        # A rank > 0: trains beside rank 0, which alone moves old runs aside, locks and records.
        rank_runner = partial(default_runner(), launcher=launcher, fasa_stats=fasa_stats)
        used_profile = loaded.check_profile(profile)
        if force:  # (rank 0 moves the finished run aside: train, do not look)
            config = loaded.resolve(row, used_profile, dataset)
            rank_runner(config, store.run_dir(run_key(loaded, row, seed, used_profile, config.dataset)), seed, None)
        else:
            execute_run(loaded, row, seed, used_profile, store, rank_runner, None, dataset=dataset, worker=True)
        return
    runner = default_runner()
    if launch.distributed:
        runner = partial(runner, launcher=launcher, fasa_stats=fasa_stats)
    if force:
        used_profile = loaded.check_profile(profile)
        key = run_key(loaded, row, seed, used_profile, loaded.resolve(row, used_profile, dataset).dataset)
        store.move_aside(key)  # refuses while another command trains the run
    console = wide_console()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"{loaded.name}/{row}/seed{seed}", total=None, note="starting")

        def on_progress(done: int, total: int, note: str) -> None:
            bar.update(task, completed=done, total=total, note=note)

        record = execute_run(loaded, row, seed, profile or loaded.default_profile, store,
                             runner, on_progress, dataset=dataset, reuse=not force)
    console.print(_metrics_table(f"{record['spec']} / {record['row']} / seed {record['seed']} "
                                 f"({record['profile']} on {record['dataset']})",
                                 record["metrics"]))
    console.print(f"run folder: {store.artefacts_dir(record)}")


def _run_config(path: Path):
    """The run folder's RunConfig; a missing or invalid run_config.json is one line naming the field."""
    from pydantic import ValidationError

    from fasa_cli.errors import validation_error
    from fasa_cli.runconfig import RunConfig

    config_file = path / "run_config.json"
    if not config_file.is_file():
        raise FasaError(f"{path} is not a run folder (no run_config.json)",
                        "pass a folder under results/runs/ written by `fasa train` or `fasa ablate`")
    try:
        return RunConfig.model_validate_json(config_file.read_bytes())
    except ValidationError as err:
        raise validation_error(err, str(config_file),
                               "restore the file (it is written by `fasa train`) or retrain the run") from None


def _run_dir(path: Path) -> Path:
    _run_config(path)  # a bad run_config.json fails here, before any child process starts
    return path


def evaluate(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    checkpoint: Optional[Path] = typer.Option(None, help="checkpoint (default: the last one)"),
) -> None:
    """Evaluate a run's checkpoint again; writes eval_metrics.json beside metrics.json."""
    from fasa_cli.backend import evaluate_run

    metrics = evaluate_run(_run_dir(run_dir), checkpoint)
    wide_console().print(_metrics_table(f"re-evaluation of {run_dir}", metrics))


def tide(
    run_dir: Path = typer.Argument(..., help="a run folder with detections.json.gz"),
    iou_type: str = typer.Option("segm", help="segm or bbox"),
) -> None:
    """TIDE error analysis of a run's detections (paper Table 8); writes tide_<iou>.json."""
    from fasa_cli.backend.datasets import resolve_dataset
    from fasa_cli.evaluation import load_detections, tide_errors

    if iou_type not in ("segm", "bbox"):
        raise FasaError(f"unknown --iou-type '{iou_type}'", "use segm or bbox")
    folder = _run_dir(run_dir)
    detections_file = folder / "detections.json.gz"
    if not detections_file.exists():
        raise FasaError(f"{folder} has no detections.json.gz", "finish the run (or `fasa eval` it) first")
    run = _run_config(folder)
    data = resolve_dataset(run.dataset)
    errors = tide_errors(str(data.root / data.val_ann), load_detections(detections_file),
                         iou_type=iou_type)
    write_json(folder / f"tide_{iou_type}.json", errors, sort_keys=False)
    table = Table(title=f"TIDE errors (dAP, {iou_type}) of {folder}")
    for name in errors:
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:.2f}" for v in errors.values()))
    wide_console().print(table)
