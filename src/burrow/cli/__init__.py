"""burrow's command line: a thin typer layer; each command parses, validates and calls one library function.

Sub-command groups live in their own modules (``memory``, ``corpus``, ``train`` …) and are
registered here. User errors (:class:`burrow.BurrowError`) print one line and exit 2; a full disk
prints one line and exits 1; Ctrl-C prints how to resume and exits 130 (docs/reliability.md).
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
from burrow.cli import risks as risks_cli
from burrow.cli import tasks as tasks_cli
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
    silently absent command), once: :func:`main` calls it on every run, and a process that runs several
    commands (a test session, a notebook) would otherwise register each command again per run, building
    them all again on every later run."""
    if app.registered_commands or app.registered_groups:
        return
    app.add_typer(memory_cli.app, name="memory")
    for module in (corpus_cli, train_cli, evaluate_cli, retrofit_cli, generate_cli, demo_cli, tasks_cli, risks_cli):
        module.register(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("burrow").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def main() -> None:
    """Console-script entry point."""
    try:
        _register()
        # In non-standalone mode typer turns Ctrl-C into a returned 130 and an Exit into its code.
        code = app(standalone_mode=False)
    except BurrowError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        # By class name: typer >= 0.22 raises its vendored copy of click's exceptions (typer._click), older
        # typer raises click's own; both share these names.
        kinds = {cls.__name__ for cls in type(e).__mro__}
        if "Exit" in kinds:
            sys.exit(getattr(e, "exit_code", 0))
        if "ClickException" in kinds:
            e.show()  # type: ignore[attr-defined]
            sys.exit(getattr(e, "exit_code", 2))
        if "Abort" in kinds:
            sys.exit(1)
        if _disk_full(e):
            typer.echo(f"error: no space left on device{_detail(e)}; free some space and re-run the same "
                       "command: finished work is kept and it resumes", err=True)
            sys.exit(1)
        raise
    if code == INTERRUPTED:
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(INTERRUPTED)
    if isinstance(code, int) and code:
        sys.exit(code)


def _disk_full(e: BaseException) -> bool:
    """True when ``e`` (or what caused it) reports a full disk or quota: an OSError with ENOSPC/EDQUOT, or the
    error text of a writer that wraps one (FAISS's RuntimeError, safetensors' SafetensorError)."""
    import errno

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cur)
        if any(s in text for s in ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded")):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _detail(e: BaseException) -> str:
    """Where a disk-full error happened: ``(writing PATH)``, the writer's first line, or nothing."""
    if isinstance(e, OSError):
        return f" (writing {e.filename})" if e.filename else ""
    text = str(e).strip().splitlines()
    return f" ({text[0]})" if text else ""
