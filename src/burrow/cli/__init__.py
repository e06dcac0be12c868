"""burrow's command line: a thin typer layer; each command parses, validates and calls one library function.

Sub-command groups live in their own modules (``memory``, ``corpus``, ``train`` …) and are
registered here. User errors (:class:`burrow.BurrowError`) print one line and exit 2.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from burrow.cli import corpus as corpus_cli
from burrow.cli import demo as demo_cli
from burrow.cli import evaluate as evaluate_cli
from burrow.cli import generate as generate_cli
from burrow.cli import memory as memory_cli
from burrow.cli import retrofit as retrofit_cli
from burrow.cli import train as train_cli
from burrow.errors import BurrowError

app = typer.Typer(
    name="burrow",
    help="Retrieval-enhanced language models: build a memory, train RETRO, evaluate, generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Add every command group to the root app (explicitly: a missing module is an import error, not a
    silently absent command)."""
    app.add_typer(memory_cli.app, name="memory")
    for module in (corpus_cli, train_cli, evaluate_cli, retrofit_cli, generate_cli, demo_cli):
        module.register(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("burrow").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    """Console-script entry point."""
    _register()
    try:
        app(standalone_mode=False)
    except BurrowError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
