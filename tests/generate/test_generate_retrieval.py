"""Retrieval happens at every chunk boundary, with the last m tokens as the query, and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from burrow.data.layout import prefix, start_token
from burrow.generate import GenerationConfig, Generator
from burrow.model import load_model


class SearchSpy:
    """Wraps a memory: records every token query passed to search, forwards everything else."""

    def __init__(self, memory) -> None:
        self.memory = memory
        self.queries: list[np.ndarray] = []
        self.ks: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.memory, name)

    def search(self, queries, k=2, **kwargs):
        self.queries.append(np.asarray(queries).copy())
        self.ks.append(k)
        return self.memory.search(queries, k=k, **kwargs)


@pytest.mark.parametrize("prompt", ["", "Owls hunt", "Chess is a board game for two players. Each player moves"])
def test_retrieval_at_every_chunk_boundary_with_last_m_tokens(prompt: str, gen_memory, retro_dir) -> None:
    spy = SearchSpy(gen_memory)
    gen = Generator(load_model(retro_dir), spy, device="cpu", precision="fp32")
    res = gen.generate(prompt, GenerationConfig(greedy=True, max_new_tokens=29, k=3))
    m = gen_memory.chunk_size
    tok = gen_memory.tokenizer
    text = [*tok.encode(prompt), *res.tokens]  # prompt + generated, cut into chunks as the memory cuts documents
    seq = [*prefix(m, start_token(tok), tok.pad_id), *text]
    p0 = len(seq) - len(res.tokens)
    calls = list(spy.queries)
    prompt_chunks = p0 // m - 1  # complete chunks of the prompt (the document-start chunk is never a query)
    if prompt_chunks:  # the prompt's complete chunks, in one batch, before any generation
        first = calls.pop(0)
        assert first.tolist() == [text[c * m:(c + 1) * m] for c in range(prompt_chunks)]
    # every boundary a later token reads: none after the last token when the length budget ends generation
    end = len(seq) if res.finish_reason == "length" else len(seq) + 1
    boundaries = [n for n in range(p0 + 1, end) if n % m == 0]
    assert len(calls) == len(boundaries) > 0
    for query, n in zip(calls, boundaries, strict=True):
        assert query.shape == (1, m)
        assert query[0].tolist() == seq[n - m:n]  # the last m tokens when the length reached n
    assert set(spy.ks) == {3}


def test_attributions_use_the_previous_chunks_neighbours(gen_memory, retro_dir) -> None:
    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    res = gen.generate("Owls hunt at night, turning", GenerationConfig(greedy=True, max_new_tokens=20))
    m = gen_memory.chunk_size
    chunks = [a.chunk for a in res.chunks]
    assert len(res.tokens) == 20 and chunks == list(range(chunks[0], chunks[0] + len(chunks)))  # consecutive
    for a in res.chunks:
        assert a.query_chunk == (a.chunk - 1 if a.chunk > 1 else None)  # chunk 0 (pads, s) is never a query
        assert len(a.tokens) <= m and a.text == res.text[a.text_start:a.text_end]
        assert len(a.neighbours) == (2 if a.chunk > 1 else 0)
    assert "".join(a.text for a in res.chunks) == res.text  # the chunks partition the generated text


def test_baseline_and_retrieval_off_never_search(gen_memory, retro_dir, base_dir) -> None:
    for model_dir, cfg in ((base_dir, GenerationConfig(greedy=True, max_new_tokens=20)),
                           (retro_dir, GenerationConfig(greedy=True, max_new_tokens=20, retrieval=False))):
        spy = SearchSpy(gen_memory)
        res = Generator(load_model(model_dir), spy, device="cpu", precision="fp32").generate("Owls hunt", cfg)
        assert spy.queries == [] and res.chunks == [] and len(res.tokens) == 20


def test_warm_up_opens_the_memory_before_any_generation(gen_memory, retro_dir) -> None:
    """`burrow generate` warms the generator first, so its seconds (and tokens/s) time generating, not
    loading the encoder and index (~3 s on the demo's memory, which made the CLI report 75 tokens/s for 300)."""
    from burrow.memory import Memory

    fresh = Memory(gen_memory.dir, encoder=gen_memory.encoder)
    gen = Generator(load_model(retro_dir), fresh, device="cpu", precision="fp32")
    assert "index" not in vars(fresh)
    gen.warm_up()
    assert "index" in vars(fresh) and "chunks" in vars(fresh)
