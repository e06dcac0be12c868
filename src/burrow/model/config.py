"""The model's one typed config: the decoder (baseline) and, when ``retro`` is set, encoder + CCA.

Sizes are never written anywhere else than :mod:`burrow.presets`; this module only says what a
valid config is and how it round-trips through JSON (``config.json`` beside the weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from burrow.errors import BurrowError
from burrow.fieldtypes import check_field_types

# Keys of older or newer config files that this version reads but does not need.
_IGNORED_KEYS = frozenset({"format_version", "kind"})


@dataclass
class ModelConfig:
    """Shape and options of a baseline decoder or a RETRO model (``retro=True``)."""

    # Tokens in the vocabulary; presets carry a default, training fills it in from the tokenizer.
    vocab_size: int = 32000
    # Width of the decoder's residual stream.
    d_model: int = 512
    # Number of decoder blocks.
    n_layers: int = 8
    # Attention heads per decoder block.
    n_heads: int = 8
    # Width of one head; n_heads * head_dim need not equal d_model (RETRO 172M: 16 x 64 at d=896).
    head_dim: int = 64
    # Hidden width of the feed-forward block; 0 means the papers' 4 * d_model.
    d_ffw: int = 0
    # Longest sequence the model is trained on; also the default KV-cache capacity.
    max_seq_len: int = 2048
    # Share the input embedding with the output projection.
    tie_embeddings: bool = False
    # RMSNorm epsilon.
    norm_eps: float = 1e-6
    # Rotary position base (we use rotary where the papers use Transformer-XL relative positions).
    rope_base: float = 10000.0
    # Dropout on every residual branch while training (the papers train without it).
    dropout: float = 0.0
    # Standard deviation of the normal initialisation of weights.
    init_std: float = 0.02
    # Build RETRO (encoder + chunked cross-attention) rather than the plain baseline.
    retro: bool = False
    # 1-based decoder layers holding a chunked cross-attention (paper numbering); RETRO only.
    cca_layers: tuple[int, ...] = ()
    # Chunk length m: the sequence and the database are cut into chunks of this many tokens.
    chunk_size: int = 64
    # Tokens per retrieved neighbour r: [chunk, continuation] = 2 * 64 in the paper.
    retrieved_len: int = 128
    # Width of the retrieval encoder (896 for every paper size).
    enc_d_model: int = 896
    # Blocks of the retrieval encoder.
    enc_n_layers: int = 2
    # Attention heads of the retrieval encoder.
    enc_n_heads: int = 14
    # Head width of the retrieval encoder.
    enc_head_dim: int = 64
    # Feed-forward width of the encoder; 0 means 4 * enc_d_model.
    enc_d_ffw: int = 0
    # 1-based encoder layers that cross-attend to the retrieving chunk's decoder activations H_u.
    enc_cross_layers: tuple[int, ...] = (1,)
    # Rotary positions in CCA and encoder cross-attention, aligning chunk and neighbour frames.
    cca_rotary: bool = True
    # Start CCA output projections at zero, so a fresh RETRO (or a RETRO-fit) equals its baseline.
    zero_init_cca_out: bool = True
    # Token id that pads neighbours (short last chunks, continuations past a document's end); the
    # encoder and CCA never attend to it. Training sets it from the memory's tokenizer; None: no token
    # is padding (models saved before padding was masked load with None and behave as trained).
    pad_id: int | None = None
    # RETRO-fits of a Hugging Face model: the document-start token s of burrow's layout. The m − 1 pads fed
    # before it (and between packed documents) are hidden from the frozen base's attention, which never saw
    # them in pre-training: [OFF] then reads a document as the base reads s + the document. None: the base
    # sees every pad (retrofits saved before this field, as they were trained).
    start_id: int | None = None
    # Preset this config came from, for logs and artefact manifests only.
    name: str = ""
    # Free-form notes carried into config.json (e.g. "cca_placement=table").
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cca_layers = tuple(int(i) for i in self.cca_layers)
        self.enc_cross_layers = tuple(int(i) for i in self.enc_cross_layers)
        if self.d_ffw == 0:
            self.d_ffw = 4 * self.d_model
        if self.enc_d_ffw == 0:
            self.enc_d_ffw = 4 * self.enc_d_model
        self._check_positive()
        if not 0.0 <= self.dropout < 1.0:
            raise BurrowError(f"model dropout must be in [0, 1), got {self.dropout}")
        if self.head_dim % 2:
            raise BurrowError(f"head_dim must be even for rotary positions, got {self.head_dim}")
        for what, token in (("pad_id", self.pad_id), ("start_id", self.start_id)):
            if token is not None and not 0 <= int(token) < self.vocab_size:
                raise BurrowError(f"{what} must be a token id in [0, {self.vocab_size}), got {token}")
        if self.retro:
            self._check_retro()
        elif self.cca_layers:
            raise BurrowError("cca_layers are set but retro is false; set retro=true or drop cca_layers")

    def _check_positive(self) -> None:
        check_field_types(self, "model config")
        names = ["vocab_size", "d_model", "n_layers", "n_heads", "head_dim", "d_ffw", "max_seq_len",
                 "chunk_size", "retrieved_len", "enc_d_model", "enc_n_layers", "enc_n_heads",
                 "enc_head_dim", "enc_d_ffw"]
        for name in names:
            if int(getattr(self, name)) <= 0:
                raise BurrowError(f"model config {name} must be positive, got {getattr(self, name)}")

    def _check_retro(self) -> None:
        if not self.cca_layers:
            raise BurrowError("a RETRO config needs at least one CCA layer (cca_layers)")
        if list(self.cca_layers) != sorted(set(self.cca_layers)):
            raise BurrowError(f"cca_layers must be increasing and unique, got {list(self.cca_layers)}")
        if not 1 <= self.cca_layers[0] <= self.cca_layers[-1] <= self.n_layers:
            raise BurrowError(f"cca_layers {list(self.cca_layers)} must lie in 1..{self.n_layers}")
        bad = [i for i in self.enc_cross_layers if not 1 <= i <= self.enc_n_layers]
        if bad or not self.enc_cross_layers:
            raise BurrowError(f"enc_cross_layers must be a non-empty subset of 1..{self.enc_n_layers}")
        if self.enc_head_dim % 2:
            raise BurrowError(f"enc_head_dim must be even for rotary positions, got {self.enc_head_dim}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        out["cca_layers"] = list(self.cca_layers)
        out["enc_cross_layers"] = list(self.enc_cross_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - _IGNORED_KEYS)
        if unknown:
            raise BurrowError(f"unknown model config keys {unknown}; is this a newer burrow's model?")
        return cls(**{k: v for k, v in data.items() if k in known})
