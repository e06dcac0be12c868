"""Generation with a KV cache and retrieval at every chunk boundary, streamed as events.

Shape legend: n tokens fed in one call, l chunks, m chunk length, k neighbours, r tokens per
neighbour (2m), v vocabulary.

The model's sequence is [pad] × (m − 1) + [s] + prompt + generated: the one chunk layout of
:mod:`burrow.data.layout` that training and evaluation use, where s is the document-start token (the
tokenizer's eos, else its pad id), so a prompt is read as the start of a document and its chunks are
cut as the memory's are. Whenever the sequence reaches a multiple of m tokens, chunk c = len/m - 1
is complete: its m tokens (the last m of the sequence) are the retrieval query
and the retrieved [chunk, continuation] tokens become neighbours[:, c], which the model encodes
when that chunk's last token is fed and which the next chunk's tokens attend to (RETRO's CCA). A
prompt's complete chunks are retrieved in one batch before the prefill. Attribution: see
:mod:`burrow.generate.attribution`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from burrow.data.layout import prefix, start_token
from burrow.defaults import DEFAULT_PRECISION
from burrow.device import autocast, autocast_dtype, autocast_weights, pick_device
from burrow.errors import BurrowError
from burrow.generate.attribution import ChunkAttribution, NeighbourInfo, best_span, copied_span
from burrow.generate.config import GenerationConfig
from burrow.generate.sampling import make_generator, sample_next
from burrow.generate.text import Detokenizer, StopMatcher
from burrow.memory import Memory
from burrow.model.protocol import RetrievalLM

log = logging.getLogger(__name__)


@dataclass
class TokenEvent:
    """New text: the growth of the generated text after generated token ``index``."""

    text: str
    token: int  # the token id just generated
    index: int  # 0-based index among the generated tokens
    chunk: int  # absolute chunk index of that token

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with ``type: token``."""
        return {"type": "token", **dataclasses.asdict(self)}


@dataclass
class AttributionEvent:
    """A generated chunk is complete (or generation ended inside it): its attribution."""

    attribution: ChunkAttribution

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with ``type: attribution``."""
        return {"type": "attribution", **self.attribution.to_json()}


@dataclass
class GenerationResult:
    """A finished generation."""

    prompt: str
    text: str  # generated text (prompt excluded), cut before any stop string
    tokens: list[int]  # generated token ids
    prompt_tokens: int  # tokens of the prompt (without the document-start token)
    finish_reason: str  # length | max_seq_len | eos | stop
    seed: int | None  # sampler seed (None for greedy)
    retrieval: bool  # whether neighbours were retrieved (RETRO[ON])
    seconds: float  # wall time of the whole generation, retrieval included
    chunks: list[ChunkAttribution] = field(default_factory=list)
    search_seconds: float = 0.0  # of ``seconds``, the time spent searching the memory (query encoding included)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time."""
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: text, tokens, finish reason, and per chunk its attribution."""
        out = dataclasses.asdict(self)
        out["tokens_per_second"] = self.tokens_per_second
        return out


@dataclass
class DoneEvent:
    """Generation finished; the whole result."""

    result: GenerationResult

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with ``type: done``."""
        return {"type": "done", **self.result.to_json()}


Event = TokenEvent | AttributionEvent | DoneEvent


def _versions(model: RetrievalLM) -> tuple[tuple[int, int], ...]:
    """Each parameter's identity and in-place write counter: what changed since a pre-cast copy was taken."""
    return tuple((id(p), p._version) for p in model.parameters())


