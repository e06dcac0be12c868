"""The memory: chunk boundaries, continuations, same-document exclusion, exact search, resume, mismatches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.artefacts import read_json
from burrow.data.corpus import Document
from burrow.data.tokens import TokenStore, write_token_store
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.memory.build import build_memory, compute_neighbours, tokenize_store
from burrow.memory.chunks import chunk_table, neighbour_values


class _CountingTok:
    """A stand-in tokenizer for store-level property tests: token i of document d is (d * 100 + i) % 60000."""

    vocab_size, pad_id, eos_id = 65000, 64999, None

    def encode_batch(self, texts):
        return [[int(x) for x in t.split()] for t in texts]

    def fingerprint(self) -> str:
        return "counting"


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=8), m=st.integers(1, 9))
def test_chunks_never_cross_documents_and_continuations_are_true(tmp_path_factory, lengths, m) -> None:
    docs = [Document(str(d), " ".join(str(d * 100 + i) for i in range(n)), "x") for d, n in enumerate(lengths)]
    if not any(lengths):
        return
    store = write_token_store(tmp_path_factory.mktemp("s"), docs, _CountingTok())
    table = chunk_table(store, m)
    assert len(table) == sum(-(-n // m) for n in lengths)
    values = neighbour_values(store, table, np.arange(len(table)))  # (q, 2m)
    for q in range(len(table)):
        d = int(table.docs[q])
        start = int(table.starts[q] - store.offsets[d])
        doc = [d * 100 + i for i in range(lengths[d])]
        want = doc[start : start + 2 * m]
        chunk_real = min(m, lengths[d] - start)
        assert 0 < chunk_real == table.lengths[q]
        # chunk: its own tokens then padding; continuation: the next m tokens of the same document or padding
        assert values[q, :chunk_real].tolist() == want[:chunk_real]
        assert (values[q, chunk_real:m] == store.pad_id).all()
        cont = want[m:]
        assert values[q, m : m + len(cont)].tolist() == cont
        assert (values[q, m + len(cont) :] == store.pad_id).all()


@pytest.fixture(scope="module")
def shared_memory(tmp_path_factory, encoder, make_corpus) -> Memory:
    """One memory for the read-only tests of this module (building one costs seconds)."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig
    from burrow.memory.encode import EncoderConfig
    root = tmp_path_factory.mktemp("shared")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=16), chunk_size=8)
    memory, _ = build_memory([str(make_corpus(root / "corpus"))], root / "mem", config, progress=False,
                             encoder=encoder)
    return memory


@pytest.fixture
def built(tiny_corpus: Path, tmp_path: Path, memory_config, encoder) -> Memory:
    memory, _ = build_memory([str(tiny_corpus)], tmp_path / "mem", memory_config, progress=False, encoder=encoder)
    return memory


def test_exact_search_finds_a_chunk_itself_first(shared_memory: Memory) -> None:
    ids = np.arange(0, len(shared_memory), 3)
    queries = shared_memory.chunk_tokens(ids)
    res = shared_memory.search(queries, k=3)
    itself = res.ids[:, 0] == ids
    # the tiny corpus repeats sentences: a different top hit must then be an identical chunk
    assert (shared_memory.chunk_tokens(res.ids[~itself, 0]) == queries[~itself]).all()
    assert itself.mean() > 0.5
    assert np.allclose(res.distances[:, 0], 0.0, atol=1e-4)
    assert res.tokens.shape == (len(ids), 3, 2 * shared_memory.chunk_size)
    assert res.sources[0][0].endswith(":line 1") and res.offsets[0, 0] == 0


def test_text_query_finds_its_topic_with_provenance(shared_memory: Memory) -> None:
    res = shared_memory.search(["Which volcano in Sicily erupts often?"], k=2)
    assert all("volcano.txt" in s for s in res.sources[0])
    rec = res.to_json()[0][0]
    assert rec["rank"] == 1 and "volcano" in rec["doc_id"] and rec["text"]


