"""BM25 over a memory's chunks: exact-sentence hits, atomic manifest-last builds, staleness, CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.memory.bm25 import build_bm25, load_bm25, retriever_agreement, search_bm25
from burrow.memory.build import build_memory


@pytest.fixture(scope="module")
def built(tmp_path_factory, make_corpus, encoder) -> Memory:
    """One tiny memory (no BM25) per module; each test works on its own copy."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig
    from burrow.memory.encode import EncoderConfig

    root = tmp_path_factory.mktemp("bm25")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=16), chunk_size=8)
    mem, _ = build_memory([str(make_corpus(root / "corpus"))], root / "mem", config, progress=False, encoder=encoder)
    return mem


@pytest.fixture
def memory(built: Memory, tmp_path, encoder) -> Memory:
    return Memory(shutil.copytree(built.dir, tmp_path / "mem"), encoder=encoder)


def _doc_index(memory: Memory, name: str) -> int:
    return next(i for i, d in enumerate(memory.store.docs) if name in d.source or name in d.id)


def test_exact_sentence_retrieves_its_documents_chunk_first(memory: Memory) -> None:
    m = build_bm25(memory, progress=False)
    assert m["n_chunks"] == len(memory) and (memory.dir / "bm25" / "bm25.manifest.json").exists()
    res = memory.search(["Mount Etna in Sicily is one of the most active volcanoes in Europe"], k=3,
                        retriever="bm25")
    assert res.ids.shape == (1, 3) and res.ids.dtype == np.int64 and res.distances.dtype == np.float32
    top = int(res.ids[0, 0])
    assert memory.chunks.docs[top] == _doc_index(memory, "volcano")
    assert "volcano" in res.sources[0][0] and res.tokens.shape == (1, 3, 2 * memory.chunk_size)
    # negated scores: smaller is nearer, in rank order
    assert res.distances[0, 0] < 0 and (np.diff(res.distances[0][res.ids[0] >= 0]) >= 0).all()


def test_same_document_exclusion_and_token_queries(memory: Memory) -> None:
    build_bm25(memory, progress=False)
    volcano = _doc_index(memory, "volcano")
    ids = np.flatnonzero(memory.chunks.docs == volcano)[:3]
    res = search_bm25(memory, memory.chunk_tokens(ids), k=4, exclude_docs=np.full(len(ids), volcano))
    found = res.ids[res.ids >= 0]
    assert len(found) and (memory.chunks.docs[found] != volcano).all()
    assert np.isinf(res.distances[res.ids < 0]).all()
    # a query sharing no term with any chunk has no neighbours (not arbitrary zero-score chunks)
    none = memory.search(["zzzqx qqqzz"], k=2, retriever="bm25")
    assert (none.ids == -1).all()


def test_missing_stale_and_rebuild(memory: Memory, monkeypatch) -> None:
    with pytest.raises(BurrowError, match="has no BM25 index; run `burrow memory bm25"):
        load_bm25(memory)
    # a build that dies before finishing leaves nothing that looks complete
    import bm25s

    def boom(*a, **kw):
        raise RuntimeError("killed")

    monkeypatch.setattr(bm25s.BM25, "save", boom)
    with pytest.raises(RuntimeError):
        build_bm25(memory, progress=False)
    assert not (memory.dir / "bm25").exists() and not list(memory.dir.glob(".bm25.*"))
    monkeypatch.undo()
    first = build_bm25(memory, progress=False)
    assert build_bm25(memory, progress=False)["seconds"] == first["seconds"]  # up to date: skipped
    assert memory.info()["bm25"]["up_to_date"]
    # the memory's chunks change (a different chunk table): the index is stale until rebuilt
    chunks_manifest = memory.dir / "chunks.manifest.json"
    chunks_manifest.write_text(chunks_manifest.read_text().replace('"inputs": "', '"inputs": "x'))
    assert not memory.info()["bm25"]["up_to_date"]
    with pytest.raises(BurrowError, match="no up-to-date BM25 index"):
        memory.search(["cats"], retriever="bm25")
    rebuilt = build_bm25(memory, progress=False)
    assert rebuilt["inputs"] != first["inputs"] and memory.search(["cats purr"], retriever="bm25").ids[0, 0] >= 0
    assert build_bm25(memory, force=True, progress=False)["inputs"] == rebuilt["inputs"]


