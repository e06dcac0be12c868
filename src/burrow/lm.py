"""Causal LMs behind one small interface, for reading retrieved passages in context.

Shape legend: b rows in a batch, n tokens of a row, v vocabulary, L tokens of a text.

:class:`BurrowLM` wraps a burrow model with its tokenizer, :class:`HFLM` a Hugging Face causal LM
with its own fast tokenizer (:func:`load_hf_lm`: ``smollm2``, a local folder or a hub id). Both
score windows (``target_log_probs``, used by :mod:`burrow.evaluate.incontext`) and decode step by
step with a KV cache (``step``, used by :mod:`burrow.generate.incontext`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from burrow.data.layout import start_token
from burrow.data.tokenizer import Tokenizer
from burrow.device import autocast
from burrow.errors import BurrowError


class InContextLM(Protocol):
    """What in-context scoring needs of a causal LM (:class:`BurrowLM`, :class:`HFLM`)."""

    name: str
    start_id: int  # fed before a document's (and a passage's) first token: bos, else eos
    max_length: int  # longest input the LM was trained on

    def encode(self, text: str) -> np.ndarray:
        """(L,) token ids of ``text`` (no special tokens)."""
        ...

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids (L,), byte_ends (L,)): each token's id and the UTF-8 byte offset where its text ends."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``."""
        ...

    def to(self, device: torch.device) -> Any:
        """Move the model to ``device``."""
        ...

    def new_cache(self) -> Any:
        """An empty KV cache for :meth:`step` (None: recompute)."""
        ...

    def step(self, ids: Sequence[int], cache: Any, dtype: torch.dtype | None = None) -> Tensor:
        """Feed ``ids`` (after ``cache``); the last position's fp32 logits (v,)."""
        ...

    def target_log_probs(self, inputs: Tensor, targets: Tensor, dtype: torch.dtype | None) -> Tensor:
        """(b, n) fp32 log p(targets | inputs) for (b, n) inputs, under autocast ``dtype``."""
        ...


