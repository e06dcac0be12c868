"""Options shared by several commands, declared once; their defaults come from the library's configs.

    def train(device: Device = TRAIN.device, k: K = DEFAULT_K, force: Force = False) -> None: ...

Each alias is a typer ``Annotated`` type: the flag names and help text live here, the default is
the config field's (:func:`default_of`), so a command never restates a library default.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from burrow.artefacts import check_out_dir
from burrow.defaults import DEFAULT_K


def default_of(config: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``config`` (what the library uses when nobody says)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise TypeError(f"{config.__name__}.{name} has no default")
    raise TypeError(f"{config.__name__} has no field {name!r}")


def out_option(default: Any, help: str) -> Any:
    """``-o/--out``: an output folder, refused before any work where it (or a folder above it) is a file."""
    return typer.Option(default, "-o", "--out", callback=check_out_dir, help=help)


_DEVICE = typer.Option("--device", help="auto | cpu | cuda | cuda:N.")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def _one_of(values: tuple[str, ...]) -> Any:
    """A callback refusing an option value outside ``values`` (``generate`` and ``serve`` ran with ``fp8`` as
    auto); a value not given (None) passes."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value

    return check


_PRECISION = typer.Option("--precision", callback=_one_of(PRECISIONS), help="Autocast: auto | bf16 | fp16 | fp32.")
ENCODER_PRECISIONS = ("auto", "bf16", "fp32")  # the frozen encoder's (EncoderConfig): no fp16
EncoderPrecision = Annotated[str, typer.Option("--precision", callback=_one_of(ENCODER_PRECISIONS),
                                               help="The frozen encoder's precision: auto | bf16 | fp32.")]
_K = typer.Option("-k", "--k", min=1, help=f"Neighbours retrieved per chunk (default {DEFAULT_K}).")
# One help per meaning: train's and eval's --help each showed both (eval's began "(training; default 512)").
_SEQ_LEN = typer.Option("--seq-len", help="Tokens per training sequence, a multiple of the chunk length (default "
                        "512).")
_EVAL_SEQ_LEN = typer.Option("--seq-len", help="Tokens per scored window, a multiple of twice the chunk length "
                             "(default: the models' max_seq_len rounded down to one).")
_FORCE = typer.Option("--force", help="Discard what an earlier run left and start again.")
_NO_PROGRESS = typer.Option("--no-progress", help="No progress bar.")

Device = Annotated[str, _DEVICE]
Precision = Annotated[str, _PRECISION]
K = Annotated[int, _K]
SeqLen = Annotated[int, _SEQ_LEN]
Force = Annotated[bool, _FORCE]
NoProgress = Annotated[bool, _NO_PROGRESS]
# The same options where "not given" must stay distinguishable (a TOML config or a preset fills it in).
MaybeDevice = Annotated[str | None, _DEVICE]
MaybePrecision = Annotated[str | None, _PRECISION]
MaybeK = Annotated[int | None, _K]
MaybeSeqLen = Annotated[int | None, _SEQ_LEN]
EvalSeqLen = Annotated[int | None, _EVAL_SEQ_LEN]

__all__ = ["DEFAULT_K", "Device", "EncoderPrecision", "EvalSeqLen", "Force", "K", "MaybeDevice", "MaybeK",
           "MaybePrecision", "MaybeSeqLen", "NoProgress", "Precision", "SeqLen", "default_of", "out_option"]
