"""The two kinds of model a task run scores, behind one small interface: tokens in, logits out.

Shape legend: b rows, n tokens of a row, l chunks, k neighbours, r retrieved tokens (2m), v vocabulary.

* :class:`BurrowBackend`: a burrow model (baseline, RETRO, RETRO-fitted HF) with the memory's
  tokenizer. Every request is read as a document in the one chunk layout
  (:mod:`burrow.data.layout`): ``[pad] × (m − 1) + [s] + tokens``, so its chunks are the memory's
  chunks and RETRO[ON] retrieves exactly as ``burrow eval`` and ``burrow generate`` do.
* :class:`HFBackend`: a plain Hugging Face causal LM (:class:`burrow.lm.HFLM`: ``smollm2``, a
  local folder, a hub id), read as lm-eval's own ``hf`` backend reads it (no layout, its own
  tokenizer, the bos token only before an empty context).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor

from burrow.data.layout import prefix, start_token
from burrow.data.tokenizer import Tokenizer
from burrow.lm import HFLM
from burrow.model.protocol import RetrievalLM


class BurrowBackend:
    """A burrow model and the tokenizer of its memory."""

    layout = True  # requests are documents in the chunk layout

    def __init__(self, model: RetrievalLM, tokenizer: Tokenizer) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.chunk_size = int(model.config.chunk_size)
        self.max_length = int(model.config.max_seq_len)
        self.start_id = start_token(tokenizer)
        self.pad_id = int(tokenizer.pad_id)
        self.eos_id = int(tokenizer.eos_id) if tokenizer.eos_id is not None else self.start_id
        self.retro = bool(model.config.retro)

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """``text``'s ids in the memory's tokenizer (the document layout adds the start token itself)."""
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def head(self) -> list[int]:
        """Input chunk 0 of every document: m − 1 pads, then the document-start token s."""
        return prefix(self.chunk_size, self.start_id, self.pad_id)

    def to(self, device: torch.device) -> None:
        self.model.to(device)

    def forward(self, tokens: Tensor, neighbours: Tensor | None, mask: Tensor | None, keep: int) -> Tensor:
        """Logits (b, keep, v) of the last ``keep`` positions of tokens (b, n), with neighbours (b, l, k, r) and
        mask (b, l, k) for RETRO[ON]."""
        logits: Tensor = self.model(tokens, neighbours=neighbours, neighbour_mask=mask)
        return logits[:, -keep:]


class HFBackend:
    """A Hugging Face causal LM with its own tokenizer."""

    layout = False
    chunk_size = 0
    retro = False

    def __init__(self, lm: HFLM) -> None:
        self.lm = lm
        self.max_length = int(lm.max_length)
        self.start_id = int(lm.start_id)  # bos, else eos: lm-eval's prefix token
        tok = lm.tokenizer
        self.eos_id = int(tok.eos_token_id) if tok.eos_token_id is not None else self.start_id
        self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_id
        self.keeps_logits = "logits_to_keep" in inspect.signature(lm.module.forward).parameters

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """``text``'s ids as lm-eval's ``hf`` backend encodes them: by default with the tokenizer's own special
        tokens (a Llama or Gemma tokenizer's bos before every context; SmolLM2's adds none), but no second bos
        when the text already starts with it."""
        if add_special_tokens is None:
            bos = self.lm.tokenizer.bos_token
            add_special_tokens = not (isinstance(bos, str) and bos and text.startswith(bos))
        if not add_special_tokens:
            return [int(i) for i in self.lm.encode(text)]
        return [int(i) for i in self.lm.tokenizer(text)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.lm.decode(list(ids))

    def to(self, device: torch.device) -> None:
        self.lm.to(device)

    def forward(self, tokens: Tensor, neighbours: Tensor | None, mask: Tensor | None, keep: int) -> Tensor:
        """Logits (b, keep, v) of the last ``keep`` positions: the head runs only there when the model allows
        (``logits_to_keep``; the head is ~20% of a small LM's compute and its (b, n, v) output the bulk of memory)."""
        if self.keeps_logits:
            logits: Tensor = self.lm.module(input_ids=tokens, logits_to_keep=keep).logits
            return logits
        return self.lm.module(input_ids=tokens).logits[:, -keep:]


Backend = BurrowBackend | HFBackend
