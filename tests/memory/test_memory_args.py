"""Wrong arguments to the memory API are one clear BurrowError, never a raw Python error or a silently wrong
answer; padded (missing) neighbours carry no provenance; a damaged BM25 index is noticed and redone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.memory.bm25 import build_bm25, load_bm25
from burrow.memory.build import build_memory, compute_neighbours


@pytest.fixture(scope="module")
def built(make_memory) -> Memory:
    return make_memory("args")


@pytest.fixture
def memory(built: Memory, tmp_path, encoder) -> Memory:
    return Memory(shutil.copytree(built.dir, tmp_path / "mem"), encoder=encoder)


@pytest.mark.parametrize("queries", ["the game", b"the game"])
def test_search_refuses_a_bare_string(built: Memory, queries) -> None:
    with pytest.raises(BurrowError, match="must be a list, not a single"):
        built.search(queries, k=2)


@pytest.mark.parametrize(("queries", "k", "match"), [
    (["cats"], -1, "k must be a whole number >= 1"),
    (["cats"], 0, "k must be a whole number >= 1"),
    (["cats"], "2", "k must be a whole number >= 1"),
    (["cats"], 1.5, "k must be a whole number >= 1"),
    ([None], 2, "each query must be a text"),
    ([b"cats"], 2, "each query must be a text"),
    (None, 2, "queries must be a list"),
    (np.zeros(4, dtype=np.int64), 2, "2-D array"),
])
@pytest.mark.parametrize("retriever", ["dense", "bm25"])
def test_search_refuses_wrong_arguments(built: Memory, queries, k, match, retriever) -> None:
    with pytest.raises(BurrowError, match=match):
        built.search(queries, k=k, retriever=retriever)


def test_exclude_docs_and_within_are_checked(built: Memory) -> None:
    """-2 was read as the last chunk (NumPy's negative index), a short exclude_docs an IndexError mid-search."""
    keys = built.encoder.encode(["cats purr", "lava flows"])
    n_docs, n_chunks = built.store.n_docs, len(built.chunks)
    for bad, match in (([0], "holds 1 values for 2 queries"), ([0, n_docs], rf"values in \[-1, {n_docs - 1}\]"),
                       ([0.5, 1.0], "1-D array of whole numbers"), ([[0, 1]], "1-D array of whole numbers")):
        with pytest.raises(BurrowError, match=match):
            built.search_keys(keys, 2, exclude_docs=np.asarray(bad))
    with pytest.raises(BurrowError, match="holds 1 values for 2 queries"):
        built.search(["cats purr", "lava flows"], k=2, exclude_docs=np.array([0]))
    for bad in ([-2, 0], [0, n_chunks]):
        with pytest.raises(BurrowError, match=rf"within must hold values in \[0, {n_chunks - 1}\]"):
            built.search_keys(keys, 2, within=np.asarray(bad))
    for unsorted in ([1, 0], [0, 0]):  # keys are read in shard order: [9000, 5] reported 9000 for chunk 5's key
        with pytest.raises(BurrowError, match="within must list chunk ids in increasing order"):
            built.search_keys(keys, 2, within=np.asarray(unsorted))
    _, ids = built.search_keys(keys, 1, exclude_docs=np.array([-1, 0]))
    _, inside = built.search_keys(keys, 1, within=np.array([0, 1]))
    assert ids.shape == (2, 1) and set(inside.ravel()) <= {0, 1}


def test_keys_of_another_width_or_shape_are_refused(built: Memory) -> None:
    """Keys of another encoder's width were FAISS's bare AssertionError; one key (1-D) a ValueError unpacking."""
    dim = int(built.manifest["dim"])
    for bad in (np.zeros((2, dim + 1), np.float32), np.zeros(dim, np.float32), np.zeros((1, 2, dim))):
        for within in (None, np.arange(3)):
            with pytest.raises(BurrowError, match=rf"keys must be a 2-D array \(queries, {dim}\)"):
                built.search_keys(bad, 2, within=within)
    assert built.search_keys(np.zeros((2, dim)), 2)[1].shape == (2, 2)  # float64 is fine


def test_missing_neighbours_carry_no_provenance(built: Memory) -> None:
    k = len(built) + 5
    res = built.search(["owls hunt at night"], k=k)
    missing = res.ids[0] < 0
    assert missing.sum() >= 5 and np.isinf(res.distances[0][missing]).all()
    assert res.offsets is not None and (res.offsets[0][missing] == -1).all()
    for field in (res.sources, res.doc_ids, res.texts, res.chunk_texts):
        assert all(v == "" for v, miss in zip(field[0], missing, strict=True) if miss)
        assert all(v for v, miss in zip(field[0], missing, strict=True) if not miss)
    assert (res.offsets[0][~missing] >= 0).all()
    assert len(res.to_json()[0]) == (~missing).sum()


@pytest.mark.parametrize("retriever", ["dense", "bm25"])
def test_a_blank_query_finds_no_neighbours(memory: Memory, retriever: str) -> None:
    """A blank text's key is the encoder's bias, near arbitrary chunks (BM25 scores nothing): no neighbours,
    while the other queries of the call are answered."""
    if retriever == "bm25":
        from burrow.memory.bm25 import build_bm25

        build_bm25(memory)
    res = memory.search(["  ", "owls hunt at night", ""], k=2, retriever=retriever)
    assert (res.ids[[0, 2]] == -1).all() and np.isinf(res.distances[[0, 2]]).all()
    assert (res.ids[1] >= 0).all()


def test_memory_refuses_a_non_path(tmp_path) -> None:
    for bad in (None, 123, ""):
        with pytest.raises(BurrowError, match="memory directory must be a path"):
            Memory(bad)  # type: ignore[arg-type]


def test_build_memory_refuses_wrong_inputs_and_a_file_as_output(tmp_path, tiny_corpus) -> None:
    with pytest.raises(BurrowError, match="must be a list, not a single str"):
        build_memory("nosuchcorpus", tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(BurrowError, match="must be a list, not NoneType"):
        build_memory(None, tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(BurrowError, match="no input files given"):
        build_memory([], tmp_path / "out")
    with pytest.raises(BurrowError, match="each input must be a path"):
        build_memory([None], tmp_path / "out")  # type: ignore[list-item]
    afile = tmp_path / "valid.txt"
    afile.write_text("x")
    with pytest.raises(BurrowError, match="is a file; the output must be a folder"):
        build_memory([str(tiny_corpus)], afile)
    assert afile.read_text() == "x" and not (tmp_path / "out").exists()


def test_compute_neighbours_refuses_k_below_one_and_opens_a_path(memory: Memory) -> None:
    for k in (0, -1):
        with pytest.raises(BurrowError, match="k must be a whole number >= 1"):
            compute_neighbours(memory, k=k, progress=False)
    assert not list(memory.dir.glob("neighbours/*k0*")) and not memory.info()["neighbours"]
    path, m = compute_neighbours(str(memory.dir), k=2, progress=False)  # a path opens the memory
    assert m["k"] == 2 and np.load(path).shape == (len(memory), 2)


@pytest.mark.parametrize("damage", ["truncate", "vocab", "params"])
def test_bm25_rerun_redoes_a_damaged_index(memory: Memory, damage: str) -> None:
    build_bm25(memory, progress=False)
    directory = memory.dir / "bm25"
    if damage == "truncate":
        with open(directory / "data.csc.index.npy", "r+b") as f:
            f.truncate(100)
    elif damage == "vocab":
        (directory / "vocab.index.json").write_text("{not json")
    else:
        (directory / "params.index.json").unlink()
    fresh = Memory(memory.dir, encoder=memory.encoder)
    assert not fresh.info()["bm25"]["up_to_date"]
    with pytest.raises(BurrowError, match=r"bm25/\S+ is (damaged|missing); rebuild it: burrow memory bm25 .* --force"):
        fresh.search(["owls hunt at night"], retriever="bm25")
    build_bm25(fresh, progress=False)  # no --force: the damage is noticed
    assert fresh.info()["bm25"]["up_to_date"]
    assert fresh.search(["owls hunt at night"], k=1, retriever="bm25").ids[0, 0] >= 0


def test_bm25_manifest_without_sizes_trusts_its_files_and_names_a_missing_one(memory: Memory) -> None:
    import json

    build_bm25(memory, progress=False)
    manifest = memory.dir / "bm25" / "bm25.manifest.json"
    old = json.loads(manifest.read_text())
    del old["files"]
    manifest.write_text(json.dumps(old))
    fresh = Memory(memory.dir, encoder=memory.encoder)
    assert fresh.info()["bm25"]["up_to_date"]
    assert build_bm25(fresh, progress=False)["seconds"] == old["seconds"]  # trusted: skipped
    (memory.dir / "bm25" / "params.index.json").unlink()
    with pytest.raises(BurrowError, match=r"params\.index\.json is missing; rebuild it: burrow memory bm25 .* --force"):
        load_bm25(fresh)


def test_bm25_force_replaces_a_corrupt_manifest(memory: Memory, burrow_cli) -> None:
    build_bm25(memory, progress=False)
    (memory.dir / "bm25" / "bm25.manifest.json").write_text("[]")
    code, _, err = burrow_cli("memory", "bm25", memory.dir)
    assert code == 2 and "re-run with --force" in err
    code, out, err = burrow_cli("memory", "info", memory.dir)  # the rest of the memory is still shown
    assert code == 0 and "chunks" in out and "bm25        damaged" in out and "--force" in out, err
    code, out, err = burrow_cli("memory", "bm25", memory.dir, "--force")
    assert code == 0, err
    assert Memory(memory.dir).info()["bm25"]["up_to_date"]


def test_cli_search_refuses_an_empty_query(built: Memory, burrow_cli) -> None:
    code, _, err = burrow_cli("memory", "search", built.dir, "cats", " ")
    assert code == 2 and err.strip().splitlines() == ["error: a query is empty; give the text to search for"]


def test_tokenize_store_refuses_a_bare_string(built: Memory, tmp_path) -> None:
    from burrow.memory.build import tokenize_store

    with pytest.raises(BurrowError, match="must be a list, not a single str"):
        tokenize_store(built, "valid.txt", tmp_path / "store")  # type: ignore[arg-type]
    assert not (tmp_path / "store").exists()


def test_an_index_faiss_cannot_train_is_one_error_line(tiny_corpus, tmp_path, memory_config, encoder) -> None:
    """IVF1024 on a memory of a few chunks: FAISS's training assertion was a traceback."""
    import dataclasses

    from burrow.memory.build import build_memory

    cfg = dataclasses.replace(memory_config, index=dataclasses.replace(memory_config.index, factory="IVF1024,Flat"))
    with pytest.raises(BurrowError, match="FAISS could not train the index 'IVF1024,Flat'"):
        build_memory([str(tiny_corpus)], tmp_path / "m", cfg, progress=False, encoder=encoder)


def test_a_memory_whose_tokenizer_now_reads_another_pad_is_one_error(built: Memory, tmp_path) -> None:
    """A memory built when burrow read its tokenizer's pad as another id (Llama 3's end token was not known:
    pad 0) pads its chunks with that id: opened now, it says to rebuild instead of decoding with the new one."""
    import shutil

    from burrow.artefacts import read_json, write_json
    from burrow.memory import Memory

    copy = tmp_path / "copy"
    shutil.copytree(built.dir, copy)
    path = copy / "tokenizer.manifest.json"
    write_json(path, {**read_json(path), "pad_id": built.tokenizer.pad_id + 1})
    with pytest.raises(BurrowError, match="rebuild the memory"):
        Memory(copy).tokenizer  # noqa: B018


def test_an_index_of_another_memory_is_refused(memory: Memory, make_memory, short_docs, burrow_cli) -> None:
    """An index.faiss copied from another memory (more chunks): searches returned chunks of the wrong
    documents, and a neighbour table failed with an IndexError traceback."""
    other = make_memory("other", {**short_docs, "tides": "The tides rise and fall twice a day, pulled by the Moon."})
    assert len(other) != len(memory)
    shutil.copy(other.dir / "index.faiss", memory.dir / "index.faiss")
    fresh = Memory(memory.dir, encoder=memory.encoder)
    with pytest.raises(BurrowError, match=r"index\.faiss is damaged .*re-run the `burrow memory build`"):
        fresh.search(["owls hunt at night"], k=2)
    code, _, err = burrow_cli("memory", "neighbours", memory.dir, "-k", "2")
    assert code == 2 and "index.faiss is damaged (it holds" in err and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("error: "), err  # not after the progress bar, on its line


def test_an_index_not_of_the_size_written_is_refused(memory: Memory) -> None:
    """The same number of keys in another index (HNSW over these keys, where the manifest says Flat)."""
    import faiss

    hnsw = faiss.index_factory(int(memory.manifest["dim"]), "HNSW32")
    hnsw.add(memory.stored_keys(np.arange(len(memory))))
    faiss.write_index(hnsw, str(memory.dir / "index.faiss"))
    with pytest.raises(BurrowError, match=r"index\.faiss is damaged \(not of the size this memory's build wrote\)"):
        Memory(memory.dir, encoder=memory.encoder).search(["owls hunt at night"], k=2)


def test_info_of_a_memory_without_an_index_manifest_is_no_traceback(memory: Memory, burrow_cli) -> None:
    (memory.dir / "index.manifest.json").unlink()
    code, out, err = burrow_cli("memory", "info", memory.dir)
    assert code == 0 and "index       missing" in out and "burrow memory build" in out, err


def test_cli_k_past_the_memory_is_no_traceback(built: Memory, tmp_path, burrow_cli) -> None:
    """-k 1000000000 allocated (1, k) arrays of missing neighbours: a MemoryError (or NumPy's "Maximum allowed
    dimension exceeded") traceback. A search shows the neighbours there are; a table asks for a k that fits."""
    n = len(built)
    for k in (n + 1, 10**9, 10**20):
        code, out, err = burrow_cli("memory", "search", built.dir, "owls hunt at night", "-k", k, "--json")
        assert code == 0, err
        assert len(json.loads(out)[0]["neighbours"]) == n
    mem = shutil.copytree(built.dir, tmp_path / "mem")
    code, _, err = burrow_cli("memory", "neighbours", mem, "-k", 10**9)
    assert code == 2 and err.strip() == f"error: -k 1,000,000,000 is more neighbours than the memory's {n:,} " \
                                        f"chunks; give at most {n:,}", err
    assert not list((mem / "neighbours").glob("*.manifest.json"))


def test_cli_search_of_bytes_that_are_not_utf8(built: Memory, burrow_cli) -> None:
    """A shell passes undecodable bytes as lone surrogates: --json wrote the query as "\\udcff\\udcfe", which no
    reader can encode as UTF-8 again. The query is searched and shown with U+FFFD, with one warning."""
    bad = b"\xff\xfeowls hunt at night".decode("utf-8", errors="surrogateescape")
    code, out, err = burrow_cli("memory", "search", built.dir, bad, "-k", "1", "--json")
    assert code == 0 and "not valid UTF-8" in err, err
    record = json.loads(out)[0]
    assert record["query"] == "\ufffd\ufffdowls hunt at night" and record["neighbours"]
    json.dumps(record, ensure_ascii=False).encode("utf-8")