def test_unknown_retriever_is_an_error(memory: Memory) -> None:
    with pytest.raises(BurrowError, match="retriever must be one of"):
        memory.search(["cats"], retriever="tfidf")


def test_retriever_agreement_runs(memory: Memory) -> None:
    build_bm25(memory, progress=False)
    out = retriever_agreement(memory, k=3, sample=20, seed=1)
    assert out["queries"] == 20 and out["k"] == 3
    for key in ("bm25_recall_of_dense", "dense_recall_of_bm25", "top1_agreement"):
        assert 0.0 <= out[key] <= 1.0


def test_cli_bm25_search_and_info(memory: Memory) -> None:
    from burrow.cli.memory import app

    runner = CliRunner()
    res = runner.invoke(app, ["search", str(memory.dir), "cats", "--retriever", "bm25"])
    assert isinstance(res.exception, BurrowError) and "burrow memory bm25" in str(res.exception)
    res = runner.invoke(app, ["bm25", str(memory.dir)])
    assert res.exit_code == 0, res.output
    assert f"{len(memory):,} chunks" in res.output
    res = runner.invoke(app, ["search", str(memory.dir), "Halley's comet returns every seventy-six years",
                              "--retriever", "bm25", "-k", "1"])
    assert res.exit_code == 0, res.output
    assert "comet" in res.output and "bm25=" in res.output and "bm25=-" not in res.output  # a score, not −score
    res = runner.invoke(app, ["info", str(memory.dir)])
    assert res.exit_code == 0 and "bm25" in res.output and "up to date" in res.output


def test_a_query_of_stopwords_finds_nothing_without_a_log_line(memory: Memory, caplog) -> None:
    """bm25s sets its own logger to DEBUG: each query of stopwords alone ("the and of", a window of spaces in
    in-context retrieval) printed "The query is empty. ..." even at the CLI's WARNING level."""
    build_bm25(memory, progress=False)
    caplog.clear()
    res = search_bm25(memory, ["the and of", " "], k=2, with_text=False)
    assert (res.ids == -1).all() and np.isinf(res.distances).all()
    assert not [r for r in caplog.records if r.name.startswith("bm25s")], caplog.text


def test_exclusion_does_not_widen_past_the_chunks_other_documents_hold(monkeypatch) -> None:
    """As for the dense search: 500 chunks of one document and 2 of another, all matching the query; once the
    other document's 2 chunks were found the row stayed "short" of k and was retrieved again up to every chunk."""
    import bm25s

    from burrow.memory.bm25 import PARAMS, BM25Index, _analyse

    texts = [f"the volcano erupts, lava flow {i}" for i in range(500)] + ["volcano volcano ash"] * 2
    chunk_docs = np.array([0] * 500 + [1] * 2, dtype=np.int32)
    retriever = bm25s.BM25(k1=PARAMS["k1"], b=PARAMS["b"], method=PARAMS["method"])
    retriever.index(_analyse(texts), show_progress=False)
    index = BM25Index(retriever, {"n_chunks": len(texts)})
    widths: list[int] = []
    real = index._retrieve
    monkeypatch.setattr(index, "_retrieve", lambda terms, width: widths.append(width) or real(terms, width))
    scores, ids = index.search(["volcano"], 5, np.array([0]), chunk_docs)
    assert sorted(ids[0, :2].tolist()) == [500, 501] and (ids[0, 2:] == -1).all() and (scores[0, :2] > 0).all()
    assert widths == [5 + 16], widths
