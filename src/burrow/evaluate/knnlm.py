"""kNN-LM (Khandelwal et al. 2020) over a memory's corpus, scored inside burrow's bits-per-byte evaluation.

Shape legend: N datastore entries (one per token of the memory's corpus), d hidden width, Q scored
evaluation tokens, K neighbours per query, D documents.

* **Datastore** (an artefact under ``MEM/knnlm/<model fingerprint>/``): run the LM over every
  document of the memory's token store in the one chunk layout (:mod:`burrow.data.layout`),
  non-overlapping windows; key = the LM's final hidden state (the input of its output layer: after
  the final norm), value = the next token, plus the entry's document. Keys are stored as fp16 and
  indexed with FAISS (exact below ``flat_below`` entries, above it an IVF whose lists hold the fp16
  keys as stored: lossless, half IVF-Flat's size and ~1.5× faster to search), squared L2.
* **Scoring**: the same strided windows as :func:`burrow.evaluate.bpb.score_model` give, per scored
  token, log p_LM(target) and the hidden state; its K nearest entries (same-document entries
  excluded) give p_kNN(target) = Σ_{j: v_j = target} softmax(−dist_j / T); the mixture is
  p = λ·p_kNN + (1 − λ)·p_LM (:mod:`burrow.evaluate.knnmix`). With λ = 0 the score equals the LM's own
  (to float32 rounding). Inside ``burrow eval`` the per-token log p_LM and hidden states are collected
  while the baseline itself is scored (:class:`LMPass`): one forward pass over the windows serves both.
* **Tuning** λ and T never sees the documents it is reported on: two-fold cross-fitting over the
  first and second half of the documents (each half is scored with the parameters tuned on the other),
  or fixed values (``KnnLMConfig.lam`` and ``temperature``, e.g. tuned on valid and reported on test).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from burrow.artefacts import config_hash, damaged, read_manifest, write_manifest
from burrow.data.layout import document_inputs, start_token, target_offset
from burrow.data.tokens import memory_documents
from burrow.device import autocast, autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.evaluate.bpb import ModelScore, scored_spans, token_bits
from burrow.evaluate.config import KnnLMConfig
from burrow.evaluate.data import EvalData
from burrow.evaluate.knnmix import KnnQueries, mixture_bits, subset, tune
from burrow.memory.neighbours import search_excluding

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_KIND = "ivf-fp16"  # what the IVF lists hold; part of the inputs, so an IVF-Flat datastore (before it) is rebuilt




def output_layer(model: Any) -> torch.nn.Module:
    """The module mapping final hidden states to logits (burrow: ``head``; HF: output embeddings)."""
    if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        return model.get_output_embeddings()  # type: ignore[no-any-return]
    if hasattr(model, "base") and hasattr(model.base, "get_output_embeddings"):  # a retro-fitted HF model
        return model.base.get_output_embeddings()  # type: ignore[no-any-return]
    return model.head  # type: ignore[no-any-return]


class _HiddenTap:
    """Captures the input of the output layer (the final hidden states) on every forward."""

    def __init__(self, model: Any) -> None:
        self.value: torch.Tensor | None = None
        self._handle = output_layer(model).register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.value = args[0].detach()

    def close(self) -> None:
        self._handle.remove()


def model_fingerprint(model: Any) -> str:
    """Hash of a model's weights and config: a datastore belongs to exactly one model."""
    h = hashlib.sha256(repr(getattr(model, "config", "")).encode())
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Datastore:
    """Keys (N, d) fp16, values (N,) next tokens, docs (N,) memory document of each entry, and the index."""

    dir: Path
    keys: np.ndarray
    values: np.ndarray
    docs: np.ndarray
    index: Any = field(repr=False)

    def __len__(self) -> int:
        return len(self.values)


