"""Training sequences from a token store, their targets, and RETRO's precomputed neighbours.

Shape legend: b sequences, n tokens per sequence, L = n / m chunks per sequence, m chunk length,
k neighbours, r = 2m retrieved tokens ([chunk, continuation]).

Convention (shared by the baseline and RETRO, so both see identical tokens in identical order):

* Sequence s is made of the L consecutive **chunk slots** ``[s*L, (s+1)*L)`` of the store's chunk
  table, each right-padded to m with the pad id. So chunk u of a sequence *is* a memory chunk, and
  its precomputed neighbours apply exactly. A trailing partial sequence is dropped.
* The target of a position is the next real token **of the same document**; positions whose input
  or target is padding have none (label -100). The last position of a sequence takes the first token
  of the next chunk slot when it continues the same document.
* The position just before a document's first token (the previous document's last token, or a pad)
  is replaced by the document-start token s (the tokenizer's eos, else its pad id — the evaluator's
  ``x = [s] + d[:-1]``) and predicts that first token. So every token of a document is a target
  exactly once per epoch, except a document's first token when its document starts a sequence.
* RETRO's neighbours of chunk u come from the precomputed table (``memory.neighbour_table``), which
  already excludes the chunk's own document; on top of that, a neighbour from *any* document of the
  same sequence is masked, because sequences span documents and a chunk could otherwise retrieve a
  later chunk of its own sequence. Held-out validation chunks are never retrieved while training.
  Training on another store (``--tokens``) masks the same way the memory's copies of its documents
  (the same id and UTF-8 length).
* The order of training sequences is a pure function of (seed, epoch): a resumed run needs only the
  step to reproduce the data stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from burrow.artefacts import config_hash
from burrow.data.layout import start_token
from burrow.data.tokens import TokenStore, memory_documents
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.memory.build import compute_neighbours
from burrow.memory.chunks import ChunkTable, chunk_table, chunk_tokens, neighbour_values
from burrow.memory.neighbours import retrieval_width
from burrow.train.config import TrainConfig

log = logging.getLogger(__name__)

IGNORE = -100  # label of positions without a target (torch's cross-entropy ignore_index)


@dataclass
class Batch:
    """One micro-batch, ready for ``model(tokens, neighbours, neighbour_mask)``."""

    tokens: torch.Tensor  # (b, n) int64
    labels: torch.Tensor  # (b, n) int64, IGNORE where a position has no target
    neighbours: torch.Tensor | None = None  # (b, L, k, r) int64 token ids
    neighbour_mask: torch.Tensor | None = None  # (b, L, k) bool, False = no neighbour

    @property
    def n_targets(self) -> int:
        """Positions that carry a target."""
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device`` (pinned, non-blocking copies on CUDA)."""
        if device.type == "cpu":
            return self

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory().to(device, non_blocking=True)

        return Batch(move(self.tokens), move(self.labels), move(self.neighbours),  # type: ignore[arg-type]
                     move(self.neighbour_mask))


