"""Attribution: copied spans are real substrings of their neighbour and of the generated text."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.generate import GenerationConfig, Generator, longest_run
from burrow.model import ModelCache, load_model


def brute_longest(a: list[int], b: list[int], pad: int) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            n = 0
            while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n] and a[i + n] != pad:
                n += 1
            best = max(best, n)
    return best


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.integers(0, 4), max_size=12), b=st.lists(st.integers(0, 4), max_size=20))
def test_longest_run_matches_brute_force(a: list[int], b: list[int]) -> None:
    n, i, j = longest_run(a, b, pad_id=0)
    assert n == brute_longest(a, b, pad=0)
    assert a[i:i + n] == b[j:j + n]


class CopyingModel(torch.nn.Module):
    """A stand-in RETRO model that copies: each token of chunk c+1 is the next token of the continuation
    of chunk c's nearest neighbour (else ``fallback``). Makes long verbatim spans on purpose."""

    def __init__(self, config, fallback: int, pad_id: int) -> None:
        super().__init__()
        self.config, self.fallback, self.pad_id = config, fallback, pad_id
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def new_cache(self, batch_size: int, max_len: int | None = None) -> ModelCache:
        return ModelCache(1, batch_size, max_len or self.config.max_seq_len)

    def forward(self, tokens, neighbours=None, neighbour_mask=None, cache=None):
        m = self.config.chunk_size
        p = (cache.length if cache is not None else 0) + tokens.shape[1] - 1  # position of the last token
        u, within = (p + 1) // m - 1, (p + 1) % m  # chunk whose neighbours condition position p + 1
        nxt = self.fallback
        if neighbours is not None and u >= 0 and bool(neighbour_mask[0, u, 0]):
            cand = int(neighbours[0, u, 0, m + within])
            nxt = cand if cand != self.pad_id else self.fallback
        if cache is not None:
            cache.length += tokens.shape[1]
        logits = torch.zeros(1, tokens.shape[1], self.config.vocab_size)
        logits[0, -1, nxt] = 10.0
        return logits


def check_spans(res) -> int:
    """Assert every reported span is where it says it is; return how many there are."""
    count = 0
    for chunk in res.chunks:
        assert res.text[chunk.text_start:chunk.text_end] == chunk.text
        for nb in chunk.neighbours:
            c = nb.copied
            if c is None:
                continue
            count += 1
            assert c.text and c.tokens >= 1 and c.rank == nb.rank
            assert res.text[c.generated_start:c.generated_end] == c.text
            assert nb.text[c.neighbour_start:c.neighbour_end] == c.text
            assert chunk.text_start <= c.generated_start < c.generated_end <= chunk.text_end
        if chunk.copied is not None:
            assert chunk.copied.tokens == max(nb.copied.tokens for nb in chunk.neighbours if nb.copied)
    return count


def test_a_copying_model_gets_long_spans_that_are_real_substrings(gen_memory, tiny_config) -> None:
    tok = gen_memory.tokenizer
    model = CopyingModel(tiny_config(tok.vocab_size, retro=True), fallback=tok.encode(" the")[-1], pad_id=tok.pad_id)
    gen = Generator(model, gen_memory, device="cpu", precision="fp32")
    res = gen.generate("Owls hunt at night, turning their heads to hear", GenerationConfig(greedy=True,
                                                                                          max_new_tokens=40))
    assert check_spans(res) >= 3
    longest = max(c.copied.tokens for c in res.chunks if c.copied)
    assert longest >= 6  # whole chunks copied from the neighbour's continuation
    assert all(nb.copied.tokens >= 4 for c in res.chunks for nb in c.neighbours if nb.copied)  # min_copy default
    assert any(c.copied and len(c.copied.text) >= 10 and c.copied.text in c.neighbours[0].text for c in res.chunks)


def test_spans_of_a_real_model_are_real_substrings(gen_memory, retro_dir) -> None:
    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    total = 0
    for seed in range(4):
        res = gen.generate("Bread is baked from flour", GenerationConfig(max_new_tokens=40, seed=seed, top_k=50,
                                                                         min_copy=1))  # short runs: offsets only
        total += check_spans(res)
    assert total > 0


def test_span_offsets_survive_multibyte_text(gen_memory) -> None:
    """Offsets are in characters of the decoded text, also when byte-fallback tokens make up a character."""
    from burrow.generate.attribution import copied_span

    tok = gen_memory.tokenizer
    nb_text = "Owls café — hunt at night"
    nb_tokens = np.array(tok.encode(nb_text) + [tok.pad_id] * 3)
    gen_text = "xx café — hunt"
    gen_ids = tok.encode(gen_text)
    starts = [len(tok.decode(gen_ids[:i])) for i in range(len(gen_ids))]
    span = copied_span(gen_ids, lambda i: starts[i] if i < len(starts) else len(gen_text), gen_text, nb_tokens,
                       nb_text, 1, tok.decode, tok.pad_id)
    assert span is not None and span.tokens >= 3
    assert gen_text[span.generated_start:span.generated_end] == span.text == nb_text[span.neighbour_start:
                                                                                      span.neighbour_end]
    assert "café" in span.text or "hunt" in span.text


def test_streamed_attributions_end_where_a_stop_string_cut_the_text(gen_memory, retro_dir) -> None:
    """Stop strings are never streamed, even in part: not in the token events and not in the attribution
    events either (a chunk that held the stop string was streamed whole, the stop and what followed)."""
    from burrow.generate import AttributionEvent, DoneEvent, GenerationConfig, TokenEvent

    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    free = gen.generate("Owls hunt", GenerationConfig(max_new_tokens=40, greedy=True))
    middle = free.chunks[1]  # a stop string from inside the second generated chunk
    at = (middle.text_start + middle.text_end) // 2
    stop = free.text[at:at + 3]
    assert stop.strip() and free.text.find(stop) == at, stop
    events = list(gen.stream("Owls hunt", GenerationConfig(max_new_tokens=40, greedy=True, stop=(stop,))))
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.result.finish_reason == "stop" and done.result.text == free.text[:at]
    streamed = [e.attribution for e in events if isinstance(e, AttributionEvent)]
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == free.text[:at]
    assert "".join(a.text for a in streamed) == free.text[:at]
    assert [a.text for a in streamed] == [a.text for a in done.result.chunks]


def test_a_stop_string_across_a_chunk_boundary_cuts_the_streamed_attribution(gen_memory, retro_dir) -> None:
    """The chunk's last characters are held back (they could begin a stop string); the stop completes in the
    next chunk: the chunk's attribution is streamed once that is settled, cut where the final text is cut
    (it was streamed whole, with the stop's start)."""
    from burrow.generate import AttributionEvent, DoneEvent, GenerationConfig

    gen = Generator(load_model(retro_dir), gen_memory, device="cpu", precision="fp32")
    free = gen.generate("Owls hunt", GenerationConfig(max_new_tokens=40, greedy=True))
    ends = [a.text_end for a in free.chunks[:-1] if 0 < a.text_end < len(free.text)]
    at = next(e for e in ends if free.text.find(free.text[e - 1:e + 1]) == e - 1)  # a first occurrence
    stop = free.text[at - 1:at + 1]
    events = list(gen.stream("Owls hunt", GenerationConfig(max_new_tokens=40, greedy=True, stop=(stop,))))
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.result.text == free.text[:at - 1]
    streamed = [e.attribution.text for e in events if isinstance(e, AttributionEvent)]
    assert streamed == [a.text for a in done.result.chunks] and "".join(streamed) == free.text[:at - 1]