def _store_windows(store: Any, n: int, m: int, s: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(document, inputs (w,), targets (w,)) of non-overlapping windows over each document's layout."""
    p0 = target_offset(m)
    for d in range(store.n_docs):
        tokens = np.asarray(store.document(d), dtype=np.int64)
        if len(tokens) == 0:
            continue
        x = document_inputs(tokens, m, s, store.pad_id)
        t = np.concatenate([np.full(p0, -1, dtype=np.int64), tokens])  # -1: no target (the document-start chunk)
        for a in range(0, len(x), n):
            yield d, x[a : a + n], t[a : a + n]


def build_datastore(model: Any, memory: Any, seq_len: int, config: KnnLMConfig | None = None,
                    force: bool = False) -> Datastore:
    """The kNN-LM datastore of ``model`` over ``memory``'s corpus (built once, then reused)."""
    config = config or KnnLMConfig()
    if int(model.config.vocab_size) < memory.tokenizer.vocab_size:
        raise BurrowError(f"the model's vocabulary ({model.config.vocab_size}) is smaller than memory "
                          f"{memory.dir}'s tokenizer ({memory.tokenizer.vocab_size}): a kNN-LM datastore needs "
                          "the model the memory's tokenizer was trained for")
    fp = model_fingerprint(model)
    out = Path(memory.dir) / "knnlm" / fp
    # the keys are the model's hidden states under this autocast dtype: a datastore of another dtype is another one
    dtype = autocast_dtype(pick_device(config.device), config.precision)
    inputs = config_hash({"model": fp, "memory": memory.manifest, "seq_len": seq_len, "format": FORMAT_VERSION,
                          "index": [config.flat_below, config.nlist, config.train_sample, INDEX_KIND],
                          "autocast": str(dtype)})
    man = read_manifest(out, "knnlm")
    if man is not None and man.get("inputs") == inputs and not force:
        log.info("reusing the kNN-LM datastore in %s (%d entries)", out, man["n_entries"])
        return _open(out, config)
    if out.exists():
        shutil.rmtree(out)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    keys, values, docs = _encode_store(model, memory, seq_len, config)
    np.save(tmp / "keys.npy", keys)
    np.save(tmp / "values.npy", values)
    np.save(tmp / "docs.npy", docs)
    index = _build_index(keys, config)
    faiss.write_index(index, str(tmp / "index.faiss"))
    tmp.rename(out)  # a complete directory or none: the manifest below marks it usable
    write_manifest(out, "knnlm", inputs=inputs, model=fp, memory=str(memory.dir), n_entries=int(len(values)),
                   dim=int(keys.shape[1]), seq_len=seq_len, index=type(index).__name__, format_version=FORMAT_VERSION)
    return _open(out, config)


def _open(directory: Path, config: KnnLMConfig) -> Datastore:
    with damaged(directory, f"delete {directory} and re-run to build it again"):
        index = faiss.read_index(str(directory / "index.faiss"))
        if hasattr(index, "nprobe"):
            index.nprobe = config.nprobe
        return Datastore(directory, np.load(directory / "keys.npy", mmap_mode="r"), np.load(directory / "values.npy"),
                         np.load(directory / "docs.npy"), index)


def _encode_store(model: Any, memory: Any, n: int, config: KnnLMConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden states and next tokens of every token of the memory's corpus.

    Windows are batched longest first, each batch about ``batch_tokens`` tokens, so a corpus of many
    short documents (a window each) is not padded to the full window length; entries stay in document
    order (the same datastore as batching in order, up to float rounding).
    """
    device = pick_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    model.to(device).eval()
    store, m = memory.store, memory.chunk_size
    windows = list(_store_windows(store, n, m, start_token(memory.tokenizer)))  # (document, inputs, targets)
    kept = np.array([int((t >= 0).sum()) for _, _, t in windows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(kept)])  # entries of window i: offsets[i] .. offsets[i + 1]
    values = np.concatenate([t[t >= 0] for _, _, t in windows]) if windows else np.zeros(0, np.int64)
    docs = np.repeat(np.array([d for d, _, _ in windows], dtype=np.int64), kept)
    keys: np.ndarray | None = None
    tap = _HiddenTap(model)
    bar = tqdm(total=int(offsets[-1]), unit="tok", desc="kNN-LM datastore", disable=not config.progress)
    try:
        for rows in _length_batches([len(x) for _, x, _ in windows], config.batch_tokens):
            h = _encode_batch(model, tap, [windows[i] for i in rows], device, dtype)  # (b, w, d)
            if keys is None:
                keys = np.zeros((int(offsets[-1]), h.shape[-1]), dtype=np.float16)
            for row, i in enumerate(rows):
                t = windows[i][2]
                keys[offsets[i]:offsets[i + 1]] = h[row, : len(t)][t >= 0]
            bar.update(int(kept[rows].sum()))
    finally:
        tap.close()
        bar.close()
    if keys is None:
        raise BurrowError(f"memory {memory.dir} has no tokens: nothing to build a kNN-LM datastore from")
    return keys, values.astype(np.int32), docs.astype(np.int32)


def _length_batches(lengths: list[int], batch_tokens: int) -> Iterator[np.ndarray]:
    """Indices of windows in batches of about ``batch_tokens`` tokens (padding included), longest first."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    a = 0
    while a < len(order):
        rows = max(1, batch_tokens // max(1, lengths[order[a]]))  # the first is the batch's longest
        yield order[a : a + rows]
        a += rows


def _encode_batch(model: Any, tap: _HiddenTap, batch: list[tuple[int, np.ndarray, np.ndarray]], device: torch.device,
                  dtype: torch.dtype | None) -> np.ndarray:
    """Final hidden states (b, w, d) float32 of one batch of windows, right-padded to the longest."""
    w = max(len(x) for _, x, _ in batch)
    x = np.zeros((len(batch), w), dtype=np.int64)
    for i, (_, xi, _) in enumerate(batch):
        x[i, : len(xi)] = xi
    with torch.inference_mode(), autocast(device, dtype):
        if getattr(model, "fused_loss", False):  # burrow's model: the hidden states without the logits
            tap.value = model.hidden(torch.as_tensor(x, device=device))
        else:
            model(torch.as_tensor(x, device=device))
    assert tap.value is not None
    return tap.value.float().cpu().numpy()  # right padding never influences earlier positions (causal)


def _build_index(keys: np.ndarray, config: KnnLMConfig) -> Any:
    n, d = keys.shape
    if n < config.flat_below:
        index: Any = faiss.IndexFlatL2(d)
    else:
        nlist = config.nlist or int(min(4096, max(64, 4 * np.sqrt(n))))
        # Lists store the fp16 keys themselves (no residual): the same vectors as IVF-Flat in half the bytes.
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(d), d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_L2, False)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, size=min(n, config.train_sample), replace=False))
        index.train(np.ascontiguousarray(keys[sample], dtype=np.float32))
        index.nprobe = config.nprobe
    for s in range(0, n, 262_144):
        index.add(np.ascontiguousarray(keys[s : s + 262_144], dtype=np.float32))
    return index