class Sequences:
    """Sequences ``[first, first + count)`` of a store cut into chunk slots (see the module docstring)."""

    def __init__(self, store: TokenStore, table: ChunkTable, seq_len: int, start_id: int, first: int = 0,
                 count: int | None = None) -> None:
        m = table.chunk_size
        check_seq_len(seq_len, m)
        self.store, self.table, self.n, self.m = store, table, seq_len, m
        self.start_id = start_id  # document-start token s
        self.chunks_per_seq = seq_len // m  # L
        total = len(table) // self.chunks_per_seq
        self.first = first
        self.count = total - first if count is None else count
        if self.count <= 0 or first + self.count > total:
            raise BurrowError(f"{store.dir}: too few tokens for one sequence of {seq_len} tokens "
                              f"({len(table)} chunks of {m})")

    def __len__(self) -> int:
        return self.count

    def chunk_ids(self, seqs: np.ndarray) -> np.ndarray:
        """(b, L) chunk-table ids of sequences ``seqs`` (indices into this split)."""
        s = np.asarray(seqs, dtype=np.int64) + self.first
        return s[:, None] * self.chunks_per_seq + np.arange(self.chunks_per_seq)[None, :]

    def tokens_and_labels(self, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (b, n) and labels (b, n) of sequences ``seqs``; no Python loop over tokens."""
        b, m, n, table = len(seqs), self.m, self.n, self.table
        ids = np.concatenate([self.chunk_ids(seqs), self.chunk_ids(seqs)[:, -1:] + 1], axis=1)  # (b, L+1)
        exists = ids < len(table)  # the slot after the store's last chunk does not
        safe = np.where(exists, ids, 0)
        toks = chunk_tokens(self.store, table, safe.reshape(-1)).reshape(b, -1)  # (b, (L+1)*m)
        real = (np.arange(m)[None, None, :] < table.lengths[safe][:, :, None]) & exists[:, :, None]
        real = real.reshape(b, -1)  # (b, (L+1)*m)
        docs = np.repeat(table.docs[safe], m, axis=1)  # (b, (L+1)*m)
        has_target = real[:, :n] & real[:, 1 : n + 1] & (docs[:, :n] == docs[:, 1 : n + 1])
        labels = np.where(has_target, toks[:, 1 : n + 1], IGNORE)
        # positions followed by a document's first token: input s, target that first token
        doc_first = exists & (table.starts[safe] == self.store.offsets[table.docs[safe]])  # (b, L+1)
        starts = np.zeros((b, len(doc_first[0]), m), dtype=bool)
        starts[:, :, 0] = doc_first
        before = starts.reshape(b, -1)[:, 1 : n + 1]  # (b, n)
        inputs = np.where(before, self.start_id, toks[:, :n])
        labels = np.where(before, toks[:, 1 : n + 1], labels)
        return inputs, labels


class Neighbours:
    """Gathers RETRO's neighbours (values + mask) for chunks of a :class:`Sequences` split."""

    def __init__(self, memory: Memory, ids: np.ndarray, k: int, sequence_docs: np.ndarray | None,
                 banned: tuple[int, int] | None = None) -> None:
        self.memory, self.ids, self.k = memory, ids, k
        # Memory document of each chunk of the *sequence's* store (-1: not in the memory): a neighbour from
        # any document of the sequence is masked. For another store, its documents the memory holds too.
        self.sequence_docs = sequence_docs
        self.banned = banned  # [lo, hi) memory chunk ids never retrieved (held-out validation chunks)
        self.mem_docs = memory.chunks.docs

    def select(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Memory chunk ids (b, L, k) of the neighbours of sequence chunk ids (b, L); -1 = masked."""
        b, length = chunk_ids.shape
        nb = np.asarray(self.ids[chunk_ids.reshape(-1), : self.k]).reshape(b, length, self.k)  # (b, L, k)
        if self.banned is not None:
            lo, hi = self.banned
            nb = np.where((nb >= lo) & (nb < hi), -1, nb)
        if self.sequence_docs is not None:
            nb_docs = self.mem_docs[np.maximum(nb, 0)]  # (b, L, k)
            # the documents of the sequence's targets: its L chunks and the slot after them, whose first token
            # is the last position's target (a new document B: B's chunks were retrievable while predicting B[0])
            after = chunk_ids[:, -1:] + 1  # (b, 1)
            inside = after < len(self.sequence_docs)
            next_doc = np.where(inside, self.sequence_docs[np.where(inside, after, 0)], -2)
            seq_docs = np.concatenate([self.sequence_docs[chunk_ids], next_doc], axis=1)  # (b, L + 1)
            same = (nb_docs[..., None] == seq_docs[:, None, None, :]).any(-1)  # (b, L, k)
            nb = np.where(same, -1, nb)
        return nb

    def gather(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (b, L, k, r) and mask (b, L, k) for sequence chunk ids (b, L)."""
        nb = self.select(chunk_ids)
        values = neighbour_values(self.memory.store, self.memory.chunks, nb)  # (b, L, k, r)
        return values, nb >= 0


@dataclass
class Split:
    """Sequences plus (for RETRO) their neighbours."""

    sequences: Sequences
    neighbours: Neighbours | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    def batch(self, seqs: np.ndarray) -> Batch:
        """The micro-batch of sequences ``seqs`` (indices into this split)."""
        tokens, labels = self.sequences.tokens_and_labels(seqs)
        out = Batch(torch.from_numpy(tokens), torch.from_numpy(labels))
        if self.neighbours is not None:
            values, mask = self.neighbours.gather(self.sequences.chunk_ids(seqs))
            out.neighbours, out.neighbour_mask = torch.from_numpy(values), torch.from_numpy(mask)
        return out


@dataclass
class DataSources:
    """The stores a run reads, opened and checked, before the model (and so m) is known."""

    store: TokenStore  # training tokens
    memory: Memory | None
    valid_store: TokenStore | None
    vocab_size: int
    chunk_size: int | None  # m fixed by the memory; None lets the model config decide
    start_id: int  # document-start token s
    fingerprint: dict[str, str | None] = field(default_factory=dict)  # what the run was made from


def open_sources(config: TrainConfig) -> DataSources:
    """Open the memory and token stores of ``config`` and check that they share one tokenizer."""
    memory = Memory(config.memory) if config.memory is not None else None
    store = TokenStore(config.tokens) if config.tokens is not None else memory.store  # type: ignore[union-attr]
    valid = TokenStore(config.valid_tokens) if config.valid_tokens is not None else None
    for s in (store, valid):
        if s is not None and s.tokenizer_fingerprint != store.tokenizer_fingerprint:
            raise BurrowError(f"{s.dir} and {store.dir} were made with different tokenizers")
        if s is not None and memory is not None and s.tokenizer_fingerprint != memory.manifest["tokenizer"]:
            raise BurrowError(f"{s.dir} was tokenized with another tokenizer than memory {memory.dir}; "
                              "re-tokenize it with `burrow memory tokenize`")
    fingerprint: dict[str, str | None] = {
        "tokenizer": store.tokenizer_fingerprint,
        "tokens": config_hash(store.manifest),
        "memory": config_hash(memory.manifest) if memory is not None else None,
        "valid_tokens": config_hash(valid.manifest) if valid is not None else None,
    }
    start = _start_token(store, memory)
    fingerprint["start_token"] = str(start)
    return DataSources(store, memory, valid, int(store.manifest["vocab_size"]),
                       memory.chunk_size if memory is not None else None, start, fingerprint)


def _start_token(store: TokenStore, memory: Memory | None) -> int:
    """The document-start token s: the tokenizer's eos (else pad), as the evaluator uses it.

    A store without a memory finds its tokenizer when it lives inside a memory directory
    (``MEM/tokens``); otherwise s is the store's pad id.
    """
    if memory is None and (store.dir.parent / "memory.manifest.json").exists():
        memory = Memory(store.dir.parent)
    if memory is None or memory.manifest["tokenizer"] != store.tokenizer_fingerprint:
        log.warning("%s: no tokenizer found; the document-start token is the pad id", store.dir)
        return store.pad_id
    return start_token(memory.tokenizer)


@dataclass
class TrainData:
    """The training and validation splits and the deterministic order of training sequences."""

    train: Split
    valid: Split
    seed: int

    def step_sequences(self, step: int, batch_size: int) -> np.ndarray:
        """Training-split indices (batch_size,) of optimizer step ``step``: epoch e visits a
        permutation drawn from (seed, e), so any step's batch is known without replaying the run."""
        n = len(self.train)
        i = step * batch_size + np.arange(batch_size, dtype=np.int64)
        epochs = i // n
        out = np.empty(batch_size, dtype=np.int64)
        for e in np.unique(epochs):  # at most two epochs meet in one batch
            sel = epochs == e
            out[sel] = _permutation(self.seed, int(e), n)[i[sel] % n]
        return out

    def rank_sequences(self, step: int, batch_size: int, rank: int, world: int) -> np.ndarray:
        """Process ``rank``'s share (batch_size / world,) of step ``step``'s batch: a contiguous slice of the
        same global batch, so ``world`` processes together see exactly what one process would."""
        if batch_size % world:
            raise BurrowError(f"{world} processes cannot split a batch of {batch_size} sequences; make "
                              "--batch-size a multiple of --nproc_per_node")
        return self.step_sequences(step, batch_size).reshape(world, -1)[rank]

    def valid_sequences(self, limit: int) -> np.ndarray:
        """Up to ``limit`` validation indices spread evenly over the split (always the same ones)."""
        n = len(self.valid)
        return np.unique(np.linspace(0, n - 1, min(n, limit)).astype(np.int64))


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def check_seq_len(seq_len: int, m: int) -> None:
    """Training sequences hold whole chunk slots: n a multiple of m."""
    if seq_len % m:
        raise BurrowError(f"seq-len ({seq_len}) must be a multiple of the chunk length m = {m}")


def check_data(sources: DataSources, config: TrainConfig, chunk_size: int, retro: bool) -> None:
    """What :func:`build_data` refuses before it reads anything (training checks it before writing its run)."""
    if retro and sources.memory is None:
        raise BurrowError("a RETRO model needs --memory (its neighbours come from there)")
    check_seq_len(config.seq_len, chunk_size)


def build_data(sources: DataSources, config: TrainConfig, chunk_size: int, retro: bool) -> TrainData:
    """Cut the stores into sequences of ``config.seq_len`` tokens and, for RETRO, attach neighbours."""
    check_data(sources, config, chunk_size, retro)
    store = sources.store
    table = _table(sources, store, chunk_size)
    start = sources.start_id
    every = Sequences(store, table, config.seq_len, start)
    if sources.valid_store is not None:
        train_seq = every
        valid_seq = Sequences(sources.valid_store, chunk_table(sources.valid_store, chunk_size), config.seq_len,
                              start)
    else:
        if len(every) < 2:
            raise BurrowError(f"{store.dir}: {len(every)} sequence(s) of {config.seq_len} tokens; "
                              "too few to hold out validation data (give --valid-tokens or a shorter --seq-len)")
        n_valid = max(1, round(config.valid_fraction * len(every)))
        train_seq = Sequences(store, table, config.seq_len, start, 0, len(every) - n_valid)
        valid_seq = Sequences(store, table, config.seq_len, start, len(every) - n_valid, n_valid)
    log.info("%d training and %d validation sequences of %d tokens", len(train_seq), len(valid_seq),
             config.seq_len)
    train, valid = Split(train_seq), Split(valid_seq)
    if retro:
        train.neighbours, valid.neighbours = _neighbours(sources, config, train_seq, valid_seq)
    return TrainData(train, valid, config.seed)


def _table(sources: DataSources, store: TokenStore, chunk_size: int) -> ChunkTable:
    memory = sources.memory
    if memory is not None and store.dir.resolve() == memory.store.dir.resolve():
        return memory.chunks
    return chunk_table(store, chunk_size)


def _neighbours(sources: DataSources, config: TrainConfig, train_seq: Sequences,
                valid_seq: Sequences) -> tuple[Neighbours, Neighbours]:
    memory = sources.memory
    assert memory is not None
    own = train_seq.table is memory.chunks
    k_max = retrieval_width(config.k)  # retrieved once per table; every k ≤ k_max is its first k columns
    _, table = compute_neighbours(memory, k=k_max, target=None if own else sources.store.dir,
                                  progress=config.progress)
    ids, _ = memory.neighbour_table(table["name"], k_max)
    seq_docs = memory.chunks.docs if own else _memory_docs_of(train_seq, memory)
    if valid_seq.store is train_seq.store:  # held-out slice of the same store
        lo = valid_seq.first * valid_seq.chunks_per_seq
        banned = (lo, (valid_seq.first + len(valid_seq)) * valid_seq.chunks_per_seq) if own else None
        return Neighbours(memory, ids, config.k, seq_docs, banned), Neighbours(memory, ids, config.k, seq_docs)
    assert sources.valid_store is not None
    _, table = compute_neighbours(memory, k=k_max, target=sources.valid_store.dir, progress=config.progress)
    valid_ids, _ = memory.neighbour_table(table["name"], k_max)
    return (Neighbours(memory, ids, config.k, seq_docs),
            Neighbours(memory, valid_ids, config.k, _memory_docs_of(valid_seq, memory)))


def _memory_docs_of(sequences: Sequences, memory: Memory) -> np.ndarray:
    """(chunks,) per chunk of another store than the memory's, the memory document that is the chunk's document
    (the same id and UTF-8 length, as evaluation matches them), -1 where the memory does not hold it: a
    neighbour from it would be the text to predict."""
    docs = sequences.store.docs
    same = memory_documents([d.id for d in docs], [d.bytes for d in docs], memory.store.docs)
    matched = int((same >= 0).sum())
    if matched:
        log.info("%s: %d of %d documents are in the memory too; their neighbours from there are masked",
                 sequences.store.dir, matched, len(docs))
    return same[sequences.table.docs]
