"""Causal LMs behind one small interface, for reading retrieved passages in context.

Shape legend: b rows in a batch, n tokens of a row, v vocabulary, L tokens of a text.

:class:`BurrowLM` wraps a burrow model with its tokenizer, :class:`HFLM` a Hugging Face causal LM
with its own fast tokenizer (:func:`load_hf_lm`: ``smollm2``, a local folder or a hub id). Both
score windows (``target_log_probs``, used by :mod:`burrow.evaluate.incontext`) and decode step by
step with a KV cache (``step``, used by :mod:`burrow.generate.incontext`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from burrow.data.layout import start_token
from burrow.data.tokenizer import Tokenizer
from burrow.device import autocast, autocast_weights
from burrow.errors import BurrowError, first_line


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

    def target_log_probs(self, inputs: Tensor, targets: Tensor, dtype: torch.dtype | None,
                         scored: Tensor | None = None) -> Tensor:
        """(b, n) fp32 log p(targets | inputs) for (b, n) inputs, under autocast ``dtype``; with ``scored``
        (b, n) bool only those positions are computed (the others are 0)."""
        ...


class _TorchLM:
    """Shared forward: logits under autocast, then an fp32 log-softmax gathered at the targets."""

    module: nn.Module
    device = torch.device("cpu")

    def to(self, device: torch.device) -> _TorchLM:
        self.module.to(device)
        self.device = device
        return self

    def autocast_weights(self, dtype: torch.dtype | None) -> _TorchLM:
        """This LM decoding from linear weights stored in ``dtype`` (:func:`burrow.device.autocast_weights`):
        a copy sharing the tokenizer; itself when ``dtype`` is None."""
        if dtype is None:
            return self
        twin = copy.copy(self)
        twin.module = autocast_weights(self.module, dtype)
        return twin

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
    def target_log_probs(self, inputs: Tensor, targets: Tensor, dtype: torch.dtype | None,
                         scored: Tensor | None = None) -> Tensor:
        """(b, n) fp32 log-probabilities of ``targets``; one window at a time through the softmax (big v).

        ``scored`` (b, n) bool: only these positions are computed (the others are 0); a burrow model
        then runs its output layer on them alone (in-context scoring reads the last s of ~C positions).
        """
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        if scored is not None:
            scored = scored.to(self.device)
            with autocast(self.device, dtype):
                logits = self._scored_logits(inputs, scored)  # (P, v)
            out = torch.zeros(targets.shape, dtype=torch.float32, device=self.device)
            lp = torch.empty(len(logits), dtype=torch.float32, device=self.device)
            picked = targets[scored]  # (P,)
            for a in range(0, len(logits), 1024):  # rows of the softmax at a time (big v)
                lp[a : a + 1024] = _log_probs(logits[a : a + 1024], picked[a : a + 1024])
            out[scored] = lp
            return out.cpu()
        with autocast(self.device, dtype):
            logits = self._logits(inputs)  # (b, n, v)
        out = torch.empty(targets.shape, dtype=torch.float32, device=self.device)
        for i in range(len(logits)):
            out[i] = _log_probs(logits[i], targets[i])
        return out.cpu()

    def _scored_logits(self, inputs: Tensor, scored: Tensor) -> Tensor:
        """Logits (P, v) of the ``scored`` positions of ``inputs`` (b, n), in row-major order."""
        return self._logits(inputs)[scored]


def _log_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """(r,) fp32 log-softmax of ``logits`` (r, v) at ``targets`` (r,)."""
    rows = logits.float()
    return rows.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(rows, -1)


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
        """Byte ends from prefix decodes (:func:`prefix_byte_ends`: exact; block-wise, seconds for 27k tokens)."""
        ids = self.encode(text)
        return ids, prefix_byte_ends(self.tokenizer.decode_batch, ids.tolist(), text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def _logits(self, inputs: Tensor) -> Tensor:
        logits: Tensor = self.module(inputs)
        return logits

    def _scored_logits(self, inputs: Tensor, scored: Tensor) -> Tensor:
        hidden = getattr(self.module, "hidden", None)
        if hidden is None:  # not burrow's Transformer: the full logits, then the scored rows
            return super()._scored_logits(inputs, scored)
        head: nn.Module = getattr(self.module, "head")  # noqa: B009 (burrow's Transformer: its output layer)
        logits: Tensor = head(hidden(inputs)[scored])  # (P, v): the head on scored rows only
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
    from burrow.hfcache import load_auto_tokenizer
    from burrow.model.hf import load_hf_causal_lm, resolve_hf_base

    model = load_hf_causal_lm(name, gguf_file)
    path, gguf = resolve_hf_base(name, gguf_file)
    try:
        tok = load_auto_tokenizer(path, gguf)
    except Exception as e:
        raise BurrowError(f"cannot load the tokenizer of {name!r}: {first_line(e)}") from None
    return HFLM(model, tok, name=name)


def char_to_byte_offsets(text: str, char_offsets: np.ndarray) -> np.ndarray:
    """UTF-8 byte offsets of character offsets into ``text``, made non-decreasing."""
    widths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    cum = np.concatenate([[0], np.cumsum(widths)])  # (len(text) + 1,) byte offset of each char offset
    out = cum[np.clip(char_offsets, 0, len(text))]
    return np.maximum.accumulate(out) if len(out) else out


def prefix_byte_ends(decode_batch: Any, ids: list[int], text: str, block: int = 256, lookback: int = 8) -> np.ndarray:
    """(L,) bytes of ``text`` settled by each prefix ids[:i + 1] (the longest common prefix of its decode).

    Decoding every prefix is O(L²) tokens (minutes for a 27k-token document), so each block of ``block``
    prefixes is decoded from ``lookback`` tokens before the block and appended to the block's exact
    head decode(ids[:a]); that is kept only where it checks out (every local decode extends the local
    decode of the look-back, and the block's last prefix equals its full decode), else the block is
    decoded prefix by prefix as before, as is any block whose local decodes hold a partial character
    (U+FFFD). Tokenizers whose decode is local (SentencePiece, byte-level BPE) take the fast path
    everywhere else: O(L²/block) decoding, one full decode per block (a block's head is the previous
    block's last prefix, decoded once).
    """
    full = text.encode("utf-8")
    ends = np.zeros(len(ids), dtype=np.int64)
    head = ""  # decode(ids[:a]): the empty prefix, then each block's last
    for a in range(0, len(ids), block):
        b = min(a + block, len(ids))
        got, last = _block_ends(decode_batch, ids, a, b, full, lookback, head)
        if got is None:  # decode is not local around this block: every prefix in full
            texts = decode_batch([ids[: i + 1] for i in range(a, b)])
            got, last = [_common_prefix(t.encode("utf-8"), full) for t in texts], texts[-1]
        ends[a:b] = got
        head = last
    if len(ends):
        ends[-1] = len(full)  # the whole document's bytes, even where the round trip is inexact
    return np.maximum.accumulate(ends)


def _block_ends(decode_batch: Any, ids: list[int], a: int, b: int, full: bytes, lookback: int,
                head: str) -> tuple[list[int] | None, str]:
    """(ends of prefixes a .. b - 1 from local decodes, or None where they do not provably agree;
    decode(ids[:b])), given ``head`` = decode(ids[:a])."""
    s = max(0, a - lookback)
    last, base, *local = decode_batch([ids[:b], ids[s:a], *(ids[s : i + 1] for i in range(a, b))])
    if not all(t.startswith(base) for t in local) or head + local[-1][len(base):] != last:
        return None, last
    if "\ufffd" in base or any("\ufffd" in t for t in local):
        return None, last  # a partial character: byte-fallback decoders spell a whole run of bytes as U+FFFD
    head_b = head.encode("utf-8")
    cp = _common_prefix(head_b, full)
    if cp < len(head_b):  # the text diverges inside the head: every prefix settles the same bytes
        return [cp] * (b - a), last
    rest = full[len(head_b):]
    return [len(head_b) + _common_prefix(t[len(base):].encode("utf-8"), rest) for t in local], last


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8, n) != np.frombuffer(b, np.uint8, n))
    return int(diff[0]) if len(diff) else n