class LMPass:
    """What a kNN-LM reads from one pass of its LM over the evaluation windows: per document, ln p_LM of
    each target token and the hidden state that predicted it.

    Collected while the LM is scored (:meth:`collect`'s observer goes to :func:`~burrow.evaluate.bpb.score_model`),
    so ``burrow eval`` runs the baseline once for its own score and for its kNN-LM queries.
    """

    def __init__(self, data: EvalData, model: Any, n: int, dtype: torch.dtype | None) -> None:
        self.data, self.model, self.n, self.dtype = data, model, n, dtype  # what it was collected with
        self.lm_logp = [np.full(len(t), np.nan) for t in data.tokens]  # per document (L,) float64
        self.hidden: list[np.ndarray | None] = [None] * data.n_docs  # per document (L, d) float32
        self._tap: _HiddenTap | None = None

    @classmethod
    @contextlib.contextmanager
    def collect(cls, model: Any, data: EvalData, n: int, dtype: torch.dtype | None) -> Iterator[LMPass]:
        """Tap ``model``'s output layer while the block runs; pass ``lm_pass.observe`` as ``each`` of a
        scoring of ``data`` in windows of ``n`` tokens under autocast ``dtype``."""
        lm_pass = cls(data, model, n, dtype)
        lm_pass._tap = _HiddenTap(model)
        try:
            yield lm_pass
        finally:
            lm_pass._tap.close()
            lm_pass._tap = None

    def observe(self, group: list[tuple[int, Any]], nats: torch.Tensor) -> None:
        """Keep one batch's ln p_LM(target) (from its nats (b, w)) and hidden states at its scored positions."""
        assert self._tap is not None and self._tap.value is not None
        h = self._tap.value.float().cpu().numpy()  # (b, w, d)
        self._tap.value = None  # a forward that skips the output layer must not reuse this batch's
        lp = (-nats).double().cpu().numpy()  # (b, w)
        for row, d, doc_pos, win_pos in scored_spans(group, self.data.target_offset):
            hid = self.hidden[d]
            if hid is None:
                hid = self.hidden[d] = np.zeros((len(self.data.tokens[d]), h.shape[-1]), dtype=np.float32)
            self.lm_logp[d][doc_pos] = lp[row, win_pos]
            hid[doc_pos] = h[row, win_pos]