def test_same_document_exclusion(shared_memory: Memory) -> None:
    ids_path, manifest = compute_neighbours(shared_memory, k=3, progress=False)
    ids, dists = shared_memory.neighbour_table("self", 3)
    assert manifest["exclude_same_document"] and ids.shape == (len(shared_memory), 3)
    docs = shared_memory.chunks.docs
    assert (ids >= 0).all()
    assert (docs[ids] != docs[:, None]).all()
    assert (np.diff(dists, axis=1) >= -1e-5).all()


def test_neighbours_of_another_store_keep_same_named_docs(built: Memory, tmp_path: Path) -> None:
    (tmp_path / "val.txt").write_text("Bakers knead the dough and bake loaves in hot ovens.\n", encoding="utf-8")
    tokenize_store(built, [str(tmp_path / "val.txt")], tmp_path / "val", progress=False)
    _, m = compute_neighbours(built, k=2, target=tmp_path / "val", progress=False)
    ids, _ = built.neighbour_table(m["name"], 2)
    assert not m["exclude_same_document"] and m["name"].startswith("val-")
    assert "bread" in built.store.docs[built.chunks.docs[ids[0, 0]]].id


def test_a_token_store_of_other_inputs_is_replaced_only_with_force(built: Memory, tmp_path: Path) -> None:
    """`memory tokenize -o` used to write over any store there: a mistyped -o lost it (and its tables)."""
    for name, text in (("val.txt", "Bakers knead the dough."), ("test.txt", "Comets leave trails of dust.")):
        (tmp_path / name).write_text(text + "\n", encoding="utf-8")
    out = tmp_path / "store"
    first = tokenize_store(built, [str(tmp_path / "val.txt")], out, progress=False)
    again = tokenize_store(built, [str(tmp_path / "val.txt")], out, progress=False)  # same inputs: made again
    assert again.n_tokens == first.n_tokens
    before = (out / "tokens.bin").read_bytes()
    with pytest.raises(BurrowError, match=r"holds tokens of val.txt; give another -o, or --force"):
        tokenize_store(built, [str(tmp_path / "test.txt")], out, progress=False)
    assert (out / "tokens.bin").read_bytes() == before and TokenStore(out).n_docs == 1
    manifest = json.loads((out / "tokens.manifest.json").read_text())
    (out / "tokens.manifest.json").write_text(json.dumps({**manifest, "tokenizer": "another"}))
    with pytest.raises(BurrowError, match="holds tokens of another tokenizer"):
        tokenize_store(built, [str(tmp_path / "val.txt")], out, progress=False)
    replaced = tokenize_store(built, [str(tmp_path / "test.txt")], out, progress=False, force=True)
    assert built.tokenizer.decode(replaced.document(0)).strip() == "Comets leave trails of dust."


def test_two_stores_with_one_folder_name_keep_two_tables(built: Memory, tmp_path: Path, monkeypatch) -> None:
    """train/tokens and valid/tokens: neither table overwrites the other, a second call reuses each."""
    texts = {"train": "Bakers knead the dough and bake loaves in hot ovens.",
             "valid": "Comets leave trails of dust and gas across the night sky."}
    tables = {}
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text + "\n", encoding="utf-8")
        store = tmp_path / split / "tokens"
        tokenize_store(built, [str(tmp_path / f"{split}.txt")], store, progress=False)
        tables[split] = compute_neighbours(built, k=2, target=store, progress=False)[1]
    assert tables["train"]["name"] != tables["valid"]["name"]
    monkeypatch.setattr(built, "search_keys", lambda *a, **k: pytest.fail("a kept table was searched again"))
    for split in texts:
        assert compute_neighbours(built, k=2, target=tmp_path / split / "tokens", progress=False)[1] == tables[split]


