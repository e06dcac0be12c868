"""burrow's command line: a thin typer layer; each command parses, validates and calls one library function.

Sub-command groups live in their own modules (``memory``, ``corpus``, ``train`` …) and are
registered here. User errors (:class:`burrow.BurrowError`) print one line and exit 2.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from burrow.errors import BurrowError

app = typer.Typer(
    name="burrow",
    help="Retrieval-enhanced language models: build a memory, train RETRO, evaluate, generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from burrow.cli import memory as memory_cli

    app.add_typer(memory_cli.app, name="memory")
    for name in ("corpus", "train", "evaluate", "retrofit", "generate", "demo"):
        try:
            module = __import__(f"burrow.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != f"burrow.cli.{name}":
                raise
            continue
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
