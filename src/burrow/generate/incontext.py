"""Generation with a pretrained causal LM reading the memory in context (In-Context RALM, Ram et al. 2023).

Shape legend: C tokens of the LM's window, s stride (tokens per retrieval), q query tokens, k passages,
B tokens reserved for passages, v vocabulary.

No retraining: a frozen LM (Hugging Face, e.g. SmolLM2, or a burrow baseline) sees, before the prompt
window, the text of the k memory neighbours ([chunk, continuation], decoded by the memory's tokenizer
and re-encoded by the LM's) retrieved with the last q tokens of prompt + generated text. Retrieval
is refreshed every s generated tokens (defaults s = q = 32), so generation runs in *blocks*:

    window(block b) = [start] + passage_1 + … + [start] + passage_k + [start] + tail(prompt + generated)

where start is the LM's bos (else eos), the passages take at most B tokens and the tail at most
C − B − 1 − s. At each block start the new window is fed once when it changed (new passages
invalidate the KV cache; when the same passages come back, or without retrieval, the cache already
holds the window and is kept), then the block's s tokens are decoded one at a time with the LM's KV
cache (HF ``DynamicCache`` or a burrow cache); ``GenerationConfig(kv_cache=False)`` recomputes the window at
every step instead. Retrieval off is the same LM, the same blocks, with no passage.

Events and JSON shapes are :class:`~burrow.generate.generator.Generator`'s: a token event's
``chunk`` is its block, and one attribution per block lists the passages it read (rank, memory chunk
id, distance — squared L2 for ``dense``, the negated BM25 score for ``bm25`` —, source, text) with the
longest span copied from each, reported when at least ``min_copy`` LM tokens long.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from burrow.device import autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.generate.attribution import ChunkAttribution, NeighbourInfo, best_span, copied_span
from burrow.generate.config import GenerationConfig
from burrow.generate.generator import (
    AttributionEvent,
    DoneEvent,
    Event,
    GenerationResult,
    SettledAttributions,
    TokenEvent,
    _clamp,
)
from burrow.generate.sampling import make_generator, sample_next
from burrow.generate.text import Detokenizer, StopMatcher
from burrow.memory.bm25 import RETRIEVERS

log = logging.getLogger(__name__)


@dataclass
class LMInfo:
    """What chat, serving and the page need to know of an in-context generator's LM."""

    name: str
    max_seq_len: int  # longest prompt + generated tail the window holds (passages and a block excluded)
    context: int  # C
    vocab_size: int
    parameters: int
    retro: bool = False
    chunk_size: int = 0  # the memory's m (0 without a memory)