class _TorchLM:
    """Shared forward: logits under autocast, then an fp32 log-softmax gathered at the targets."""

    module: nn.Module
    device = torch.device("cpu")

    def to(self, device: torch.device) -> _TorchLM:
        self.module.to(device)
        self.device = device
        return self

    def _logits(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def new_cache(self) -> Any:
        """An empty KV cache for :meth:`step` (None: this LM recomputes)."""
        return None

    def _step(self, inputs: Tensor, cache: Any) -> Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def step(self, ids: Sequence[int], cache: Any, dtype: torch.dtype | None = None) -> Tensor:
        """Feed ``ids`` (appended to ``cache``; with ``cache`` None the whole input is ``ids``); the
        last position's fp32 logits (v,)."""
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # (1, n)
        with autocast(self.device, dtype):
            logits = self._step(x, cache) if cache is not None else self._logits(x)  # (1, n, v)
        return logits[0, -1].float()

    @torch.no_grad()
    def target_log_probs(self, inputs: Tensor, targets: Tensor, dtype: torch.dtype | None) -> Tensor:
        """(b, n) fp32 log-probabilities of ``targets``; one window at a time through the softmax (big v)."""
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        with autocast(self.device, dtype):
            logits = self._logits(inputs)  # (b, n, v)
        out = torch.empty(targets.shape, dtype=torch.float32, device=self.device)
        for i in range(len(logits)):
            row = logits[i].float()  # (n, v)
            out[i] = row.gather(-1, targets[i, :, None])[:, 0] - torch.logsumexp(row, -1)
        return out.cpu()


class BurrowLM(_TorchLM):
    """A burrow model (``model(tokens)`` -> logits (b, n, v)) with its tokenizer (the memory's)."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, name: str = "burrow") -> None:
        self.module, self.tokenizer, self.name = model, tokenizer, name
        self.module.eval()
        self.start_id = start_token(tokenizer)  # the document-start token burrow models are trained with
        self.max_length = int(getattr(model, "config").max_seq_len)  # noqa: B009 (typed loosely: any model)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), dtype=np.int64)

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Byte ends from prefix decodes (exact for any tokenizer; O(L²) decoding, fine below ~10k tokens)."""
        ids = self.encode(text)
        return ids, prefix_byte_ends(self.tokenizer.decode_batch, ids.tolist(), text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def _logits(self, inputs: Tensor) -> Tensor:
        logits: Tensor = self.module(inputs)
        return logits

    def new_cache(self) -> Any:
        make = getattr(self.module, "new_cache", None)
        return make(1, self.max_length) if make is not None else None

    def _step(self, inputs: Tensor, cache: Any) -> Tensor:
        logits: Tensor = self.module(inputs, cache=cache)
        return logits


class HFLM(_TorchLM):
    """A Hugging Face causal LM with its own (fast) tokenizer."""

    @classmethod
    def load(cls, name: str, gguf_file: str | None = None) -> HFLM:
        """Same as :func:`load_hf_lm`."""
        return load_hf_lm(name, gguf_file)

    def __init__(self, model: Any, tokenizer: Any, name: str = "hf") -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise BurrowError(f"{name}: in-context scoring needs a fast tokenizer (for byte offsets)")
        self.module, self.tokenizer, self.name = model, tokenizer, name
        self.module.eval()
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise BurrowError(f"{name}: its tokenizer has neither a bos nor an eos token to start documents with")
        self.start_id = int(start)
        self.max_length = int(getattr(model.config, "max_position_embeddings", 2048))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ends = np.array([e for _, e in enc["offset_mapping"]], dtype=np.int64)
        return np.asarray(enc["input_ids"], dtype=np.int64), char_to_byte_offsets(text, ends)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def _logits(self, inputs: Tensor) -> Tensor:
        logits: Tensor = self.module(input_ids=inputs).logits
        return logits

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache()

    def _step(self, inputs: Tensor, cache: Any) -> Tensor:
        # transformers >= 5 names the argument ``cache``; earlier versions ``past_key_values``.
        params = inspect.signature(self.module.forward).parameters
        kwargs: dict[str, Any] = {"cache" if "cache" in params else "past_key_values": cache}
        if "logits_to_keep" in params:  # only the last position's logits are used: skip the rest of the head
            kwargs["logits_to_keep"] = 1
        logits: Tensor = self.module(input_ids=inputs, use_cache=True, **kwargs).logits
        return logits


def load_hf_lm(name: str, gguf_file: str | None = None) -> HFLM:
    """An :class:`HFLM` from ``smollm2``, a local folder or a hub id (offline unless allowed)."""
    from transformers import AutoTokenizer

    from burrow.model.hf import load_hf_causal_lm, resolve_hf_base

    model = load_hf_causal_lm(name, gguf_file)
    path, gguf = resolve_hf_base(name, gguf_file)
    try:
        tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise BurrowError(f"cannot load the tokenizer of {name!r}: {e}") from None
    return HFLM(model, tok, name=name)


def char_to_byte_offsets(text: str, char_offsets: np.ndarray) -> np.ndarray:
    """UTF-8 byte offsets of character offsets into ``text``, made non-decreasing."""
    widths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    cum = np.concatenate([[0], np.cumsum(widths)])  # (len(text) + 1,) byte offset of each char offset
    out = cum[np.clip(char_offsets, 0, len(text))]
    return np.maximum.accumulate(out) if len(out) else out


def prefix_byte_ends(decode_batch: Any, ids: list[int], text: str, block: int = 256) -> np.ndarray:
    """(L,) bytes of ``text`` settled by each prefix ids[:i + 1] (the longest common prefix of its decode)."""
    full = text.encode("utf-8")
    ends = np.zeros(len(ids), dtype=np.int64)
    for a in range(0, len(ids), block):
        texts = decode_batch([ids[: i + 1] for i in range(a, min(a + block, len(ids)))])
        ends[a : a + len(texts)] = [_common_prefix(t.encode("utf-8"), full) for t in texts]
    if len(ends):
        ends[-1] = len(full)  # the whole document's bytes, even where the round trip is inexact
    return np.maximum.accumulate(ends)


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    return int(diff[0]) if len(diff) else n
