"""Entry point of the ``configspec`` command.

Expected failures (:class:`~configspec.errors.ConfigSpecError`) print one line on stderr
and exit with the error's code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from configspec._version import __version__
from configspec.cli import loop as _loop_cli
from configspec.cli import models as _models_cli
from configspec.cli import profile as _profile_cli
from configspec.cli import profile_alignment as _profile_alignment_cli  # noqa: F401 (registers `profile alignment`)
from configspec.cli import run as _run_cli
from configspec.cli import serve as _serve_cli
from configspec.cli._console import err_console, setup_logging
from configspec.cli.importers import import_app
from configspec.cli.paper import paper_app
from configspec.cli.plan import plan_command
from configspec.cli.select import select_command
from configspec.errors import ConfigSpecError

app = typer.Typer(
    name="configspec",
    help="Pick, and run, the best configuration for edge-cloud speculative decoding.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_models_cli.app, name="models")
app.add_typer(_profile_cli.profile_app, name="profile")
app.add_typer(_serve_cli.app, name="serve")
app.add_typer(_run_cli.app, name="run")


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    setup_logging(verbose)


app.add_typer(import_app, name="import")
app.add_typer(paper_app, name="paper")
app.command("select")(select_command)
app.command("plan")(plan_command)
app.command("validate")(_loop_cli.validate_command)
app.command("report")(_loop_cli.report_command)
app.command("quickstart")(_loop_cli.quickstart_command)


@app.command()
def version() -> None:
    """Print the tool version."""
    typer.echo(__version__)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Click's exception classes: typer >= 0.20 vendors its own click, older ones use click."""
    import click

    found: list[type[BaseException]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:  # pragma: no cover - depends on the typer version
        pass
    else:
        found.append(VendoredClickException)
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map expected errors to one line on stderr and a non-zero exit code."""
    try:
        result = app(args=argv, standalone_mode=False)
    except ConfigSpecError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if isinstance(exc, _usage_error_types()):
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if type(exc).__name__ == "Abort":
            err_console.print("aborted")
            return 130
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
