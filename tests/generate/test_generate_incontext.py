"""A pretrained LM reading the memory in context: blocks, retrieval refresh, events, attribution, errors.

Uses a tiny randomly initialised Hugging Face Llama with a byte-level BPE tokenizer trained on the test
documents, saved to a folder and loaded as a user's local model would be (no download, a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from burrow.errors import BurrowError
from burrow.generate import AttributionEvent, DoneEvent, GenerationConfig, TokenEvent
from burrow.generate.incontext import InContextGenerator
from burrow.generate.readable import load_lm, readable_example


@pytest.fixture(scope="module")
def reader(tiny_lm_dir, bm25_memory) -> InContextGenerator:
    return InContextGenerator(load_lm(str(tiny_lm_dir)), bm25_memory, retriever="bm25", stride=8, query_tokens=8,
                              max_context=1024, passage_tokens=160, device="cpu")


def test_blocks_events_and_json_shapes(reader) -> None:
    events = list(reader.stream("Owls hunt at night, turning their heads",
                                GenerationConfig(max_new_tokens=20, seed=3, top_p=0.9)))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    res = done.result
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    attributions = [e.attribution for e in events if isinstance(e, AttributionEvent)]
    assert "".join(e.text for e in tokens) == res.text
    assert all(e.chunk == e.index // 8 for e in tokens)
    n = len(res.tokens)
    assert len(attributions) == -(-n // 8) if n else not attributions  # one per (partial) block of 8
    assert "".join(a.text for a in res.chunks) == res.text
    assert attributions[0].neighbours  # the prompt's words find passages (later queries are a random LM's)
    for a in attributions:  # each passage with a relative source and a negated BM25 score
        assert a.query_chunk == (a.chunk if a.neighbours else None)
        for nb in a.neighbours:
            assert nb.source.endswith(".txt:line 1") and not nb.source.startswith("/") and nb.distance < 0
    doc = json.loads(json.dumps(res.to_json()))  # the RETRO generator's JSON shape
    assert {"prompt", "text", "tokens", "finish_reason", "seed", "retrieval", "chunks", "tokens_per_second"} <= set(doc)
    assert {"chunk", "text", "text_start", "text_end", "neighbours", "copied"} <= set(doc["chunks"][0])
    assert doc["retrieval"] is True and doc["seed"] == 3
    for e in events:
        json.dumps(e.to_json())


def test_retrieval_changes_the_text_and_off_reads_nothing(reader) -> None:
    cfg = GenerationConfig(max_new_tokens=16, greedy=True)
    on = reader.generate("Bread is baked from flour", cfg)
    off = reader.generate("Bread is baked from flour",
                          GenerationConfig(max_new_tokens=16, greedy=True, retrieval=False))
    assert off.chunks == [] and off.retrieval is False and on.retrieval is True
    assert on.tokens != off.tokens  # the passages before the window change a random LM's output
    assert 0 < on.search_seconds < on.seconds and off.search_seconds == 0.0  # it read 0.0 with retrieval too


def test_attribution_lists_only_what_the_window_read(tiny_lm_dir, bm25_memory) -> None:
    """A passage budget that holds one passage and the start of the next: k = 4 passages are retrieved, the
    attribution lists the two the LM read, the second as far as it read it (it listed all four)."""
    lm = load_lm(str(tiny_lm_dir))
    wide = InContextGenerator(lm, bm25_memory, retriever="bm25", stride=8, query_tokens=8, max_context=1024,
                              passage_tokens=1000, device="cpu")
    cfg = GenerationConfig(max_new_tokens=8, greedy=True, k=4)
    full = wide.generate("Owls hunt at night, turning their heads", cfg).chunks[0].neighbours
    assert len(full) == 4
    first = len(lm.encode(full[0].text))
    budget = 1 + first + 1 + 5  # [s] + passage 1 + [s] + 5 tokens of passage 2
    narrow = InContextGenerator(lm, bm25_memory, retriever="bm25", stride=8, query_tokens=8, max_context=1024,
                                passage_tokens=budget, device="cpu")
    read = narrow.generate("Owls hunt at night, turning their heads", cfg).chunks[0].neighbours
    assert [nb.rank for nb in read] == [1, 2] and read[0].text == full[0].text
    assert full[1].text.startswith(read[1].text) and len(lm.encode(read[1].text)) == 5

def test_cache_matches_recompute(reader) -> None:
    prompt = "Chess is a board game"
    for retrieval in (True, False):
        a = reader.generate(prompt, GenerationConfig(max_new_tokens=18, greedy=True, retrieval=retrieval))
        b = reader.generate(prompt, GenerationConfig(max_new_tokens=18, greedy=True, retrieval=retrieval,
                                                     kv_cache=False))
        assert a.tokens == b.tokens


def test_bf16_decoding_reads_precast_weights(tiny_lm_dir, bm25_memory) -> None:
    """Under autocast the reader decodes from a pre-cast copy of the LM: the same tokens as autocast's
    per-call casts of the fp32 weights, and the LM it was given stays fp32."""
    import torch

    lm = load_lm(str(tiny_lm_dir))
    reader = InContextGenerator(lm, bm25_memory, stride=8, query_tokens=8, max_context=1024, passage_tokens=160,
                                device="cpu", precision="bf16")
    assert reader.lm is not lm and reader.lm.module.lm_head.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in lm.module.parameters())
    cfg = GenerationConfig(max_new_tokens=20, greedy=True)
    precast = reader.generate("Owls hunt at night", cfg)
    reader.lm = lm  # autocast casting the fp32 weights on every call
    assert reader.generate("Owls hunt at night", cfg).tokens == precast.tokens


def test_refresh_queries_the_last_tokens(reader, monkeypatch) -> None:
    queries: list[str] = []
    search = reader.memory.search

    def spy(texts, k=2, **kw):
        queries.extend(texts)
        return search(texts, k=k, **kw)

    monkeypatch.setattr(reader.memory, "search", spy)
    res = reader.generate("A volcano is a rupture in the crust where lava", GenerationConfig(max_new_tokens=17,
                                                                                             greedy=True))
    assert len(queries) == -(-len(res.tokens) // 8)  # one retrieval per block of s = 8 tokens
    assert queries[0] == reader.lm.decode(reader.encode("A volcano is a rupture in the crust where lava")[-8:]).strip()


def test_copied_span_respects_min_copy() -> None:
    from burrow.generate.attribution import copied_span

    gen, nb = [5, 6, 7, 9], np.array([1, 5, 6, 7, 2])

    def off(i: int) -> int:
        return i

    def decode(ids):
        return "".join("xabcdefghij"[t % 10] for t in ids)

    assert copied_span(gen, off, "efgi", nb, decode(nb.tolist()), 1, decode, -1, min_tokens=4) is None
    span = copied_span(gen, off, "efgi", nb, decode(nb.tolist()), 1, decode, -1, min_tokens=3)
    assert span is not None and span.tokens == 3
    assert GenerationConfig().min_copy == 4

    def blank(ids):  # " \n \n": whitespace shared with a neighbour was a "copied" span
        return "".join(" \n"[t % 2] for t in ids)

    spaces, nb_spaces = [4, 5, 4, 5], np.array([1, 4, 5, 4, 5, 2])
    assert copied_span(spaces, off, blank(spaces), nb_spaces, blank(nb_spaces.tolist()), 1, blank, -1,
                       min_tokens=4) is None


def test_bad_inputs_are_one_clear_error(tiny_lm_dir, bm25_memory, reader, save_tiny_llama, tmp_path: Path) -> None:
    with pytest.raises(BurrowError, match="shorten the prompt"):
        reader.generate("owls " * 2000, GenerationConfig(max_new_tokens=4))
    word = save_tiny_llama(tmp_path / "wordlevel", byte_level=False)
    with pytest.raises(BurrowError, match="cannot encode this memory's text"):
        InContextGenerator(load_lm(str(word)), bm25_memory, device="cpu")
    with pytest.raises(BurrowError, match="no such folder"):
        load_lm(str(tmp_path / "missing"))
    with pytest.raises(BurrowError, match="HF_HUB_OFFLINE") as e:
        load_lm("burrow-tests/not-a-model")
    assert "\n" not in str(e.value)


def test_chat_uses_the_template_or_the_dialogue(reader, tiny_lm_dir) -> None:
    from burrow.generate import PREAMBLE, ChatConfig, ChatSession
    from burrow.generate.lmchat import TemplateChatSession, chat_session

    session = chat_session(reader, ChatConfig(max_new_tokens=6, seed=0))
    assert isinstance(session, ChatSession) and session.prompt_for("Hi").startswith(PREAMBLE)
    assert session.ask("What is bread?").text is not None
    reader.lm.tokenizer.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n"
                                         "{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    try:
        templated = chat_session(reader, ChatConfig(max_new_tokens=6, seed=0))
        assert isinstance(templated, TemplateChatSession)
        prompt = templated.prompt_for("What is bread?")
        assert prompt.endswith("<s>user\nWhat is bread?</s>\n<s>assistant\n")
        templated.ask("What is bread?")
        assert len(templated.turns) == 1
        # the query leaves the chat markup out
        assert "<s>" not in reader.query_text(reader.encode(prompt))
        # a history that fills the window leaves room for the reply: its oldest turn goes first
        room = int(reader.config.max_seq_len)
        turn = ("Owls hunt mice at night.", "Bread is baked from flour.")
        tight, long = (chat_session(reader, ChatConfig(max_new_tokens=n, seed=0)) for n in (1, room // 4))
        n = 1
        while True:  # the most turns that fit the window when the reply may take one token
            tight.turns = [turn] * (n + 1)
            if tight.prompt_for("And cats?").count("Owls hunt") < n + 1:
                break
            n += 1
        long.turns = [turn] * n
        kept = long.prompt_for("And cats?")
        assert len(reader.encode(kept)) <= room - room // 4
        assert kept.count("Owls hunt") < n  # old turns made room for the reply
    finally:
        reader.lm.tokenizer.chat_template = None


def test_readable_example_side_by_side(tiny_lm_dir, bm25_memory) -> None:
    text = readable_example(bm25_memory, lm=str(tiny_lm_dir), prompt="Owls hunt at night", max_new_tokens=8)
    assert "without the memory" in text and "reading the memory (bm25 passages" in text
    assert "Sources read:" in text and ".txt:line 1" in text and "/tmp" not in text


def test_a_built_memory_records_its_roots_and_shows_relative_sources(gen_memory) -> None:
    assert gen_memory.manifest["corpus_roots"] and all(r.startswith("/") for r in gen_memory.manifest["corpus_roots"])
    res = gen_memory.search(["owls hunt at night"], k=2)
    assert all(not s.startswith("/") and s.endswith(".txt:line 1") for s in res.sources[0])
