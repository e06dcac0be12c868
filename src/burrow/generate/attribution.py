"""Attribution of a generated chunk to the neighbours it was conditioned on.

Shape legend: g generated tokens of one chunk, k neighbours, r tokens per neighbour (2m).

In RETRO, the tokens of chunk c (from the last token of chunk c-1 on) cross-attend to the
neighbours retrieved with chunk c-1, RET(C_{c-1}). So the attribution of generated chunk c lists
those neighbours (text, source document, distance) and, for each, the longest contiguous token run
the chunk shares with the neighbour's [chunk, continuation] tokens — the span copied verbatim —
as text with char offsets in both the generated text and the neighbour's text, when it is at least
``GenerationConfig.min_copy`` tokens long (default 4). The chunk's
``copied`` span is the longest over its neighbours (ties: the nearer neighbour).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from burrow.data.overlap import longest_common_runs


@dataclass
class CopiedSpan:
    """A run of tokens shared verbatim by a generated chunk and one neighbour."""

    text: str  # the shared text (== generated[generated_start:generated_end] == neighbour[...])
    tokens: int  # length of the run in tokens
    rank: int  # 1-based rank of the neighbour it was copied from
    generated_start: int  # char offsets in the whole generated text (prompt excluded)
    generated_end: int
    neighbour_start: int  # char offsets in that neighbour's text ([chunk, continuation])
    neighbour_end: int


@dataclass
class NeighbourInfo:
    """One retrieved neighbour as shown beside a generated chunk."""

    rank: int  # 1 = nearest
    chunk_id: int  # memory chunk id
    distance: float  # squared L2 between the query's and the chunk's keys
    source: str  # document source, e.g. "cats.txt:line 1"
    doc_id: str  # document id
    text: str  # decoded [chunk, continuation]
    copied: CopiedSpan | None = None  # longest span of the generated chunk found in this neighbour


@dataclass
class ChunkAttribution:
    """What a generated chunk was conditioned on and what it copied."""

    chunk: int  # absolute chunk index c in the model's sequence (document-start token included)
    text: str  # the generated part of the chunk
    text_start: int  # char offsets of that part in the whole generated text
    text_end: int
    tokens: list[int] = field(default_factory=list)  # its generated token ids
    query_chunk: int | None = None  # the chunk whose tokens were the retrieval query (c - 1)
    neighbours: list[NeighbourInfo] = field(default_factory=list)
    copied: CopiedSpan | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def longest_run(a: Sequence[int], b: Sequence[int], pad_id: int) -> tuple[int, int, int]:
    """(length, start in a, start in b) of the longest contiguous run shared by ``a`` and ``b``.

    :func:`burrow.data.overlap.longest_common_runs` on one pair; pad ids never match. Ties keep the
    earliest run in ``a``.
    """
    runs = longest_common_runs(np.asarray(a, dtype=np.int64).reshape(1, -1),
                               np.asarray(b, dtype=np.int64).reshape(1, 1, -1), pad_id)
    return int(runs.lengths[0, 0]), int(runs.query_starts[0, 0]), int(runs.neighbour_starts[0, 0])


def copied_span(gen_tokens: Sequence[int], gen_offset: Callable[[int], int], gen_text: str,
                nb_tokens: np.ndarray, nb_text: str, rank: int, decode: Callable[[Sequence[int]], str],
                pad_id: int, min_tokens: int = 1) -> CopiedSpan | None:
    """The longest run of ``gen_tokens`` found in ``nb_tokens``, located in both texts, or None (also
    when it is shorter than ``min_tokens`` or only whitespace: a shared word or two, or a blank line, is no
    evidence of copying).

    ``gen_offset(i)`` is the char offset in ``gen_text`` where generated token i of the chunk starts
    (i = len for the end). The span is kept only if its text really occurs at the reported offsets
    of both texts; when a tokenizer's prefix decodes do not line up, it is searched for instead.
    """
    n, gi, nj = longest_run(gen_tokens, nb_tokens.tolist(), pad_id)
    if n == 0 or n < min_tokens:
        return None
    gs, ge = gen_offset(gi), gen_offset(gi + n)
    ns = len(decode(nb_tokens[:nj].tolist()))
    ne = len(decode(nb_tokens[:nj + n].tolist()))
    text = gen_text[gs:ge]
    if not text or nb_text[ns:ne] != text:
        text = decode(list(gen_tokens[gi:gi + n]))
        gs = gen_text.find(text, gen_offset(0)) if text else -1
        ns = nb_text.find(text) if text else -1
        if gs < 0 or ns < 0:
            return None
        ge, ne = gs + len(text), ns + len(text)
    if not text.strip():  # a run of spaces and newlines is in every text: no evidence of copying either
        return None
    return CopiedSpan(text, n, rank, gs, ge, ns, ne)


def best_span(neighbours: Sequence[NeighbourInfo]) -> CopiedSpan | None:
    """The longest copied span over ``neighbours`` (ties: the nearest neighbour)."""
    spans = [nb.copied for nb in neighbours if nb.copied is not None]
    return max(spans, key=lambda s: (s.tokens, -s.rank)) if spans else None
