"""Training data: chunk-slot sequences, targets checked by hand, padding out of the loss, neighbours that
never come from the sequence's own documents or the held-out slice, a deterministic order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from burrow.memory import Memory
from burrow.model import build_model
from burrow.train import TrainConfig, evaluate_loss, resolve_model_config
from burrow.train.dataset import IGNORE, build_data, open_sources

N = 32  # tokens per sequence in these tests: 4 chunks of 8


def _data(memory: Memory, retro: bool, tmp_path: Path, **kw: object):
    cfg = TrainConfig(model="tiny", out=tmp_path / "run", memory=memory.dir, seq_len=N, steps=10,
                      valid_fraction=0.1, progress=False, **kw)  # type: ignore[arg-type]
    sources = open_sources(cfg)
    return build_data(sources, cfg, memory.chunk_size, retro), cfg


def _hand_labels(memory: Memory, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of chunk slots from flat store positions, one position at a time: the next
    token of the same document; before a document's first token, input s (eos) and that first token."""
    store, table, m = memory.store, memory.chunks, memory.chunk_size
    s = memory.tokenizer.eos_id
    slots = [*chunk_ids.tolist(), int(chunk_ids[-1]) + 1]
    flat = []  # (token, flat position or -1 for padding, is the first token of a document)
    for c in slots:
        for o in range(m):
            real = c < len(table) and o < table.lengths[c]
            pos = int(table.starts[c]) + o if real else -1
            flat.append((int(store.tokens[pos]) if real else store.pad_id, pos,
                         real and pos == store.offsets[table.docs[c]]))
    tokens, labels = [], []
    for p in range(len(chunk_ids) * m):
        tok, pos, _ = flat[p]
        nxt_tok, nxt_pos, nxt_first = flat[p + 1]
        if nxt_first:
            tokens.append(s)
            labels.append(nxt_tok)
        else:
            tokens.append(tok)
            same_doc = pos >= 0 and nxt_pos == pos + 1
            labels.append(nxt_tok if same_doc else IGNORE)
    return np.array(tokens), np.array(labels)


def test_sequences_are_chunk_slots_with_same_document_targets(train_memory: Memory, tmp_path: Path) -> None:
    data, _ = _data(train_memory, False, tmp_path)
    assert data.train.sequences.start_id == train_memory.tokenizer.eos_id != train_memory.store.pad_id
    seqs = np.arange(len(data.train))
    batch = data.train.batch(seqs)
    assert batch.tokens.shape == (len(seqs), N) and batch.neighbours is None
    for i, s in enumerate(seqs):
        ids = data.train.sequences.chunk_ids(np.array([s]))[0]
        assert ids.tolist() == list(range(s * 4, s * 4 + 4))
        want_tokens, want_labels = _hand_labels(train_memory, ids)
        assert batch.tokens[i].tolist() == want_tokens.tolist()
        assert batch.labels[i].tolist() == want_labels.tolist()
    assert (batch.tokens == train_memory.tokenizer.eos_id).any()  # documents do start mid-sequence


def test_padding_is_masked_from_the_loss(train_memory: Memory, tmp_path: Path) -> None:
    data, cfg = _data(train_memory, False, tmp_path)
    seqs = np.arange(len(data.train))
    batch = data.train.batch(seqs)
    pad = train_memory.store.pad_id
    padded_in = batch.tokens == pad
    # (the last position's target is the next chunk slot's first token, checked in the test above)
    padded_out = torch.cat([batch.tokens[:, 1:], torch.full_like(batch.tokens[:, :1], -1)], dim=1) == pad
    assert padded_in.any(), "the tiny corpus must contain short chunks for this test to mean anything"
    assert (batch.labels[padded_in | padded_out] == IGNORE).all()
    assert (batch.labels != IGNORE).any()
    # the loss is the mean over real targets only: compare with a hand computation over the logits
    model_cfg = resolve_model_config("tiny", train_memory.store.manifest["vocab_size"], 8, N)
    torch.manual_seed(0)
    model = build_model(model_cfg).eval()
    with torch.no_grad():
        logp = F.log_softmax(model(batch.tokens).float(), dim=-1)  # (b, n, v)
    keep = batch.labels != IGNORE
    want = -logp[keep].gather(1, batch.labels[keep][:, None]).mean()
    got = evaluate_loss(model, data.train, seqs, 4, torch.device("cpu"), None)
    assert abs(got - float(want)) < 1e-5