def knn_queries(model: Any, data: EvalData, store: Datastore, n: int, config: KnnLMConfig,
                exclude_docs: np.ndarray | None = None, lm_pass: LMPass | None = None) -> KnnQueries:
    """Score every target token of ``data`` with ``model`` (burrow's strided windows) and search its hidden state.

    ``lm_pass``: the same pass, collected while the LM was scored (None: run it here).
    ``exclude_docs`` (D,): per evaluation document, a memory document whose entries must not be used
    (the same document, when the evaluation set is part of the memory); -1 excludes nothing.
    """
    device = pick_device(config.device)
    dtype = autocast_dtype(device, config.precision)
    if lm_pass is None:
        model.to(device).eval()
        with LMPass.collect(model, data, n, dtype) as lm_pass:
            token_bits(model, data, n, None, device, dtype, config.batch_tokens, lm_pass.observe)
    _check_pass(lm_pass, model, data, n, dtype)
    queries = np.concatenate([h for h in lm_pass.hidden if h is not None])
    lm_pass.hidden = []  # read once: the queries are the only copy from here on
    doc = np.repeat(np.arange(data.n_docs), [len(t) for t in data.tokens])
    qdocs = None if exclude_docs is None else np.asarray(exclude_docs)[doc]
    log.info("searching %d kNN-LM queries in %d entries", len(queries), len(store))
    dists, ids = search_excluding(store.index, queries, config.k, qdocs, store.docs)
    target = np.concatenate(data.tokens)
    match = (ids >= 0) & (store.values[np.maximum(ids, 0)] == target[:, None])
    return KnnQueries(np.concatenate(lm_pass.lm_logp), dists, match, doc)


def _check_pass(lm_pass: LMPass, model: Any, data: EvalData, n: int, dtype: torch.dtype | None) -> None:
    """Refuse an LM pass collected with another model, data, window length or precision (its queries would
    not be the ones this kNN-LM scores)."""
    wrong = [what for what, same in (("evaluation data", lm_pass.data is data), ("model", lm_pass.model is model),
                                     (f"window length ({lm_pass.n}, not {n})", lm_pass.n == n),
                                     (f"precision ({lm_pass.dtype}, not {dtype})", lm_pass.dtype == dtype))
             if not same]
    if wrong:
        raise BurrowError(f"the kNN-LM's LM pass was collected with another {', '.join(wrong)}; "
                          "pass lm_pass=None to run the LM here")


def score_knnlm(name: str, model: Any, data: EvalData, memory: Any, n: int, config: KnnLMConfig | None = None,
                exclude_docs: np.ndarray | None = None,
                lm_pass: LMPass | None = None) -> tuple[ModelScore, dict[str, Any]]:
    """The kNN-LM's score on ``data`` and how it was tuned (``{"folds": [{"docs", "lambda", "temperature"}]}``);
    ``lm_pass``: the LM's pass over ``data``, collected while it was scored (None: run here)."""
    config = config or KnnLMConfig()
    store = build_datastore(model, memory, n, config)
    q = knn_queries(model, data, store, n, config, exclude_docs, lm_pass)
    bits = np.empty(len(q.lm_logp))
    folds: list[dict[str, Any]] = []
    if config.lam is not None and config.temperature is not None:
        bits[:] = mixture_bits(q, config.lam, config.temperature)
        folds.append({"docs": "all", "lambda": config.lam, "temperature": config.temperature, "tuned_on": "given"})
    else:
        if data.n_docs < 2:
            raise BurrowError("tuning λ and T by cross-fitting needs at least 2 documents; "
                              "or give --knn-lambda and --knn-temperature")
        half = data.n_docs // 2
        first = q.doc < half
        for report, tune_on, label in ((~first, first, "second"), (first, ~first, "first")):
            lam, t = tune(q, np.flatnonzero(tune_on), config)
            rows = np.flatnonzero(report)
            bits[rows] = mixture_bits(subset(q, rows), lam, t)
            folds.append({"docs": f"{label} half", "lambda": lam, "temperature": t,
                          "tuned_on": "first half" if label == "second" else "second half"})
        lam_all, t_all = tune(q, np.arange(len(q.lm_logp)), config)  # to fix for another split (valid -> test)
        folds.append({"docs": "none (reference)", "lambda": lam_all, "temperature": t_all, "tuned_on": "all"})
    per_doc = np.split(bits, np.cumsum([len(t) for t in data.tokens])[:-1])
    m = data.chunk_size
    chunk_bits = np.concatenate([np.add.reduceat(b, np.arange(0, len(b), m)) for b in per_doc])
    score = ModelScore(name, "knnlm", config.k, np.array([b.sum() for b in per_doc]), chunk_bits, data.doc_bytes)
    info = {"folds": folds, "entries": len(store), "k": config.k, "datastore": str(store.dir),
            "hit_rate": float(q.match.any(axis=1).mean())}
    log.info("%s: %.4f bits/byte (kNN-LM, %d entries)", name, score.bpb, len(store))
    return score, info


def same_documents(data: EvalData, memory: Any) -> np.ndarray:
    """(D,) per evaluation document, the memory document that is the same one (-1 where none)."""
    return memory_documents(data.doc_ids, data.doc_bytes, memory.store.docs)