class Generator:
    """Generates from a baseline or RETRO model, retrieving from ``memory`` (which also gives the tokenizer).

    Under autocast (``precision`` bf16/fp16, or auto on CUDA and bf16 CPUs) it decodes from a copy of
    the model with pre-cast linear weights (:func:`burrow.device.autocast_weights`), taken again when the
    model's weights have changed in place since (an optimizer step, ``load_state_dict``); in fp32 from
    the model itself.
    """

    def __init__(self, model: RetrievalLM, memory: Memory, device: str | None = None,
                 precision: str = DEFAULT_PRECISION) -> None:
        self.memory = memory
        self.tokenizer = memory.tokenizer
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        model = model.to(self.device).eval()
        self.n_parameters = sum(p.numel() for p in model.parameters())  # the model's own (ties counted once)
        # Under autocast: a copy with each linear weight pre-cast (same values, half the bytes per step),
        # a snapshot of ``model`` as it is now; without autocast, ``model`` itself.
        self.model = autocast_weights(model, self.dtype)
        # Weakly held: a caller who keeps no reference (the CLI) does not keep an fp32 copy alive beside it.
        self._source, self._versions = weakref.ref(model), _versions(model)
        self.config = model.config
        self._check_compatible()
        self.start_id = start_token(self.tokenizer)
        self.banned = self._banned_tokens()

    @property
    def retro(self) -> bool:
        """True for a RETRO model (retrieval possible)."""
        return bool(self.config.retro)

    def warm_up(self) -> None:
        """Open the memory's lazily loaded parts (encoder, index) now: a generation's seconds, and its
        tokens/s, then time generating, not loading (a first search otherwise pays ~3 s for them)."""
        if self.retro:
            self.memory.warm_up()

    def stream(self, prompt: str, config: GenerationConfig | None = None) -> Iterator[Event]:
        """Generate a continuation of ``prompt``: token events, attribution events, then one done event."""
        source = self._source()
        if source is not None and self.model is not source and _versions(source) != self._versions:
            self.model = autocast_weights(source, self.dtype).eval()  # the copy is stale: trained since
            self._versions = _versions(source)
        return _Decoding(self, prompt, config or GenerationConfig()).events()

    def generate(self, prompt: str, config: GenerationConfig | None = None) -> GenerationResult:
        """Generate without streaming; the result carries the text and every chunk's attribution."""
        for event in self.stream(prompt, config):
            if isinstance(event, DoneEvent):
                return event.result
        raise RuntimeError("generation ended without a result")  # pragma: no cover

    def _check_compatible(self) -> None:
        self.memory.check_vocab(self.config.vocab_size)
        self.memory.check_model(self.config)

    def _banned_tokens(self) -> Tensor:
        """Ids never sampled: the pad id (never a real token), the ids no text is encoded to (unk, bos) and ids
        past the tokenizer's vocabulary."""
        banned = list(range(self.tokenizer.vocab_size, self.config.vocab_size)) + self.tokenizer.unused_ids()
        if self.tokenizer.pad_id != self.tokenizer.eos_id:
            banned.append(self.tokenizer.pad_id)
        return torch.tensor(banned, dtype=torch.long, device=self.device)


