"""What defines a memory: the encoder, the index, the chunk length and the corpus reading, as configs that
import nothing heavy (a command's ``--help`` reads their defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from burrow.data.corpus import CorpusConfig
from burrow.data.tokenizer import TokenizerConfig
from burrow.errors import BurrowError
from burrow.memory.index import IndexConfig

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


@dataclass
class EncoderConfig:
    """Which frozen encoder makes the keys, and how it runs."""

    model: str = DEFAULT_ENCODER  # sentence-transformers name or path; the default loads from its PyPI package
    batch_size: int = 64  # 64 beats 16 and 256 on this CPU (STACK.md)
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    device: str = "auto"  # auto | cpu | cuda
    shard_size: int = 8192  # chunks per embedding shard (the resume granularity)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise BurrowError("encoder batch_size and shard_size must be ≥ 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise BurrowError(f"encoder precision must be auto, bf16 or fp32, not {self.precision!r}")


@dataclass
class MemoryConfig:
    """Everything that defines a memory; each component gets only its own part."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    chunk_size: int = 64  # m: tokens per chunk (the paper's 64)
    keep_embeddings: bool = True  # keep key shards after indexing (needed to add to / rebuild the index)

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= 4096:
            raise BurrowError(f"chunk_size must be in [1, 4096], not {self.chunk_size}")
