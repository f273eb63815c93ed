"""Entry point of the ``configspec`` command.

Expected failures (:class:`~configspec.errors.ConfigSpecError`) print one line on stderr
and exit with the error's code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from configspec._version import __version__
from configspec.cli import models as _models_cli
from configspec.cli._console import err_console, setup_logging
from configspec.cli.profile import profile_app
from configspec.errors import ConfigSpecError

app = typer.Typer(
    name="configspec",
    help="Pick, and run, the best configuration for edge-cloud speculative decoding.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_models_cli.app, name="models")
app.add_typer(profile_app, name="profile")


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    setup_logging(verbose)


@app.command()
def version() -> None:
    """Print the tool version."""
    typer.echo(__version__)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map expected errors to one line on stderr and a non-zero exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except ConfigSpecError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as exc:  # typer/click exit paths
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
