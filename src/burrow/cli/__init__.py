"""burrow's command line: a thin typer layer; each command parses, validates and calls one library function.

Sub-command groups live in their own modules (``memory``, ``corpus``, ``train`` …), each with a
``register(app)``. The modules import neither torch nor FAISS (a command's body imports what it runs), and
the root imports only the module of the command that runs (every module for ``burrow --help`` and a
mistyped command's suggestion): a command's ``--help`` answers in ~0.5–1 s, the root's in ~0.7 s on a
2-core CPU, where importing torch alone takes ~2 s (docs/architecture.md, docs/speed.md).
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
from typer.core import TyperGroup

from burrow.errors import BurrowError

#: Every command, in the order `burrow --help` lists them: name -> its module under burrow.cli.
COMMANDS: dict[str, str] = {
    "train": "train", "eval": "evaluate", "retrofit": "retrofit", "generate": "generate", "chat": "generate",
    "serve": "generate", "demo": "demo", "risks": "risks", "memory": "memory", "corpus": "corpus", "tasks": "tasks",
}


def module_commands(module: str) -> dict[str, Any]:
    """The click commands (and groups) that ``burrow.cli.<module>``'s ``register`` adds, by name."""
    holder = typer.Typer()
    holder.callback()(lambda: None)  # a group even when the module registers one command
    importlib.import_module(f"burrow.cli.{module}").register(holder)
    return dict(typer.main.get_group(holder).commands)


class _LazyGroup(TyperGroup):
    """The root group: a command's module is imported when the command is first resolved."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands.update(module_commands(COMMANDS[cmd_name]))
        return self.commands[cmd_name]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in COMMANDS:  # typer's "Did you mean …?" reads self.commands: load every command
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


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
        extra = _missing_extra(e)
        if extra is not None:
            typer.echo(f"error: {extra}", err=True)
            sys.exit(2)
        denied = _permission_denied(e)
        if denied is not None:
            typer.echo(f"error: {denied}; check its permissions or give another path", err=True)
            sys.exit(2)
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


#: Optional packages, by top-level module, and the extra that installs each.
_EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "lm_eval": "tasks", "transformers": "hf",
           "gguf": "hf", "accelerate": "hf", "datasets": "hf", "ray": "scale", "profanity_check": "risks",
           "codecarbon": "risks"}


def _missing_extra(e: BaseException) -> str | None:
    """What to install when ``e`` is an import of an optional package that is not installed, else None."""
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    top = e.name.partition(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return None
    import importlib.util

    try:
        if importlib.util.find_spec(top) is not None:  # installed: a module inside it is missing, a real bug
            return None
    except (ImportError, ValueError):  # sys.modules[top] is None (import halted): not usable either
        pass
    return f"this command needs {top}, which is not installed: pip install 'burrow[{extra}]'"


def _permission_denied(e: BaseException) -> str | None:
    """``PATH: Permission denied`` when ``e`` is an OSError saying the user may not read or write a path (a
    read-only folder or file system), else None."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and e.filename:
        return f"{e.filename}: {e.strerror or 'permission denied'}"
    return None


def _detail(e: BaseException) -> str:
    """Where a disk-full error happened: ``(writing PATH)``, the writer's first line, or nothing."""
    if isinstance(e, OSError):
        return f" (writing {e.filename})" if e.filename else ""
    text = str(e).strip().splitlines()
    return f" ({text[0]})" if text else ""
