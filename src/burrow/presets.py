"""Every model size burrow knows, in one table: the papers' Gopher and RETRO sizes plus small CPU sizes.

``get_preset(name, **overrides)`` returns a fresh :class:`ModelConfig`; overrides are config fields
(``vocab_size`` is filled in from the tokenizer at train time) plus ``cca_placement`` for RETRO
paper presets, which picks one of the paper's two readings of where the CCA layers go (also for
another ``n_layers``, unless ``cca_layers`` is given):

* ``"text"`` (default): every third block from layer 6 — 6, 9, 12 for 12 layers; 6 .. 24 and
  6 .. 30 for the 24- and 32-layer models. Chosen because it is the paper's own description and,
  counted the paper's way, gives the sizes in the models' names (1.45B -> "1.5B"; the table
  reading gives 1.43B for that model). See docs/models.md.
* ``"table"``: the hyper-parameter table's 9, 12, ... for the 24- and 32-layer models (the 12-layer
  models are 6, 9, 12 in both readings).

Every CPU preset exists as a baseline (``cpu-small``) and a RETRO variant (``retro-cpu-small``) with
identical decoders, so RETRO-fitting and RETRO-vs-baseline comparisons are like for like.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from burrow.errors import BurrowError
from burrow.model.config import ModelConfig

CCA_PLACEMENTS = ("text", "table")
DEFAULT_CCA_PLACEMENT = "text"

# Paper sizes: (d_model, layers, heads, head size, vocabulary).
_GOPHER = {
    "gopher-44m": (512, 8, 16, 32),
    "gopher-117m": (768, 12, 12, 64),
    "gopher-417m": (1536, 12, 12, 128),
    "gopher-1.4b": (2048, 24, 16, 128),
    "gopher-7.1b": (4096, 32, 32, 128),
    "gopher-280b": (16384, 80, 128, 128),
}
_RETRO = {
    "retro-172m": (896, 12, 16, 64),
    "retro-425m": (1536, 12, 12, 128),
    "retro-1.5b": (2048, 24, 16, 128),
    "retro-7.5b": (4096, 32, 32, 128),
}


def cca_layers_for(n_layers: int, placement: str = DEFAULT_CCA_PLACEMENT) -> tuple[int, ...]:
    """1-based CCA layers of a paper-sized RETRO decoder under one reading of the paper."""
    if placement not in CCA_PLACEMENTS:
        raise BurrowError(f"cca_placement must be one of {list(CCA_PLACEMENTS)}, got {placement!r}")
    start = 9 if placement == "table" and n_layers > 12 else 6
    return tuple(range(start, n_layers + 1, 3))


def _gopher(name: str, d: int, layers: int, heads: int, head_dim: int) -> ModelConfig:
    # The paper's sizes count one vocab x d matrix (see docs/models.md): tied embeddings.
    return ModelConfig(vocab_size=32000, d_model=d, n_layers=layers, n_heads=heads, head_dim=head_dim,
                       max_seq_len=2048, tie_embeddings=True, name=name)


def _retro_paper(name: str, d: int, layers: int, heads: int, head_dim: int) -> ModelConfig:
    return ModelConfig(vocab_size=128000, d_model=d, n_layers=layers, n_heads=heads, head_dim=head_dim,
                       max_seq_len=2048, retro=True, cca_layers=cca_layers_for(layers), chunk_size=64,
                       retrieved_len=128, enc_d_model=896, enc_n_layers=2, enc_n_heads=14,
                       enc_head_dim=64, name=name, notes={"cca_placement": DEFAULT_CCA_PLACEMENT})


def _cpu_pair(name: str, d: int, layers: int, heads: int, seq: int, cca: tuple[int, ...],
              enc_d: int) -> dict[str, ModelConfig]:
    """A CPU baseline and its RETRO twin (64-wide heads, 4x FFW, 8k vocabulary by default)."""
    head_dim = d // heads
    base = ModelConfig(vocab_size=8192, d_model=d, n_layers=layers, n_heads=heads, head_dim=head_dim,
                       max_seq_len=seq, name=name)
    retro = dataclasses.replace(base, retro=True, cca_layers=cca, enc_d_model=enc_d, enc_d_ffw=4 * enc_d,
                                enc_n_heads=enc_d // head_dim, enc_head_dim=head_dim, name=f"retro-{name}")
    return {name: base, f"retro-{name}": retro}


def _build() -> dict[str, ModelConfig]:
    presets: dict[str, ModelConfig] = {}
    for name, shape in _GOPHER.items():
        presets[name] = _gopher(name, *shape)
    for name, shape in _RETRO.items():
        presets[name] = _retro_paper(name, *shape)
    # CPU encoders are half the decoder's width: the encoder reads k x 2m = 4x the decoder's tokens
    # (k = 2), so at full width RETRO's step costs ~2.5x the baseline's on 2 cores; the paper's
    # encoder is also narrower than the decoder for every size above 172M (896 vs 1536 … 4096).
    presets.update(_cpu_pair("tiny", d=192, layers=4, heads=6, seq=256, cca=(2, 4), enc_d=96))
    presets.update(_cpu_pair("cpu-small", d=384, layers=6, heads=6, seq=512, cca=(3, 6), enc_d=192))
    presets.update(_cpu_pair("cpu-base", d=512, layers=8, heads=8, seq=1024, cca=(4, 7), enc_d=256))
    return presets


#: Name -> config. Treat as read-only; :func:`get_preset` returns copies.
PRESETS: dict[str, ModelConfig] = _build()


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of preset ``name`` with ``overrides`` (config fields, or ``cca_placement``) applied."""
    if name not in PRESETS:
        raise BurrowError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    placement = overrides.pop("cca_placement", None)
    if placement is None and name in _RETRO and "n_layers" in overrides and "cca_layers" not in overrides:
        placement = base.notes.get("cca_placement", DEFAULT_CCA_PLACEMENT)  # another depth: the same reading
    if placement is not None:
        if not base.retro or name not in _RETRO:
            raise BurrowError(f"cca_placement applies to the RETRO paper presets, not {name!r}")
        layers = int(overrides.get("n_layers", base.n_layers))
        overrides.setdefault("cca_layers", cca_layers_for(layers, placement))
        overrides["notes"] = {**base.notes, "cca_placement": placement}
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise BurrowError(f"unknown model config overrides {unknown}")
    overrides.setdefault("notes", dict(base.notes))
    # A new width without a new FFW width keeps the papers' 4x rule (0 = 4 * width).
    if "d_model" in overrides:
        overrides.setdefault("d_ffw", 0)
    if "enc_d_model" in overrides:
        overrides.setdefault("enc_d_ffw", 0)
    return dataclasses.replace(base, **overrides)