def test_retro_neighbours_never_from_the_sequences_documents(train_memory: Memory, tmp_path: Path) -> None:
    data, _ = _data(train_memory, True, tmp_path)
    nbs = data.train.neighbours
    assert nbs is not None
    seqs = np.arange(len(data.train))
    chunk_ids = data.train.sequences.chunk_ids(seqs)  # (b, L)
    picked = nbs.select(chunk_ids)  # (b, L, k)
    docs = train_memory.chunks.docs
    # the documents of every target: the L chunks and the slot after them (the last position's target is that
    # slot's first token: a new document's chunks were retrievable while predicting its first token)
    after = np.minimum(chunk_ids[:, -1:] + 1, len(docs) - 1)
    seq_docs = np.concatenate([docs[chunk_ids], docs[after]], axis=1)  # (b, L + 1)
    real = picked >= 0
    assert real.mean() > 0.5
    for b in range(len(seqs)):
        assert not np.isin(docs[picked[b][real[b]]], seq_docs[b]).any()
    # held-out validation chunks are never retrieved while training
    lo = data.valid.sequences.first * data.valid.sequences.chunks_per_seq
    assert not ((picked >= lo) & (picked < len(data.train) * 4 + len(data.valid) * 4)).any()
    # the batch carries exactly those neighbours' [chunk, continuation] tokens, masked where missing
    from burrow.memory.chunks import neighbour_values

    batch = data.train.batch(seqs)
    assert batch.neighbours is not None and batch.neighbour_mask is not None
    assert batch.neighbours.shape == (len(seqs), 4, 2, 16)
    assert torch.equal(batch.neighbour_mask, torch.from_numpy(real))
    assert torch.equal(batch.neighbours, torch.from_numpy(neighbour_values(train_memory.store,
                                                                           train_memory.chunks, picked)))


def test_baseline_and_retro_see_identical_tokens_in_identical_order(train_memory: Memory, tmp_path: Path) -> None:
    base, cfg = _data(train_memory, False, tmp_path)
    retro, _ = _data(train_memory, True, tmp_path)
    for step in range(3):
        a = base.train.batch(base.step_sequences(step, 4))
        b = retro.train.batch(retro.step_sequences(step, 4))
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)


def test_data_order_is_a_function_of_seed_and_step(train_memory: Memory, tmp_path: Path) -> None:
    data, _ = _data(train_memory, False, tmp_path)
    n = len(data.train)
    epoch = np.concatenate([data.step_sequences(s, 1) for s in range(n)])
    assert sorted(epoch.tolist()) == list(range(n))  # one epoch visits every sequence once
    assert data.step_sequences(5, 3).tolist() == data.step_sequences(5, 3).tolist()
    other, _ = _data(train_memory, False, tmp_path, seed=1)
    orders = [np.concatenate([d.step_sequences(s, 1) for s in range(n)]).tolist() for d in (data, other)]
    assert orders[0] != orders[1]
    assert data.valid_sequences(100).tolist() == list(range(len(data.valid)))


def test_another_store_of_the_memorys_documents_never_retrieves_them(train_memory: Memory, tmp_path: Path) -> None:
    """Training on `--tokens` another store filtered no neighbour: its documents that the memory also holds (the
    same id and UTF-8 length) retrieved their own chunks, the very text to predict, at distance 0."""
    from burrow.data.corpus import CorpusConfig
    from burrow.data.tokens import memory_documents
    from burrow.memory.tables import tokenize_store

    corpus = tmp_path / "same-corpus"
    corpus.mkdir()
    for doc in train_memory.store.docs:  # the memory's own input files, copied
        source = Path(doc.source.split(":line ")[0])
        (corpus / source.name).write_bytes(source.read_bytes())
    (corpus / "doc0.txt").write_text("A document the memory does not hold, about nothing else.\n", encoding="utf-8")
    store = tokenize_store(train_memory, [str(corpus)], tmp_path / "store", CorpusConfig(), progress=False)
    for valid in (None, store.dir):
        data, _ = _data(train_memory, True, tmp_path, tokens=store.dir, valid_tokens=valid)
        in_memory = memory_documents([d.id for d in store.docs], [d.bytes for d in store.docs],
                                     train_memory.store.docs)
        assert (in_memory >= 0).sum() == store.n_docs - 1  # doc0 was rewritten
        for split in (data.train, data.valid):
            seqs = np.arange(len(split))
            chunk_ids = split.sequences.chunk_ids(seqs)  # (b, L), chunks of the other store
            assert split.neighbours is not None
            picked = split.neighbours.select(chunk_ids)
            real = picked >= 0
            assert real.mean() > 0.3
            own = in_memory[split.sequences.table.docs[chunk_ids]]  # (b, L) the memory's copy of each chunk's doc
            for b in range(len(seqs)):
                picked_docs = train_memory.chunks.docs[picked[b][real[b]]]
                assert not np.isin(picked_docs, own[b][own[b] >= 0]).any()