def test_query_keys_of_a_killed_search_are_never_read_by_one_of_other_inputs(built: Memory, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """A neighbours search of another store killed while encoding its queries leaves key shards; after the
    store changes (re-tokenized), a re-run encodes its own queries: shards of the right shape but of other
    inputs were kept and searched, a wrong table marked complete."""
    from burrow.memory import encode as encode_mod
    from burrow.memory.neighbours import neighbour_table_paths

    (tmp_path / "a.txt").write_text("Comets leave trails of dust and gas across the night sky.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Bakers knead the dough and bake loaves in hot ovens.\n", encoding="utf-8")
    store = tmp_path / "val" / "tokens"
    tokenize_store(built, [str(tmp_path / "b.txt")], store, progress=False)
    want = np.load(compute_neighbours(built, k=2, target=store, progress=False)[0])  # b's own neighbours
    tokenize_store(built, [str(tmp_path / "a.txt")], store, progress=False, force=True)
    real = encode_mod.encode_sharded

    def killed(encoder, texts_of, n, out_dir, progress=None):  # a's queries: a shard written, then killed
        out_dir.mkdir(parents=True, exist_ok=True)  # (shaped as b's will be: a shape check cannot tell them apart)
        np.save(out_dir / "shard_00000.npy", np.ones((len(want), encoder.dim), dtype=np.float32))
        raise KeyboardInterrupt

    monkeypatch.setattr("burrow.memory.tables.encode_sharded", killed)
    with pytest.raises(KeyboardInterrupt):
        compute_neighbours(built, k=2, target=store, progress=False)
    monkeypatch.setattr("burrow.memory.tables.encode_sharded", real)
    tokenize_store(built, [str(tmp_path / "b.txt")], store, progress=False, force=True)  # b again
    ids_p, _ = compute_neighbours(built, k=2, target=store, progress=False)
    np.testing.assert_array_equal(np.load(ids_p), want)
    _, _, kind = neighbour_table_paths(built.dir, ids_p.name.split(".")[0], 2)
    assert not list(ids_p.parent.glob(f".{kind}.*.keys"))  # the killed search's shards are gone


def test_interrupted_encode_resumes_to_identical_keys(tiny_corpus: Path, tmp_path: Path, memory_config,
                                                      encoder, monkeypatch) -> None:
    full, _ = build_memory([str(tiny_corpus)], tmp_path / "a", memory_config, progress=False, encoder=encoder)
    want = np.concatenate([np.load(p) for p in sorted((tmp_path / "a" / "embeddings").glob("shard_*.npy"))])
    calls = {"n": 0}
    real = encoder.encode

    def dying(texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed after two shards
        return real(texts)

    monkeypatch.setattr(encoder, "encode", dying)
    with pytest.raises(KeyboardInterrupt):
        build_memory([str(tiny_corpus)], tmp_path / "b", memory_config, progress=False, encoder=encoder)
    assert not (tmp_path / "b" / "memory.manifest.json").exists()  # nothing looks complete
    assert len(list((tmp_path / "b" / "embeddings").glob("shard_*.npy"))) == 2
    monkeypatch.setattr(encoder, "encode", real)
    calls["n"] = 0
    counted = {"n": 0}
    monkeypatch.setattr(encoder, "encode", lambda t: (counted.__setitem__("n", counted["n"] + 1), real(t))[1])
    _, timings = build_memory([str(tiny_corpus)], tmp_path / "b", memory_config, progress=False, encoder=encoder)
    got = np.concatenate([np.load(p) for p in sorted((tmp_path / "b" / "embeddings").glob("shard_*.npy"))])
    assert counted["n"] == len(want) // 16 + (len(want) % 16 > 0) - 2  # only the missing shards ran
    assert np.array_equal(got, want)
    assert [t.skipped for t in timings][:2] == [True, True]  # tokenizer and tokens were not redone


def test_rerun_is_a_no_op_and_force_redoes(built: Memory, tiny_corpus: Path, memory_config, encoder) -> None:
    _, timings = build_memory([str(tiny_corpus)], built.dir, memory_config, progress=False, encoder=encoder)
    assert all(t.skipped for t in timings)
    _, timings = build_memory([str(tiny_corpus)], built.dir, memory_config, progress=False, encoder=encoder,
                              force=True)
    assert not any(t.skipped for t in timings)


def test_mismatches_are_clear_errors(built: Memory, tiny_corpus: Path, tmp_path: Path, memory_config,
                                     encoder) -> None:
    memory_config.tokenizer.vocab_size = 420
    other, _ = build_memory([str(tiny_corpus)], tmp_path / "other", memory_config, progress=False, encoder=encoder)
    with pytest.raises(BurrowError, match="tokenized with tokenizer"):
        compute_neighbours(built, k=2, target=other.dir / "tokens", progress=False)
    manifest = read_json(built.dir / "memory.manifest.json")
    manifest["format_version"] = 99
    (built.dir / "memory.manifest.json").write_text(__import__("json").dumps(manifest))
    with pytest.raises(BurrowError, match="format version 99"):
        Memory(built.dir)
    with pytest.raises(BurrowError, match="not a memory directory"):
        Memory(tmp_path / "nowhere")


def test_store_reopens_from_disk(shared_memory: Memory) -> None:
    store = TokenStore(shared_memory.dir / "tokens")
    assert store.n_tokens == shared_memory.manifest["n_tokens"]
    assert store.tokenizer_fingerprint == shared_memory.manifest["tokenizer"]


def test_no_op_rerun_keeps_the_memory_manifest(built: Memory, tiny_corpus: Path, memory_config, encoder) -> None:
    before = (built.dir / "memory.manifest.json").read_bytes()
    build_memory([str(tiny_corpus)], built.dir, memory_config, progress=False, encoder=encoder)
    assert (built.dir / "memory.manifest.json").read_bytes() == before  # runs fingerprint it


def test_a_rebuild_with_other_inputs_stopped_partway_leaves_no_memory_that_opens(
        built: Memory, tiny_corpus: Path, memory_config, encoder, monkeypatch) -> None:
    """Another chunk length re-cuts the chunks and re-encodes the keys; stopped before the index, the
    folder holds new chunks beside the old index, so it must not open as a memory until the build ends."""
    import dataclasses

    import burrow.memory.build

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(burrow.memory.build, "build_index", stopped)
    other = dataclasses.replace(memory_config, chunk_size=16)
    with pytest.raises(KeyboardInterrupt):
        build_memory([str(tiny_corpus)], built.dir, other, progress=False, encoder=encoder)
    with pytest.raises(BurrowError, match="memory"):
        Memory(built.dir)
    monkeypatch.undo()
    memory, _ = build_memory([str(tiny_corpus)], built.dir, other, progress=False, encoder=encoder)
    assert memory.chunk_size == 16 and len(memory) == len(memory.chunks)


def test_a_lost_key_manifest_is_not_encoded_again_when_keys_are_not_kept(
        tiny_corpus: Path, tmp_path: Path, memory_config, encoder, monkeypatch) -> None:
    """Without kept keys the finished index is all the keys stage fed: losing its manifest costs no encode."""
    import dataclasses

    config = dataclasses.replace(memory_config, keep_embeddings=False)
    build_memory([str(tiny_corpus)], tmp_path / "mem", config, progress=False, encoder=encoder)
    (tmp_path / "mem" / "embeddings.manifest.json").unlink()
    monkeypatch.setattr(encoder, "encode", lambda texts: pytest.fail("keys encoded again"))
    memory, timings = build_memory([str(tiny_corpus)], tmp_path / "mem", config, progress=False, encoder=encoder)
    assert all(t.skipped for t in timings) and not (tmp_path / "mem" / "embeddings").exists()
    monkeypatch.undo()
    assert memory.search(["owls"], k=1).ids.shape == (1, 1)


def test_a_build_from_other_inputs_into_a_memory_needs_force(built: Memory, tiny_corpus: Path, memory_config,
                                                            encoder, tmp_path: Path) -> None:
    """A mistyped corpus path replaced a built memory silently (and left its neighbour tables listed as
    valid): other inputs are refused without --force and the memory is kept; the same inputs with changed
    contents still refresh it; --force rebuilds it and drops the tables of the memory it replaces."""
    compute_neighbours(built, k=2, progress=False)
    before = (built.dir / "memory.manifest.json").read_bytes()
    files = [str(p) for p in sorted(tiny_corpus.glob("*.txt"))]  # named otherwise: other inputs
    with pytest.raises(BurrowError, match=r"holds a memory built from .*--force"):
        build_memory(files[:1], built.dir, memory_config, progress=False, encoder=encoder)
    assert (built.dir / "memory.manifest.json").read_bytes() == before
    assert len(Memory(built.dir).neighbour_table("self", 2)[0]) == len(built)
    with open(files[0], "a", encoding="utf-8") as f:  # the same inputs, changed: a refresh
        f.write("Owls also nest in barns and old church towers.\n")
    refreshed, _ = build_memory([str(tiny_corpus)], built.dir, memory_config, progress=False, encoder=encoder)
    assert refreshed.manifest["n_tokens"] > built.manifest["n_tokens"]
    assert not list((built.dir / "neighbours").glob("*.manifest.json"))  # made from the memory it replaced
    with pytest.raises(BurrowError, match="neighbours"):
        refreshed.neighbour_table("self", 2)
    with pytest.raises(BurrowError, match="--force"):
        build_memory(files, built.dir, memory_config, progress=False, encoder=encoder)
    rebuilt, _ = build_memory(files, built.dir, memory_config, progress=False, encoder=encoder, force=True)
    assert rebuilt.manifest["n_docs"] == refreshed.manifest["n_docs"]
    moved = tiny_corpus.parent / "moved" / tiny_corpus.name  # a moved project: the same inputs by name
    shutil.copytree(tiny_corpus, moved)
    build_memory([str(moved)], tmp_path / "mem2", memory_config, progress=False, encoder=encoder)
    build_memory([str(tiny_corpus)], tmp_path / "mem2", memory_config, progress=False, encoder=encoder)


@pytest.mark.parametrize("name", ["../../evil", "a/b", "..", ""])
def test_a_neighbour_table_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    """`memory neighbours --name ../../evil` wrote its tables outside the memory folder."""
    from burrow.memory.neighbours import neighbour_table_paths

    with pytest.raises(BurrowError, match="plain name"):
        neighbour_table_paths(tmp_path, name, 2)
    assert neighbour_table_paths(tmp_path, "valid-set_1", 2)[2] == "valid-set_1.k2"
    assert neighbour_table_paths(tmp_path, ".valid-725725b0", 2)[2] == ".valid-725725b0.k2"  # a store in .valid/


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_lost_or_damaged_tokenizer_says_to_rebuild_and_a_rebuild_makes_it_again(
        built: Memory, tiny_corpus: Path, memory_config, encoder, damage: str) -> None:
    """A deleted tokenizer.model was looked up on the Hugging Face hub ("couldn't connect"), a truncated one
    gave protobuf's message, and a plain re-run of the build failed the same way (only --force repaired it)."""
    path = built.dir / built.manifest["tokenizer_file"]
    want = built.tokenizer.encode("Owls hunt at night.")
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BurrowError, match="re-run the `burrow memory build`") as info:
        _ = Memory(built.dir).tokenizer
    assert "huggingface" not in str(info.value).lower()
    memory, _ = build_memory([str(tiny_corpus)], built.dir, memory_config, progress=False, encoder=encoder)
    assert memory.tokenizer.encode("Owls hunt at night.") == want


def test_a_missing_tokenizer_path_is_not_looked_up_on_the_hub(tmp_path: Path) -> None:
    from burrow.data.tokenizer import load_tokenizer

    for source in (str(tmp_path / "nope.model"), "./nope", "nonexist.json"):
        with pytest.raises(BurrowError, match="no such tokenizer file or folder"):
            load_tokenizer(source)


def test_force_encodes_again(tiny_corpus: Path, tmp_path: Path, memory_config, encoder) -> None:
    """`memory build --force` starts again: key shards of a finished build are encoded again (they were kept
    whenever their recorded inputs matched, so --force could not replace keys an edited encoder made)."""
    built, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    shard = sorted((tmp_path / "m" / "embeddings").glob("shard_*.npy"))[0]
    want = np.load(shard)
    np.save(shard, np.ones_like(want))  # as written by an encoder since changed in place
    build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder, force=True)
    np.testing.assert_allclose(np.load(shard), want, rtol=1e-5, atol=1e-6)


