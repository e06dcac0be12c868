"""burrow's command line: a thin typer layer; each command parses, validates and calls one library function.

Sub-command groups live in their own modules (``memory``, ``corpus``, ``train`` …), each with a
``register(app)``. The root imports a command's module only when that command runs or shows its own help:
the modules import torch and FAISS (~2.5 s), which ``burrow --help`` and a mistyped command do not need.
User errors (:class:`burrow.BurrowError`) print one line and exit 2; a full disk prints one line and exits 1;
Ctrl-C prints how to resume and exits 130 (docs/reliability.md).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from burrow.errors import BurrowError

#: Every command: name -> (its module under burrow.cli, the help line `burrow --help` lists). The lines are
#: the first paragraphs of the commands' own help, kept here so that listing them imports nothing;
#: tests/test_reliability_cli.py fails when one differs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "Train a baseline (any token store) or RETRO (a memory's chunks + precomputed neighbours)."),
    "eval": ("evaluate", "Bits-per-byte of RUN... on whole documents of --data, side by side; leakage, sweeps and "
                         "retrieval\nmethods (kNN-LM, in-context retrieval, controls) on request."),
    "retrofit": ("retrofit", "Freeze BASE, add fresh CCA layers and a retrieval encoder, and train only those on "
                             "MEMORY."),
    "generate": ("generate", "Continue PROMPT, streaming the text; then each generated chunk's sources, copied "
                             "spans highlighted."),
    "chat": ("generate", "Chat with the model (one message per line on stdin; /quit ends). Works with piped "
                         "input."),
    "serve": ("generate", "Serve the model over HTTP: /v1/generate, /v1/search, /v1/score, /health, /docs and a "
                          "web page at /."),
    "demo": ("demo", "Hygiene → memory → train baseline and RETRO → bits-per-byte, leakage and sweeps → one "
                     "table."),
    "risks": ("risks", "One row per risk of the taxonomy: measured, proxy, or not automatically measurable "
                       "(with reasons)."),
    "memory": ("memory", "Build, inspect and search a retrieval memory (chunks, keys, FAISS index, "
                         "neighbours)."),
    "corpus": ("corpus", "Prepare corpora: clean, deduplicate, decontaminate."),
    "tasks": ("tasks", "Task accuracy (Gopher's suite) of burrow runs and HF LMs, through "
                       "lm-evaluation-harness."),
}


def module_commands(module: str) -> dict[str, Any]:
    """The click commands (and groups) that ``burrow.cli.<module>``'s ``register`` adds, by name."""
    holder = typer.Typer()
    holder.callback()(lambda: None)  # a group even when the module registers one command
    importlib.import_module(f"burrow.cli.{module}").register(holder)
    return dict(typer.main.get_group(holder).commands)


def load_command(name: str) -> Any:
    """The click command (or group) ``name``, built from its module's ``register``."""
    return module_commands(COMMANDS[name][0])[name]


class _LazyGroup(TyperGroup):
    """The root group: commands come from :data:`COMMANDS`, each module imported when its command is
    resolved; while the root's own help is written, a command is a stand-in holding its help line."""

    _listing = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = {name: TyperCommand(name, help=line) for name, (_, line) in COMMANDS.items()}
        self._loaded: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            return self.commands[cmd_name]
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load_command(cmd_name)
        return self._loaded[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="burrow",
    help="Retrieval-enhanced language models: build a memory, train RETRO, evaluate, generate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_LazyGroup,
)


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
