"""The `fasa` command line. Each command lives in fasa_cli/commands/; this file only wires them."""

from __future__ import annotations

import sys

import typer

from fasa_cli.commands import data as data_cmd
from fasa_cli.commands import doctor as doctor_cmd
from fasa_cli.commands import experiments as experiments_cmd
from fasa_cli.commands import runs as runs_cmd
from fasa_cli.errors import EXIT_USER_ERROR, FasaError, RunFailedError

app = typer.Typer(
    name="fasa",
    help="FASA (ICCV 2021) for long-tailed instance segmentation: train, evaluate, ablate, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train")(runs_cmd.train)
app.command("eval")(runs_cmd.evaluate)
app.command("ablate")(experiments_cmd.ablate)
app.command("compare")(experiments_cmd.compare)
app.command("tide")(runs_cmd.tide)
app.command("report")(experiments_cmd.report)
app.add_typer(data_cmd.app, name="data")
app.command("doctor")(doctor_cmd.doctor)


def main(argv: list[str] | None = None) -> None:
    try:
        # Standalone mode: usage errors are printed by typer itself, with exit code 2.
        app(args=argv)
    except FasaError as err:
        typer.secho(f"error: {err.line()}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_USER_ERROR)
    except RunFailedError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
