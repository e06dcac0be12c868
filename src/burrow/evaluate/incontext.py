"""In-context retrieval (In-Context RALM, Ram et al. 2023): a frozen causal LM reads retrieved passages.

Shape legend: b windows in a batch, n tokens of a window, v vocabulary, L tokens of a document in the
LM's own tokenizer, s stride, q query tokens, C the LM's context (``max_context``).

Any causal LM scores a document with its own tokenizer. The document z = [start] + d (start: the
LM's bos, else its eos) is walked in blocks of s tokens; block [t, t + s) is scored in one forward
over

    window = passage + z[a : t + s]        (at most C tokens; the last ≤ s positions are scored)

where passage = [start] + the LM tokens of the top retrieved [chunk, continuation] text(s) and a is
as early as the window allows. The query is the text of the q tokens d[t − q : t], strictly before
the scored block; blocks with t < q get no passage. The no-retrieval control is the same loop with
no passage, so both score every token once with the same stride and their documents pair. Passages
are read as text, so the memory's tokenizer need not be the LM's; chunks of a memory document whose
id and UTF-8 length equal the evaluated document's are excluded (same-document exclusion).

Bits land in the memory tokenizer's target chunks through ``EvalData.chunk_of_bytes`` (each LM
token by the byte where its text ends), so the report's bpb, bpb(α) and paired bootstrap apply.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from burrow.data.tokens import memory_documents
from burrow.device import autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.evaluate.bpb import ModelScore
from burrow.evaluate.data import EvalData
from burrow.lm import (  # noqa: F401 (re-exported: the adapters live in burrow.lm)
    HFLM,
    BurrowLM,
    InContextLM,
    char_to_byte_offsets,
    load_hf_lm,
    prefix_byte_ends,
)
from burrow.memory.bm25 import RETRIEVERS

if TYPE_CHECKING:
    from burrow.memory.memory import Memory

log = logging.getLogger(__name__)

LN2 = math.log(2.0)


MAX_CONTEXT = 1024  # C at most: tokens per forward, passages included (unless InContextConfig.max_context)


@dataclass
class InContextConfig:
    """How a frozen LM reads retrieved passages (defaults: In-Context RALM's, BM25 retrieval)."""

    stride: int = 32  # s: tokens scored per forward and per retrieval (the paper: 4–16 best, 64 costly)
    query_tokens: int | None = None  # q: LM tokens before the block that form the query; None: 32 bm25, 64 dense
    n_passages: int = 1  # retrieved [chunk, continuation] passages placed before the window, best first
    retriever: str = "bm25"  # "bm25" (lexical; best in the paper) or "dense" (the memory's encoder + FAISS)
    max_context: int | None = None  # C: tokens per forward incl. passages; None: min(LM max length, MAX_CONTEXT)
    batch_tokens: int = 4096  # about this many tokens per batched forward (windows are independent)
    device: str = "auto"  # cpu | cuda | auto
    precision: str = "auto"  # auto (bf16 autocast where fast) | bf16 | fp16 | fp32; log-probs are fp32
    max_docs: int | None = None  # score only the first documents of the data set

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise BurrowError(f"stride must be >= 1, not {self.stride}")
        if self.query_tokens is not None and self.query_tokens < 1:
            raise BurrowError(f"query_tokens must be >= 1, not {self.query_tokens}")
        if self.n_passages < 1:
            raise BurrowError(f"n_passages must be >= 1, not {self.n_passages} (the control: memory None)")
        if self.retriever not in RETRIEVERS:
            raise BurrowError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {self.retriever!r}")
        if self.max_context is not None and self.max_context < self.stride + 2:
            raise BurrowError(f"max_context ({self.max_context}) must exceed the stride ({self.stride}) + 1")
        if self.batch_tokens < 1:
            raise BurrowError(f"batch_tokens must be >= 1, not {self.batch_tokens}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise BurrowError(f"precision must be auto|bf16|fp16|fp32, not {self.precision!r}")
        if self.max_docs is not None and self.max_docs < 1:
            raise BurrowError(f"max_docs must be >= 1, not {self.max_docs}")

    @property
    def query_len(self) -> int:
        """q: the literature's default per retriever unless set."""
        if self.query_tokens is not None:
            return self.query_tokens
        return 32 if self.retriever == "bm25" else 64


# ------------------------------------------------------------------------------------------ scoring


@dataclass
class DocumentBits:
    """One document scored by an LM in its own tokenizer."""

    ids: np.ndarray  # (L,) LM token ids of the document
    byte_ends: np.ndarray  # (L,) UTF-8 byte where each token's text ends
    bits: np.ndarray  # (L,) float64 −log2 p of each token


@dataclass
class _Job:
    """One forward: inputs = passage + z[a : e]; its last e − t positions predict d[t : e]."""

    doc: int
    t: int  # first scored document token
    e: int  # one past the last
    inputs: np.ndarray  # (n,) int64


def _windows(lm: InContextLM, ids: np.ndarray, doc: int, passages: dict[int, np.ndarray], stride: int,
             context: int) -> list[_Job]:
    """The jobs of one document: blocks [t, t + s), each with its passage (if any) and the longest context."""
    z = np.concatenate([[lm.start_id], ids]).astype(np.int64)  # z[j] predicts d[j] = z[j + 1]
    jobs = []
    for t in range(0, len(ids), stride):
        e = min(t + stride, len(ids))
        passage = passages.get(t, np.zeros(0, dtype=np.int64))[: context - stride]  # the block always fits
        a = max(0, e - (context - len(passage)))
        jobs.append(_Job(doc, t, e, np.concatenate([passage, z[a:e]])))
    return jobs


def _batches(jobs: list[_Job], batch_tokens: int) -> Iterator[list[_Job]]:
    """Longest first, about ``batch_tokens`` (rows × longest row) per batch."""
    order = sorted(jobs, key=lambda j: -len(j.inputs))
    batch: list[_Job] = []
    for job in order:
        if batch and (len(batch) + 1) * len(batch[0].inputs) > batch_tokens:
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def _run(lm: InContextLM, jobs: list[_Job], docs: list[np.ndarray], config: InContextConfig,
         device: torch.device) -> list[np.ndarray]:
    """Bits (L,) of every document token; each token is scored by exactly one job."""
    dtype = autocast_dtype(device, config.precision)
    bits = [np.full(len(d), np.nan) for d in docs]
    for batch in _batches(jobs, config.batch_tokens):
        n = len(batch[0].inputs)
        inputs = torch.zeros(len(batch), n, dtype=torch.long)  # right-padded: causal, so padding is never read
        targets = torch.zeros(len(batch), n, dtype=torch.long)
        scored = torch.zeros(len(batch), n, dtype=torch.bool)  # only the block's positions are scored
        for i, job in enumerate(batch):
            w, c = len(job.inputs), job.e - job.t
            inputs[i, :w] = torch.from_numpy(job.inputs)
            targets[i, w - c : w] = torch.from_numpy(docs[job.doc][job.t : job.e])
            scored[i, w - c : w] = True
        lp = lm.target_log_probs(inputs, targets, dtype, scored).numpy()  # (b, n)
        for i, job in enumerate(batch):
            w, c = len(job.inputs), job.e - job.t
            bits[job.doc][job.t : job.e] = -lp[i, w - c : w] / LN2
    missing = sum(int(np.isnan(b).sum()) for b in bits)
    if missing:  # pragma: no cover - a bug in the window plan
        raise BurrowError(f"{missing} tokens were not scored")
    return bits


def _passages(lm: InContextLM, docs: list[np.ndarray], doc_ids: Sequence[str], doc_bytes: Sequence[int] | np.ndarray,
              memory: Memory, config: InContextConfig) -> list[dict[int, np.ndarray]]:
    """Per document, block start t -> passage tokens ([start] + LM tokens of each retrieved text)."""
    q, s = config.query_len, config.stride
    where = [(d, t) for d, ids in enumerate(docs) for t in range(0, len(ids), s) if t >= q]
    out: list[dict[int, np.ndarray]] = [{} for _ in docs]
    if not where:
        return out
    queries = [lm.decode(docs[d][t - q : t].tolist()) for d, t in where]  # strictly before the block
    mem_doc = memory_documents(doc_ids, doc_bytes, memory.store.docs)
    exclude = np.array([mem_doc[d] for d, _ in where], dtype=np.int64)
    res = memory.search(queries, k=config.n_passages, exclude_docs=exclude, retriever=config.retriever)
    cache: dict[int, np.ndarray] = {}
    for row, (d, t) in enumerate(where):
        parts = []
        for j in range(config.n_passages):
            cid = int(res.ids[row, j])
            if cid < 0:
                continue
            if cid not in cache:
                cache[cid] = np.concatenate([[lm.start_id], lm.encode(res.texts[row][j])]).astype(np.int64)
            parts.append(cache[cid])
        if parts:
            out[d][t] = np.concatenate(parts)
    return out


def document_bits(lm: InContextLM, texts: Sequence[str], doc_ids: Sequence[str], memory: Memory | None,
                  config: InContextConfig, doc_bytes: Sequence[int] | np.ndarray | None = None) -> list[DocumentBits]:
    """Score ``texts`` with ``lm`` in its own tokenizer, with passages retrieved from ``memory`` (never from the
    memory's copy of the document itself: same id and ``doc_bytes``, by default the texts' UTF-8 lengths).

    ``memory`` None: the no-retrieval control (the same windows with no passage).
    """
    device = pick_device(config.device)
    lm.to(device)
    context = min(lm.max_length, MAX_CONTEXT) if config.max_context is None else config.max_context
    if context < config.stride + 2:
        raise BurrowError(f"the LM's context ({context}) must exceed the stride ({config.stride}) + 1")
    encoded = [lm.encode_with_offsets(t) for t in texts]
    if any(len(ids) == 0 for ids, _ in encoded):
        raise BurrowError("a document has no tokens in the LM's tokenizer")
    docs = [ids for ids, _ in encoded]
    if doc_bytes is None:
        doc_bytes = [len(t.encode("utf-8")) for t in texts]
    passages = [{} for _ in docs] if memory is None else _passages(lm, docs, doc_ids, doc_bytes, memory, config)
    jobs = [j for d, ids in enumerate(docs) for j in _windows(lm, ids, d, passages[d], config.stride, context)]
    bits = _run(lm, jobs, docs, config, device)
    return [DocumentBits(ids, ends, b) for (ids, ends), b in zip(encoded, bits, strict=True)]


def score_incontext(name: str, lm: InContextLM, data: EvalData, memory: Memory | None,
                    config: InContextConfig) -> ModelScore:
    """A :class:`ModelScore` named ``name`` of ``lm`` on ``data``, reading passages from ``memory``.

    Mode ``incontext``; with ``memory`` None the no-retrieval control, mode ``baseline``. Uses
    ``data.texts``; with ``config.max_docs`` only the first documents (and their chunks) are scored.
    """
    if data.texts is None:
        raise BurrowError("in-context scoring needs the documents' text (EvalData.texts)")
    n_docs = data.n_docs if config.max_docs is None else min(config.max_docs, data.n_docs)
    t0 = time.perf_counter()
    scored = document_bits(lm, data.texts[:n_docs], data.doc_ids[:n_docs], memory, config, data.doc_bytes[:n_docs])
    chunk_bits = np.zeros(int(data.chunk_offsets[n_docs]), dtype=np.float64)  # (q,) of the scored documents
    for d, doc in enumerate(scored):
        np.add.at(chunk_bits, data.chunk_of_bytes(d, doc.byte_ends), doc.bits)
    doc_bits = np.array([doc.bits.sum() for doc in scored], dtype=np.float64)
    # the control's mode is "windows", never "baseline": it is a method's own base, not a model the gains of the
    # main table may be measured against (with RETRO runs only it had become their reference)
    score = ModelScore(name, "windows" if memory is None else "incontext", None, doc_bits, chunk_bits,
                       data.doc_bytes[:n_docs])
    log.info("%s: %.4f bpb over %d documents (%.1f s)", name, score.bpb, n_docs, time.perf_counter() - t0)
    return score


def incontext_scores(lm: InContextLM, data: EvalData, memory: Memory,
                     config: InContextConfig) -> tuple[ModelScore, ModelScore]:
    """(no-retrieval control, in-context retrieval): the same windows and strides, so documents pair."""
    return (score_incontext(lm.name, lm, data, None, config),
            score_incontext(f"{lm.name} +in-context {config.retriever}", lm, data, memory, config))