class InContextGenerator:
    """Generates with ``lm`` (:class:`~burrow.lm.HFLM` or :class:`~burrow.lm.BurrowLM`)
    reading passages retrieved from ``memory`` (None: the LM alone)."""

    def __init__(self, lm: Any, memory: Any | None, retriever: str = "bm25", stride: int = 32,
                 query_tokens: int = 32, max_context: int | None = 2048, passage_tokens: int = 384,
                 device: str | None = None, precision: str = "auto") -> None:
        if retriever not in RETRIEVERS:
            raise BurrowError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {retriever!r}")
        if stride < 1 or query_tokens < 1:
            raise BurrowError(f"stride and query tokens must be ≥ 1, got {stride} and {query_tokens}")
        self.lm, self.memory, self.retriever = lm, memory, retriever
        self.stride, self.query_tokens = stride, query_tokens
        self.device = pick_device(device)
        # auto: fp32 on CPU (SmolLM2-135M without bf16 units: 15.8 tokens/s fp32, 12.6 bf16), else autocast
        auto_fp32 = precision == "auto" and self.device.type == "cpu"
        self.dtype = None if auto_fp32 else autocast_dtype(self.device, precision)
        lm.to(self.device)
        self.context = int(min(lm.max_length, max_context or lm.max_length))
        self.passage_tokens = passage_tokens if memory is not None else 0
        room = self.context - self.passage_tokens - 1 - stride
        if room < 8:
            raise BurrowError(f"the LM's window ({self.context} tokens) leaves no room for a prompt after "
                              f"{self.passage_tokens} passage tokens and a {stride}-token block; "
                              "lower --stride or use an LM with a longer context")
        self.tokenizer = lm  # encode / decode in the LM's tokenizer (chat measures prompts with it)
        self.config = LMInfo(str(lm.name), room, self.context, *_vocab_and_size(lm),
                             chunk_size=int(memory.chunk_size) if memory is not None else 0)
        if hasattr(lm, "autocast_weights"):  # decoding reads pre-cast weights under autocast (same logits)
            self.lm = self.tokenizer = lm = lm.autocast_weights(self.dtype)
        self.eos_ids, self.banned_ids, self.special_ids = _special_ids(lm)
        if memory is not None:
            self._check_tokenizer()
        self.name = lm.name

    @property
    def retro(self) -> bool:
        """True when there is a memory to read (what ``retrieval`` switches)."""
        return self.memory is not None

    @property
    def chat_template(self) -> bool:
        """True when the LM's tokenizer has its own chat template."""
        tok = getattr(self.lm, "tokenizer", None)
        return bool(getattr(tok, "chat_template", None))

    def warm_up(self) -> None:
        """Open the memory's lazily loaded parts for this retriever now (see ``Generator.warm_up``)."""
        if self.memory is not None:
            self.memory.warm_up(self.retriever)

    def stream(self, prompt: str, config: GenerationConfig | None = None) -> Iterator[Event]:
        """Continue ``prompt``: token events, one attribution per block, then a done event."""
        return _Reading(self, prompt, config or GenerationConfig()).events()

    def generate(self, prompt: str, config: GenerationConfig | None = None) -> GenerationResult:
        """Generate without streaming."""
        for event in self.stream(prompt, config):
            if isinstance(event, DoneEvent):
                return event.result
        raise RuntimeError("generation ended without a result")  # pragma: no cover

    def encode(self, text: str) -> list[int]:
        """LM token ids of ``text``."""
        return [int(t) for t in self.lm.encode(text)]

    def query_text(self, ids: list[int]) -> str:
        """The retrieval query of token ids: their text without special tokens (chat markup)."""
        return str(self.lm.decode([t for t in ids if t not in self.special_ids])).strip()

    def _check_tokenizer(self) -> None:
        """Refuse an LM whose tokenizer cannot write the memory's text (unknown tokens, lossy round trip)."""
        assert self.memory is not None
        n = min(len(self.memory.chunks), 8)
        if n == 0:
            return
        text = " ".join(self.memory.tokenizer.decode_batch(self.memory.chunk_tokens(np.arange(n)).tolist()))[:2000]
        ids = self.encode(text)
        unk = getattr(getattr(self.lm, "tokenizer", None), "unk_token_id", None)
        unk_share = sum(t == unk for t in ids) / max(1, len(ids)) if unk is not None else 0.0
        back = str(self.lm.decode(ids))
        similar = difflib.SequenceMatcher(None, "".join(text.split()), "".join(back.split()), autojunk=False).ratio()
        if not ids or unk_share > 0.05 or similar < 0.9:
            raise BurrowError(f"{self.lm.name}'s tokenizer cannot encode this memory's text ({unk_share:.0%} unknown "
                              f"tokens, round trip {similar:.0%} similar); use an LM whose tokenizer covers the "
                              "memory's language and script")


def _vocab_and_size(lm: Any) -> tuple[int, int]:
    tok = getattr(lm, "tokenizer", None)
    vocab = len(tok) if tok is not None and hasattr(tok, "__len__") else int(getattr(tok, "vocab_size", 0))
    params = sum(p.numel() for p in lm.module.parameters())
    return vocab, params


def _special_ids(lm: Any) -> tuple[set[int], list[int], set[int]]:
    """(ids that end generation, ids never sampled, ids left out of retrieval queries)."""
    tok = lm.tokenizer
    if hasattr(tok, "all_special_ids"):  # a Hugging Face tokenizer: any special token ends a continuation
        special = {int(t) for t in tok.all_special_ids}
        eos = {int(tok.eos_token_id)} if tok.eos_token_id is not None else set()
        return eos | special, list(range(len(tok), int(lm.module.config.vocab_size))), special
    vocab = int(getattr(lm.module, "config").vocab_size)  # noqa: B009 (a burrow model)
    banned = list(range(tok.vocab_size, vocab))
    if tok.pad_id != tok.eos_id:
        banned.append(int(tok.pad_id))
    return ({int(tok.eos_id)} if tok.eos_id is not None else set()), banned, {int(tok.pad_id)}