def test_an_edit_that_keeps_every_count_changes_the_memorys_manifest(tiny_corpus: Path, tmp_path: Path,
                                                                     memory_config, encoder) -> None:
    """Runs, datastores and neighbour tables are keyed on the memory's manifest; an edit that keeps the
    documents, tokens and chunks as many ("cats" -> "dogs") must change it (it held counts only)."""
    import os

    built, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    doc = next(p for p in sorted(tiny_corpus.glob("*.txt")) if "cats" in p.read_text(encoding="utf-8"))
    st = doc.stat()
    doc.write_text(doc.read_text(encoding="utf-8").replace("cats", "dogs"), encoding="utf-8")
    os.utime(doc, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
    edited, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    assert edited.manifest["contents"] != built.manifest["contents"]


def test_a_memory_built_before_contents_was_recorded_is_kept_by_a_no_op_rebuild(tiny_corpus: Path, tmp_path: Path,
                                                                                memory_config, encoder) -> None:
    """Runs fingerprint the memory's manifest: an unchanged re-build must not rewrite an older manifest just to
    add 'contents' (its runs would refuse the memory, its neighbour tables would go)."""
    from burrow.artefacts import read_json, write_json

    built, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    path = tmp_path / "m" / "memory.manifest.json"
    older = {k: v for k, v in read_json(path).items() if k != "contents"}  # as an earlier burrow wrote it
    write_json(path, older)
    again, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    assert read_json(path) == older and again.manifest == older


def test_the_device_a_build_encodes_on_is_not_part_of_the_memory(built: Memory, tiny_corpus: Path,
                                                                  memory_config) -> None:
    """`memory build --device cpu` (or `burrow demo --device cpu`) recorded the device in the manifest: the same
    memory built on another device was another memory (its runs refused it), and its queries were tied to the
    device (a memory built with cuda could not be searched on a CPU host)."""
    from burrow.memory.build import encoder_on

    before = (built.dir / "memory.manifest.json").read_bytes()
    assert encoder_on(memory_config, "auto") is None
    build_memory([str(tiny_corpus)], built.dir, memory_config, progress=False,
                 encoder=encoder_on(memory_config, "cpu"))
    assert (built.dir / "memory.manifest.json").read_bytes() == before
    assert built.manifest["encoder_config"]["device"] == "auto"


def test_a_re_tokenized_store_of_the_same_shape_gets_new_neighbours(built: Memory, tmp_path: Path) -> None:
    """A store re-made from an edited file whose counts did not change (a year corrected: digits are one token
    each) kept its neighbour table: the table's key read the store's manifest, which held counts only."""
    val = tmp_path / "val.txt"
    store = tmp_path / "val"
    val.write_text("Comets leave trails of dust in 1999.\n", encoding="utf-8")
    first = tokenize_store(built, [str(val)], store, progress=False)
    _, before = compute_neighbours(built, k=2, target=store, progress=False)
    val.write_text("Comets leave trails of dust in 2024.\n", encoding="utf-8")
    again = tokenize_store(built, [str(val)], store, progress=False)
    if (again.n_tokens, again.manifest["bytes"]) != (first.n_tokens, first.manifest["bytes"]):
        pytest.skip("the edit changed the store's counts with this tokenizer")
    _, after = compute_neighbours(built, k=2, target=store, progress=False)
    assert after["inputs"] != before["inputs"]


def test_a_changed_tokenizer_file_is_read_again_on_a_rebuild(tiny_corpus: Path, tmp_path: Path, memory_config,
                                                             encoder) -> None:
    """--tokenizer FILE, then FILE replaced (a retrained tokenizer) and the build re-run: the memory kept its
    copy of the old one (the stage's key holds the path, not what is there) and every stage after it."""
    import dataclasses

    from burrow.data.corpus import read_corpus
    from burrow.data.tokenizer import TokenizerConfig, train_tokenizer

    texts = [d.text for d in read_corpus([tiny_corpus])]
    source = tmp_path / "tok" / "tokenizer.model"
    train_tokenizer(texts, source.parent, TokenizerConfig(vocab_size=400))
    config = dataclasses.replace(memory_config, tokenizer=TokenizerConfig(source=str(source)))
    first, _ = build_memory([str(tiny_corpus)], tmp_path / "mem", config, progress=False, encoder=encoder)
    assert first.tokenizer.vocab_size == 400
    train_tokenizer(texts, source.parent, TokenizerConfig(vocab_size=420))  # the same path, another tokenizer
    again, timings = build_memory([str(tiny_corpus)], tmp_path / "mem", config, progress=False, encoder=encoder)
    assert again.tokenizer.vocab_size == 420
    assert again.store.tokenizer_fingerprint == again.tokenizer.fingerprint()
    assert not any(t.skipped for t in timings if t.name in ("tokenizer", "tokens"))


def test_a_local_hugging_face_dataset_saved_again_refreshes_the_memory(tiny_corpus: Path, tmp_path: Path,
                                                                       memory_config, encoder) -> None:
    """A folder written by datasets' save_to_disk is read as hf:FOLDER, whose key was its name alone: saved
    again with other rows, a re-run kept the memory of the old rows."""
    import shutil

    import datasets

    from burrow.data.corpus import read_corpus

    texts = [d.text for d in read_corpus([tiny_corpus])]
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(folder))
    first, _ = build_memory([str(folder)], tmp_path / "mem", memory_config, progress=False, encoder=encoder)
    n_docs = first.store.n_docs
    shutil.rmtree(folder)
    datasets.Dataset.from_dict({"text": texts[1:]}).save_to_disk(str(folder))
    again, timings = build_memory([str(folder)], tmp_path / "mem", memory_config, progress=False, encoder=encoder)
    assert again.store.n_docs == n_docs - 1
    assert not any(t.skipped for t in timings if t.name == "tokens")


