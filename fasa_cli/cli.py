"""The `fasa` command line. Each command lives in fasa_cli/commands/; this file only wires them."""

from __future__ import annotations

import sys

import typer

from fasa_cli import __version__
from fasa_cli.commands import data as data_cmd
from fasa_cli.commands import doctor as doctor_cmd
from fasa_cli.commands import experiments as experiments_cmd
from fasa_cli.commands import runs as runs_cmd
from fasa_cli.errors import (
    EXIT_USER_ERROR,
    FasaError,
    RunFailedError,
    os_error,
    unicode_error,
    validation_problem,
)

app = typer.Typer(
    name="fasa",
    help="FASA (ICCV 2021) for long-tailed instance segmentation: train, evaluate, ablate, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fasa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


app.command("train")(runs_cmd.train)
app.command("eval")(runs_cmd.evaluate)
app.command("ablate")(experiments_cmd.ablate)
app.command("compare")(experiments_cmd.compare)
app.command("tide")(runs_cmd.tide)
app.command("report")(experiments_cmd.report)
app.command("verify")(experiments_cmd.verify)
app.add_typer(data_cmd.app, name="data")
app.command("doctor")(doctor_cmd.doctor)


def _as_user_error(err: BaseException) -> FasaError | None:
    """Environment and input errors that reach the top: one line each, not a traceback."""
    if isinstance(err, OSError):
        return os_error(err)
    if isinstance(err, UnicodeDecodeError):
        return unicode_error(err)
    pydantic = sys.modules.get("pydantic")  # not imported means it cannot be a pydantic error
    if pydantic is not None and isinstance(err, pydantic.ValidationError):
        return FasaError(f"invalid {err.title}: {validation_problem(err)}", "fix that value")
    return None


def _fail(err: FasaError) -> None:
    typer.secho(f"error: {err.line()}", err=True, fg=typer.colors.RED)
    sys.exit(EXIT_USER_ERROR)


def main(argv: list[str] | None = None) -> None:
    try:
        # Standalone mode: usage errors are printed by typer itself, with exit code 2.
        app(args=argv)
    except FasaError as err:
        _fail(err)
    except RunFailedError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(1)  # the reader (e.g. `| head`) went away: nothing left to say
    except Exception as err:  # noqa: BLE001 - only the kinds below; anything else is a bug
        user_error = _as_user_error(err)
        if user_error is None:
            raise
        _fail(user_error)


if __name__ == "__main__":
    main()