@dataclass
class _Passage:
    rank: int
    chunk_id: int
    distance: float
    source: str
    doc_id: str
    text: str
    ids: np.ndarray  # its LM tokens (without the start token)


class _Reading:
    """The state of one in-context generation."""

    def __init__(self, gen: InContextGenerator, prompt: str, config: GenerationConfig) -> None:
        self.gen, self.cfg, self.prompt = gen, config, prompt
        self.prompt_ids = gen.encode(prompt)
        self.seq = list(self.prompt_ids)
        self.p0 = len(self.seq)
        if self.p0 > gen.config.max_seq_len:
            raise BurrowError(f"the prompt is {self.p0} tokens; {gen.lm.name}'s {gen.context}-token window holds at "
                              f"most {gen.config.max_seq_len} after {gen.passage_tokens} tokens of retrieved passages "
                              f"and a {gen.stride}-token block; shorten the prompt")
        self.budget = config.max_new_tokens
        self.retrieving = gen.memory is not None and config.retrieval
        self.start_id = int(gen.lm.start_id)
        self.detok = Detokenizer(gen.lm, self.seq)
        self.stops = StopMatcher(config.stop)
        self.settled = SettledAttributions(self.stops)
        self.seed = None if config.is_greedy else (config.seed if config.seed is not None
                                                   else int.from_bytes(os.urandom(4), "little"))
        self.rng = None if self.seed is None else make_generator(gen.device, self.seed)
        self.chunks: list[ChunkAttribution] = []
        self.passages: list[_Passage] = []
        self.read: list[_Passage] = []  # what of them the window holds (the passage budget may cut the last ones)
        self.window: list[int] = []  # what the LM has read (cache) or reads (recompute)
        self.cache: Any = None
        self.banned: Tensor | None = None
        self.block_start = 0  # generated-token index where the current block starts
        self.search_seconds = 0.0  # of the run's seconds, the time spent searching the memory

    @property
    def generated(self) -> list[int]:
        return self.seq[self.p0:]

    def events(self) -> Iterator[Event]:
        t0 = time.perf_counter()
        finish = "length"
        logits = self._start_block(0)
        for i in range(self.budget):
            token = sample_next(logits.index_fill(0, self._banned(logits), float("-inf")), self.cfg, self.rng)
            if token in self.gen.eos_ids:
                finish = "eos"
                break
            self.seq.append(token)
            text = self.stops.feed(self.detok.push(token))
            if text:
                yield TokenEvent(text, token, i, i // self.gen.stride)
                yield from self.settled.events()
            if self.stops.cut is not None:
                finish = "stop"
                break
            if i + 1 == self.budget:
                break
            if (i + 1) % self.gen.stride == 0:  # block complete: report it, retrieve again, refeed
                if self.retrieving:
                    yield from self.settled.events(self._attribute(i // self.gen.stride, i + 1))
                logits = self._start_block(i + 1)
            else:
                logits = self._extend(token)
        yield from self._finish(finish, time.perf_counter() - t0)

    def _banned(self, logits: Tensor) -> Tensor:
        if self.banned is None:
            ids = [t for t in self.gen.banned_ids if t < logits.numel()]
            self.banned = torch.tensor(ids, dtype=torch.long, device=logits.device)
        return self.banned

    def _start_block(self, i: int) -> Tensor:
        """Block starting at generated token i: retrieve with the last q tokens, build and feed the window."""
        gen = self.gen
        self.block_start = i
        if self.retrieving:
            self.passages = self._retrieve(self.seq[-gen.query_tokens:])
        head: list[int] = []  # [s] + passage, … cut at the passage budget: only what fits is read (and attributed)
        self.read = []
        for p in self.passages:
            if len(head) >= gen.passage_tokens:
                break
            head.append(self.start_id)
            ids = p.ids[: gen.passage_tokens - len(head)]
            head += ids.tolist()
            if len(ids) == len(p.ids):
                self.read.append(p)
            elif len(ids):  # its first tokens only
                self.read.append(dataclasses.replace(p, ids=ids, text=gen.lm.decode(ids.tolist())))
        window = [*head, self.start_id, *self.seq[-gen.config.max_seq_len:]]
        if self.cache is not None and window[:-1] == self.window:
            return self._extend(window[-1])  # same passages, same tail start: the cache holds the window
        self.window = window
        self.cache = gen.lm.new_cache() if self.cfg.kv_cache else None
        return self._feed(self.window)

    def _extend(self, token: int) -> Tensor:
        self.window.append(token)
        return self._feed([token] if self.cache is not None else self.window)

    def _feed(self, ids: list[int]) -> Tensor:
        logits: Tensor = self.gen.lm.step(ids, self.cache, self.gen.dtype)
        return logits

    def _retrieve(self, query_ids: list[int]) -> list[_Passage]:
        gen = self.gen
        query = gen.query_text(query_ids)
        if not query or gen.memory is None:
            return []
        t0 = time.perf_counter()
        res = gen.memory.search([query], k=self.cfg.k, retriever=gen.retriever)
        self.search_seconds += time.perf_counter() - t0
        out = []
        for j in range(res.ids.shape[1]):
            cid = int(res.ids[0, j])
            if cid < 0:
                continue
            text = res.texts[0][j]
            out.append(_Passage(j + 1, cid, float(res.distances[0, j]), res.sources[0][j], res.doc_ids[0][j], text,
                                np.asarray(gen.encode(text), dtype=np.int64)))
        return out

    def _attribute(self, block: int, end: int) -> AttributionEvent:
        """Attribution of generated tokens [block_start, end): the passages read and what was copied."""
        first = self.block_start
        gen_tokens = self.generated[first:end]
        detok, lm = self.detok, self.gen.lm

        def offset(i: int) -> int:
            return detok.starts[first + i] if first + i < len(detok.starts) else len(detok.text)

        start, stop = detok.starts[first], detok.end_of(end - 1)
        neighbours = []
        for p in self.read:
            info = NeighbourInfo(p.rank, p.chunk_id, p.distance, p.source, p.doc_id, p.text)
            info.copied = copied_span(gen_tokens, offset, detok.text, p.ids, p.text, p.rank, lm.decode, -1,
                                      self.cfg.min_copy)
            neighbours.append(info)
        a = ChunkAttribution(block, detok.text[start:stop], start, stop, list(gen_tokens),
                             block if self.read else None, neighbours)
        a.copied = best_span(neighbours)
        self.chunks.append(a)
        return AttributionEvent(a)

    def _finish(self, reason: str, seconds: float) -> Iterator[Event]:
        for text in (self.stops.feed(self.detok.flush()), self.stops.finish()):
            if text:
                n = len(self.generated)
                yield TokenEvent(text, self.seq[-1], n - 1, max(0, n - 1) // self.gen.stride)
        n = len(self.generated)
        partial = None
        if self.retrieving and n > self.block_start:
            partial = self._attribute(self.block_start // self.gen.stride, n)
        yield from self.settled.events(partial, final=True)
        final = self.stops.final_text
        chunks = [_clamp(a, len(final), final) for a in self.chunks]
        result = GenerationResult(self.prompt, final, self.generated, self.p0, reason, self.seed, self.retrieving,
                                  seconds, [a for a in chunks if a is not None], self.search_seconds)
        log.debug("in-context: %d tokens in %.2f s (%s)", n, seconds, reason)
        yield DoneEvent(result)


def describe(gen: InContextGenerator) -> dict[str, Any]:
    """The generator as /health and the page show it."""
    return {**dataclasses.asdict(gen.config), "method": "incontext" if gen.memory is not None else "lm",
            "retriever": gen.retriever if gen.memory is not None else None, "stride": gen.stride,
            "query_tokens": gen.query_tokens, "chat_template": gen.chat_template}