def test_a_file_rewritten_within_the_same_second_is_noticed(tiny_corpus: Path, tmp_path: Path, memory_config,
                                                            encoder) -> None:
    """The corpus key held each file's mtime in whole seconds: a file rewritten (same size) within the second
    it was built from kept its key, and the stale memory was reused."""
    import os

    doc = next(p for p in sorted(tiny_corpus.glob("*.txt")) if "cats" in p.read_text(encoding="utf-8"))
    second = doc.stat().st_mtime_ns // 10**9 * 10**9
    os.utime(doc, ns=(second, second + 100))
    built, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    doc.write_text(doc.read_text(encoding="utf-8").replace("cats", "dogs"), encoding="utf-8")
    os.utime(doc, ns=(second, second + 200))  # the same second, the same size
    edited, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    assert edited.manifest["contents"] != built.manifest["contents"]
    assert "dogs" in " ".join(edited.search(["dogs hunt mice"], k=1).texts[0])


def test_a_memory_keyed_on_whole_second_mtimes_is_kept_by_a_no_op_rebuild(tiny_corpus: Path, tmp_path: Path,
                                                                          memory_config, encoder,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A memory whose corpus key an earlier burrow made from whole-second mtimes is not rebuilt (nor its
    manifest, which runs fingerprint, rewritten) by an unchanged re-run."""
    from burrow.memory import build

    real = build._inputs_fingerprints
    monkeypatch.setattr(build, "_inputs_fingerprints", lambda inputs, corpus: (real(inputs, corpus)[1],) * 2)
    build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    before = (tmp_path / "m" / "memory.manifest.json").read_bytes()
    monkeypatch.setattr(build, "_inputs_fingerprints", real)
    _, timings = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    assert all(t.skipped for t in timings)
    assert (tmp_path / "m" / "memory.manifest.json").read_bytes() == before


def test_an_encoder_changed_past_its_first_4_mib_is_another_encoder(tiny_corpus: Path, tmp_path: Path,
                                                                     memory_config, encoder) -> None:
    """The encoder's fingerprint hashed the first 4 MiB of its weights: the same folder with weights changed
    past that point (trained in place) was taken for the encoder the keys were made with."""
    from dataclasses import replace

    from burrow.memory.encode import EncoderConfig, FrozenEncoder

    folder = tmp_path / "encoder"
    shutil.copytree(encoder.path, folder)
    config = replace(memory_config, encoder=EncoderConfig(model=str(folder), shard_size=16))
    build_memory([str(tiny_corpus)], tmp_path / "m", config, progress=False)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    assert len(data) > 8 << 20
    data[-4:] = np.float32(0.5).tobytes()  # one weight of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(BurrowError, match="is not the one this memory's keys were made with"):
        Memory(tmp_path / "m").search(["cats hunt mice"], k=1)
    _, timings = build_memory([str(tiny_corpus)], tmp_path / "m", config, progress=False,
                              encoder=FrozenEncoder(config.encoder))
    assert not next(t for t in timings if t.name == "embeddings").skipped  # keys made again, not reused
    Memory(tmp_path / "m").search(["cats hunt mice"], k=1)


def test_keys_made_at_another_precision_are_made_again(tiny_corpus: Path, tmp_path: Path, memory_config) -> None:
    """The embeddings stage's key lacked the encoder's precision: keys made in fp32 were reused by a bf16 build
    (and the other way round), the memory then recording a precision its keys were not made at."""
    from dataclasses import replace

    from burrow.memory.encode import EncoderConfig

    def build(precision: str):
        config = replace(memory_config, encoder=EncoderConfig(shard_size=16, precision=precision))
        return build_memory([str(tiny_corpus)], tmp_path / "m", config, progress=False)

    build("fp32")
    fp32 = np.load(sorted((tmp_path / "m" / "embeddings").glob("shard_*.npy"))[0])
    memory, timings = build("bf16")
    assert not next(t for t in timings if t.name == "embeddings").skipped
    assert read_json(tmp_path / "m" / "embeddings.manifest.json")["precision"] == "torch.bfloat16"
    bf16 = np.load(sorted((tmp_path / "m" / "embeddings").glob("shard_*.npy"))[0])
    assert not np.array_equal(fp32, bf16)
    assert memory.manifest["encoder_config"]["precision"] == "bf16"


def test_keys_an_earlier_burrow_made_are_kept_by_a_no_op_rebuild(tiny_corpus: Path, tmp_path: Path, memory_config,
                                                                  encoder) -> None:
    """A memory an earlier burrow built (its encoder fingerprinted on 4 MiB, its keys' stage key without the
    precision) is neither re-encoded nor given a new manifest by an unchanged re-run, and its encoder is
    accepted."""
    from dataclasses import asdict

    from burrow.artefacts import config_hash, write_json

    built, _ = build_memory([str(tiny_corpus)], tmp_path / "m", memory_config, progress=False, encoder=encoder)
    d, earlier = tmp_path / "m", encoder.earlier_fingerprint()
    emb = read_json(d / "embeddings.manifest.json")
    chunks = read_json(d / "chunks.manifest.json")["inputs"]
    emb_inputs = config_hash({"chunks": chunks, "encoder": earlier, "shard": memory_config.encoder.shard_size})
    write_json(d / "embeddings.manifest.json", {**emb, "inputs": emb_inputs, "encoder": earlier})
    index_inputs = config_hash({"emb": emb_inputs, "index": asdict(memory_config.index)})
    write_json(d / "index.manifest.json", {**read_json(d / "index.manifest.json"), "inputs": index_inputs})
    write_json(d / "memory.manifest.json", {**built.manifest, "encoder": earlier, "contents": index_inputs})
    before = (d / "memory.manifest.json").read_bytes()
    _, timings = build_memory([str(tiny_corpus)], d, memory_config, progress=False, encoder=encoder)
    assert all(t.skipped for t in timings)
    assert (d / "memory.manifest.json").read_bytes() == before
    assert Memory(d).search(["cats hunt mice"], k=1).ids[0, 0] >= 0
