"""The one search API: keys in, neighbours out; a search within a subset is exact; model/memory compatibility."""

from __future__ import annotations

import numpy as np
import pytest

from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.memory.build import MemoryConfig, build_memory
from burrow.model import ModelConfig


@pytest.fixture(scope="module")
def memory(tmp_path_factory, encoder, make_corpus) -> Memory:
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.encode import EncoderConfig

    root = tmp_path_factory.mktemp("search")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=16), chunk_size=8)
    built, _ = build_memory([str(make_corpus(root / "corpus"))], root / "mem", config, progress=False, encoder=encoder)
    return built


def test_search_is_encode_then_search_keys(memory: Memory) -> None:
    tokens = memory.chunk_tokens(np.arange(0, len(memory), 5))
    res = memory.search(tokens, k=3, with_text=False)
    dists, ids = memory.search_keys(memory.encode_tokens(tokens), k=3)
    np.testing.assert_array_equal(res.ids, ids)
    np.testing.assert_allclose(res.distances, dists)


def test_search_within_every_chunk_is_the_exact_search(memory: Memory) -> None:
    keys = memory.stored_keys(np.arange(0, len(memory), 4))
    _, exact = memory.search_keys(keys, k=2)
    _, within = memory.search_keys(keys, k=2, within=np.arange(len(memory)))
    np.testing.assert_array_equal(within[:, 0], exact[:, 0])  # a stored key finds its own chunk first


def test_search_within_a_subset_returns_only_its_chunks(memory: Memory) -> None:
    subset = np.arange(0, len(memory), 2)
    keys = memory.stored_keys(np.arange(1, len(memory), 2)[:10])
    _, ids = memory.search_keys(keys, k=3, within=subset)
    assert set(ids[ids >= 0].tolist()) <= set(subset.tolist())


def test_same_document_exclusion(memory: Memory) -> None:
    chunks = np.arange(len(memory))
    docs = memory.chunks.docs[chunks]
    _, ids = memory.search_keys(memory.stored_keys(chunks), k=2, exclude_docs=docs)
    hit = ids >= 0
    assert not (memory.chunks.docs[np.where(hit, ids, 0)] == docs[:, None])[hit].any()


def test_check_model_compares_chunk_and_retrieved_length(memory: Memory) -> None:
    fits = ModelConfig(retro=True, cca_layers=(1,), n_layers=2, chunk_size=8, retrieved_len=16)
    memory.check_model(fits)
    memory.check_model(ModelConfig())  # a baseline reads no neighbours
    with pytest.raises(BurrowError, match="do not match the memory's 8 / 16"):
        memory.check_model(ModelConfig(retro=True, cca_layers=(1,), n_layers=2, chunk_size=8, retrieved_len=8))
    assert memory.retrieved_len == 16



def test_exclusion_does_not_widen_past_the_chunks_other_documents_hold(monkeypatch) -> None:
    """A memory of one long document (a book read as one .txt file, `--txt-split auto`) and a short one: a
    chunk of the book can find only the short document's 3 chunks, but its row stayed "short" of k after
    they were found, so the search widened to every chunk of the memory, (rows, all chunks) arrays per
    batch (GBs at 100k chunks). A row holding every chunk outside its document is complete."""
    import faiss

    import burrow.memory.neighbours as nb

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(2000, 16)).astype(np.float32)
    chunk_docs = np.zeros(2000, dtype=np.int32)
    chunk_docs[:3] = 1
    keys[:6] = keys[0] + rng.normal(scale=0.01, size=(6, 16))  # the queries (3:6) and the short document's chunks
    index = faiss.IndexFlatL2(16)
    index.add(keys)
    widths: list[int] = []
    real = nb.search
    monkeypatch.setattr(nb, "search", lambda ix, q, k, *a: widths.append(k) or real(ix, q, k, *a))
    dists, ids = nb.search_excluding(index, keys[3:6], 5, np.zeros(3, np.int64), chunk_docs)
    assert (np.sort(ids[:, :3], axis=1) == [0, 1, 2]).all() and (ids[:, 3:] == -1).all()
    assert np.isinf(dists[:, 3:]).all() and np.isfinite(dists[:, :3]).all()
    assert widths == [5 + 16], widths
    widths.clear()
    dists, ids = nb.search_excluding(index, keys[:3], 5, np.ones(3, np.int64), chunk_docs)  # plenty to find
    assert (ids >= 0).all() and (chunk_docs[ids] == 0).all() and widths == [5 + 16]