class _Decoding:
    """The state of one generation: sequence, KV cache, neighbours, text, attributions."""

    def __init__(self, gen: Generator, prompt: str, config: GenerationConfig) -> None:
        self.gen, self.cfg, self.prompt = gen, config, prompt
        self.m = int(gen.config.chunk_size)
        self.prompt_ids = gen.tokenizer.encode(prompt)
        head = prefix(self.m, gen.start_id, gen.tokenizer.pad_id)  # input chunk 0: pads, then s
        self.seq = [*head, *self.prompt_ids]  # the model's sequence
        self.p0 = len(self.seq)  # position of the first generated token
        max_len = int(gen.config.max_seq_len)
        if self.p0 >= max_len:
            raise BurrowError(f"the prompt is {len(self.prompt_ids)} tokens; this model reads at most "
                              f"{max_len - len(head) - 1} after its {len(head)}-token document start "
                              f"(its max_seq_len is {max_len}); shorten the prompt")
        self.budget = min(config.max_new_tokens, max_len - self.p0)
        self.retrieving = gen.retro and config.retrieval
        self.cache = gen.model.new_cache(1, max_len) if config.kv_cache else None
        self.nb: Tensor | None = None
        self.nb_mask: Tensor | None = None
        if self.retrieving:
            chunks, r = -(-max_len // self.m), int(gen.config.retrieved_len)
            self.nb = torch.full((1, chunks, config.k, r), gen.tokenizer.pad_id, dtype=torch.long,
                                 device=gen.device)  # (1, l, k, r)
            self.nb_mask = torch.zeros((1, chunks, config.k), dtype=torch.bool, device=gen.device)  # (1, l, k)
        self.retrieved: dict[int, tuple[Any, int]] = {}  # chunk -> (SearchResult, row)
        self.detok = Detokenizer(gen.tokenizer, self.seq)
        self.stops = StopMatcher(config.stop)
        self.settled = SettledAttributions(self.stops)
        self.seed = None if config.is_greedy else (config.seed if config.seed is not None
                                                   else int.from_bytes(os.urandom(4), "little"))
        self.rng = None if self.seed is None else make_generator(gen.device, self.seed)
        self.chunks: list[ChunkAttribution] = []
        self.search_seconds = 0.0

    @property
    def generated(self) -> list[int]:
        """Generated token ids so far."""
        return self.seq[self.p0:]

    def events(self) -> Iterator[Event]:
        """Run the generation, yielding events as they happen."""
        t0 = time.perf_counter()
        self._retrieve(list(range(1, self.p0 // self.m)))  # chunk 0 (pads and s) is never a query
        logits = self._feed(self.seq)
        finish = "length" if self.budget == self.cfg.max_new_tokens else "max_seq_len"
        eos = self.gen.tokenizer.eos_id
        for i in range(self.budget):
            token = sample_next(logits.index_fill(0, self.gen.banned, float("-inf")), self.cfg, self.rng)
            if token == eos:
                finish = "eos"
                break
            self.seq.append(token)
            text = self.stops.feed(self.detok.push(token))
            if text:
                yield TokenEvent(text, token, i, (len(self.seq) - 1) // self.m)
                yield from self.settled.events()  # chunks whose held-back end this text settled
            stop = self.stops.cut is not None
            if len(self.seq) % self.m == 0:  # no search when no token will read its neighbours
                yield from self._chunk_complete(len(self.seq) // self.m - 1, not stop and i + 1 < self.budget)
            if stop:
                finish = "stop"
                break
            if i + 1 < self.budget:
                logits = self._feed([token])
        yield from self._finish(finish, time.perf_counter() - t0)

    def _chunk_complete(self, c: int, retrieve: bool = True) -> Iterator[Event]:
        """Chunk c is complete: report its attribution, then retrieve with it (the last m tokens)."""
        if not self.retrieving:
            return
        if (c + 1) * self.m > self.p0:
            yield from self.settled.events(self._attribute(c))
        if retrieve:
            self._retrieve([c])

    def _finish(self, reason: str, seconds: float) -> Iterator[Event]:
        """Release held text, attribute a final partial chunk, and report the result."""
        for text in (self.stops.feed(self.detok.flush()), self.stops.finish()):
            if text:
                n = len(self.generated)
                yield TokenEvent(text, self.seq[-1], n - 1, (len(self.seq) - 1) // self.m)
        partial = None
        if self.retrieving and len(self.seq) % self.m and len(self.seq) > self.p0:
            partial = self._attribute(len(self.seq) // self.m)
        yield from self.settled.events(partial, final=True)
        final = self.stops.final_text
        chunks = [_clamp(a, len(final), final) for a in self.chunks]
        result = GenerationResult(self.prompt, final, self.generated, len(self.prompt_ids), reason, self.seed,
                                  self.retrieving, seconds, [a for a in chunks if a is not None], self.search_seconds)
        log.debug("generated %d tokens in %.2f s (%s)", len(result.tokens), seconds, reason)
        yield DoneEvent(result)

    def _feed(self, tokens: list[int]) -> Tensor:
        """Run the model on ``tokens`` (appending to the cache), or on the whole sequence without one;
        returns the last position's logits (v,)."""
        model = self.gen.model
        x = torch.tensor([tokens if self.cache is not None else self.seq], dtype=torch.long, device=self.gen.device)
        kwargs: dict[str, Any] = {}
        if self.retrieving:
            kwargs = {"neighbours": self.nb, "neighbour_mask": self.nb_mask}
        with torch.inference_mode(), autocast(self.gen.device, self.gen.dtype):
            logits = model(x, cache=self.cache, **kwargs)  # (1, n, v)
        return logits[0, -1].float()

    def _retrieve(self, chunks: list[int]) -> None:
        """Search the memory with each chunk's m tokens; store the neighbours at their chunk index."""
        if not self.retrieving or not chunks:
            return
        assert self.nb is not None and self.nb_mask is not None
        queries = np.array([self.seq[c * self.m:(c + 1) * self.m] for c in chunks], dtype=np.int64)  # (q, m)
        t0 = time.perf_counter()
        res = self.gen.memory.search(queries, k=self.cfg.k)
        self.search_seconds += time.perf_counter() - t0
        tokens = torch.as_tensor(res.tokens, dtype=torch.long, device=self.gen.device)  # (q, k, r)
        ids = torch.as_tensor(res.ids, device=self.gen.device)  # (q, k)
        for row, c in enumerate(chunks):
            self.nb[0, c] = tokens[row]
            self.nb_mask[0, c] = ids[row] >= 0
            self.retrieved[c] = (res, row)

    def _attribute(self, c: int) -> AttributionEvent:
        """Attribution of the generated part of chunk c to the neighbours retrieved with chunk c - 1."""
        first = max(c * self.m, self.p0) - self.p0  # generated-token indices of the chunk
        last = min((c + 1) * self.m, len(self.seq)) - self.p0
        gen_tokens = self.generated[first:last]
        detok = self.detok
        start, end = detok.starts[first], detok.end_of(last - 1)
        attribution = ChunkAttribution(c, detok.text[start:end], start, end, list(gen_tokens),
                                       c - 1 if c - 1 in self.retrieved else None,
                                       self._neighbours(c - 1, gen_tokens, first))
        attribution.copied = best_span(attribution.neighbours)
        self.chunks.append(attribution)
        return AttributionEvent(attribution)

    def _neighbours(self, query_chunk: int, gen_tokens: list[int], first: int) -> list[NeighbourInfo]:
        """The neighbours retrieved with ``query_chunk``, each with its longest copied span."""
        if query_chunk not in self.retrieved:
            return []  # the first chunk of a sequence has no retrieval
        res, row = self.retrieved[query_chunk]
        tok, detok = self.gen.tokenizer, self.detok

        def offset(i: int) -> int:
            return detok.starts[first + i] if first + i < len(detok.starts) else len(detok.text)

        out = []
        for j in range(res.ids.shape[1]):
            if res.ids[row, j] < 0:
                continue
            info = NeighbourInfo(j + 1, int(res.ids[row, j]), float(res.distances[row, j]), res.sources[row][j],
                                 res.doc_ids[row][j], res.texts[row][j])
            info.copied = copied_span(gen_tokens, offset, detok.text, res.tokens[row, j], info.text, j + 1,
                                      tok.decode, tok.pad_id, self.cfg.min_copy)
            out.append(info)
        return out


class SettledAttributions:
    """Attribution events held until the text they cover is settled: released by the stop matcher (no stop
    string can begin in it), cut at a stop string, or at the end of generation; then streamed in order, cut
    where a stop string cut the text. A chunk ending in text the matcher held back (a stop string's start)
    was streamed whole, and the final result then cut it."""

    def __init__(self, stops: StopMatcher) -> None:
        self.stops = stops
        self.pending: list[AttributionEvent] = []

    def events(self, event: AttributionEvent | None = None, final: bool = False) -> Iterator[AttributionEvent]:
        if event is not None:
            self.pending.append(event)
        while self.pending:
            first = self.pending[0]
            if not final and self.stops.cut is None and first.attribution.text_end > self.stops.released:
                return
            self.pending.pop(0)
            shown = stop_clamped(first, self.stops)
            if shown is not None:
                yield shown


def stop_clamped(event: AttributionEvent, stops: StopMatcher) -> AttributionEvent | None:
    """``event`` as streamed: cut where a stop string cut the text (None when it begins after the cut), so no
    part of a stop string or of what followed it is streamed in an attribution either."""
    if stops.cut is None:
        return event
    a = _clamp(event.attribution, stops.cut, stops.final_text)
    return AttributionEvent(a) if a is not None else None


def _clamp(a: ChunkAttribution, n: int, final: str) -> ChunkAttribution | None:
    """``a`` cut to the first ``n`` chars of the generated text (after a stop string); None if past it."""
    if a.text_end <= n:
        return a
    if a.text_start >= n:
        return None
    nbs = [dataclasses.replace(nb, copied=nb.copied if nb.copied and nb.copied.generated_end <= n else None)
           for nb in a.neighbours]
    return dataclasses.replace(a, text=final[a.text_start:n], text_end=n, neighbours=nbs, copied=best_span(nbs))
