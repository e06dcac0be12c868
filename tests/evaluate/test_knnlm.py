"""kNN-LM: λ = 0 is the LM bit for bit; the mixture by hand; same-document exclusion; tuning never sees its report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from burrow.errors import BurrowError
from burrow.evaluate import from_store, from_texts
from burrow.evaluate.bpb import score_model
from burrow.evaluate.knnlm import KnnLMConfig, KnnQueries, build_datastore, mixture_bits, same_documents, score_knnlm
from burrow.model import build_model
from burrow.presets import get_preset

CPU = torch.device("cpu")
N = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory, encoder, make_corpus):
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig, build_memory
    from burrow.memory.encode import EncoderConfig

    root = tmp_path_factory.mktemp("knnlm")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=64), chunk_size=8)
    memory, _ = build_memory([str(make_corpus(root / "corpus"))], root / "mem", config, progress=False,
                             encoder=encoder)
    torch.manual_seed(0)
    model = build_model(get_preset("tiny", vocab_size=memory.tokenizer.vocab_size, chunk_size=8, d_model=32,
                                   n_layers=2, n_heads=2, head_dim=16, max_seq_len=N))
    return memory, model


def test_lambda_zero_is_the_lm_itself(setup) -> None:
    memory, model = setup
    data = from_texts(["a", "b"], ["Cats purr when content and hunt mice.", "A comet has a bright tail."],
                      memory.tokenizer, 8)
    cfg = KnnLMConfig(lam=0.0, temperature=1.0, precision="fp32", progress=False)
    knn, _ = score_knnlm("knn", model, data, memory, N, cfg)
    base = score_model("base", model, "baseline", data, N, None, CPU, None)
    np.testing.assert_allclose(knn.chunk_bits, base.chunk_bits, rtol=1e-6)  # float32 log-softmax in both


def test_mixture_matches_hand_computation() -> None:
    q = KnnQueries(lm_logp=np.log(np.array([0.5, 0.1])), dists=np.array([[1.0, 3.0], [2.0, np.inf]], dtype=np.float32),
                   match=np.array([[True, False], [False, False]]), doc=np.array([0, 0]))
    bits = mixture_bits(q, lam=0.25, temperature=2.0)
    p_knn = math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.5))
    assert bits[0] == pytest.approx(-math.log2(0.25 * p_knn + 0.75 * 0.5))
    assert bits[1] == pytest.approx(-math.log2(0.75 * 0.1))  # no neighbour holds the target


def test_tuning_picks_the_grids_best_pair() -> None:
    """p_kNN computed once per T: the same (λ, T) as trying every pair with mixture_bits; λ = 1 is refused."""
    from burrow.evaluate.knnmix import tune

    rng = np.random.default_rng(0)
    q = KnnQueries(np.log(rng.uniform(0.01, 1, 500)), np.sort(rng.uniform(0, 20, (500, 8)), 1).astype(np.float32),
                   rng.uniform(size=(500, 8)) < 0.2, np.zeros(500, dtype=np.int64))
    cfg = KnnLMConfig(lambdas=(0.1, 0.3, 0.5), temperatures=(1.0, 5.0, 20.0))
    rows = np.arange(0, 500, 2)
    sub = KnnQueries(q.lm_logp[rows], q.dists[rows], q.match[rows], q.doc[rows])
    best = min((float(mixture_bits(sub, lam, t).sum()), lam, t) for lam in cfg.lambdas for t in cfg.temperatures)
    assert tune(q, rows, cfg) == best[1:]
    with pytest.raises(BurrowError, match=r"λ grid must lie in \[0, 1\)"):  # λ = 1: infinite bits where no match
        KnnLMConfig(lambdas=(1.0,), temperatures=(2.0, 3.0))


def test_memory_documents_are_found_unless_excluded(setup) -> None:
    memory, model = setup
    data = from_store(memory.store, memory.tokenizer, 8, max_docs=2)  # two documents of the memory itself
    cfg = KnnLMConfig(lam=0.5, temperature=1.0, k=4, precision="fp32", progress=False)
    own, info = score_knnlm("own", model, data, memory, N, cfg)
    base = score_model("base", model, "baseline", data, N, None, CPU, None)
    assert info["hit_rate"] > 0.9 and own.bpb < base.bpb  # each token's own entry holds its next token
    excluded, info_x = score_knnlm("x", model, data, memory, N, cfg, exclude_docs=same_documents(data, memory))
    assert list(same_documents(data, memory)) == [0, 1]
    assert info_x["hit_rate"] < info["hit_rate"] and excluded.bpb > own.bpb


def test_cross_fitting_tunes_on_the_other_half(setup, monkeypatch) -> None:
    import burrow.evaluate.knnlm as knnlm

    memory, model = setup
    data = from_store(memory.store, memory.tokenizer, 8, max_docs=4)
    seen: list[set[int]] = []
    real = knnlm.tune

    def spy(q, rows, config):
        seen.append(set(q.doc[rows].tolist()))
        return real(q, rows, config)

    monkeypatch.setattr(knnlm, "tune", spy)
    _, info = score_knnlm("k", model, data, memory, N, KnnLMConfig(precision="fp32", progress=False))
    assert seen == [{0, 1}, {2, 3}, {0, 1, 2, 3}]  # the last: a reference to fix for another split, used on none
    assert [f["docs"] for f in info["folds"]] == ["second half", "first half", "none (reference)"]


def test_datastore_is_reused_and_belongs_to_one_model(setup) -> None:
    memory, model = setup
    cfg = KnnLMConfig(progress=False)
    a = build_datastore(model, memory, N, cfg)
    assert len(a) == memory.store.n_tokens  # one entry per token of the corpus
    mtime = (a.dir / "keys.npy").stat().st_mtime_ns
    assert build_datastore(model, memory, N, cfg).dir == a.dir and (a.dir / "keys.npy").stat().st_mtime_ns == mtime
    # keys made under another autocast dtype are another datastore (built again, not reused)
    bf16 = build_datastore(model, memory, N, KnnLMConfig(progress=False, precision="bf16"))
    assert (bf16.dir / "keys.npy").stat().st_mtime_ns != mtime
    a = build_datastore(model, memory, N, cfg)  # and back
    other = build_model(model.config)
    assert build_datastore(other, memory, N, cfg).dir != a.dir
    small = build_model(get_preset("tiny", vocab_size=50, chunk_size=8, d_model=32, n_layers=1, n_heads=2,
                                   head_dim=16, max_seq_len=N))
    with pytest.raises(BurrowError, match="vocabulary"):
        build_datastore(small, memory, N, cfg)


def test_datastore_entries_are_each_windows_hidden_states_in_document_order(setup, tmp_path) -> None:
    """Windows are batched longest first (short documents are not padded to full windows), yet entry i is
    still token i of the corpus: its key the LM's final hidden state from that window alone, its value the
    next token, its document the token's."""
    from burrow.data.layout import start_token
    from burrow.evaluate.knnlm import _store_windows

    memory, model = setup
    store = build_datastore(model, memory, N, KnnLMConfig(progress=False, batch_tokens=3 * N), force=True)
    windows = list(_store_windows(memory.store, N, memory.chunk_size, start_token(memory.tokenizer)))
    assert len({len(x) for _, x, _ in windows}) > 2  # windows of several lengths: batching reorders them
    keys, values, docs = [], [], []
    with torch.inference_mode():
        for d, x, t in windows:
            h = model.hidden(torch.as_tensor(x)[None])[0].numpy()
            keys.append(h[t >= 0])
            values.append(t[t >= 0])
            docs.append(np.full(int((t >= 0).sum()), d))
    np.testing.assert_allclose(np.asarray(store.keys, dtype=np.float32), np.concatenate(keys), atol=2e-2, rtol=1e-2)
    np.testing.assert_array_equal(store.values, np.concatenate(values))
    np.testing.assert_array_equal(store.docs, np.concatenate(docs))


def test_ivf_lists_hold_the_fp16_keys_exactly(setup) -> None:
    """Above ``flat_below`` the index is an IVF whose lists keep the stored fp16 keys unchanged: probing
    every list finds what the exact index finds, and each key is at distance exactly 0 from itself (a
    residual or 8-bit code would not be)."""
    import faiss

    memory, model = setup
    flat = build_datastore(model, memory, N, KnnLMConfig(progress=False), force=True)
    q = np.ascontiguousarray(flat.keys[::7], dtype=np.float32)  # (q, d) some keys, as the queries
    d_flat, i_flat = flat.index.search(q, 4)
    ivf = build_datastore(model, memory, N, KnnLMConfig(progress=False, flat_below=0, nlist=4, nprobe=4,
                                                        train_sample=len(flat)), force=True)
    assert isinstance(ivf.index, faiss.IndexIVFScalarQuantizer) and ivf.index.code_size == 2 * q.shape[1]
    d_ivf, i_ivf = ivf.index.search(q, 4)
    assert (d_ivf[:, 0] == 0).all()
    np.testing.assert_allclose(d_ivf, d_flat, atol=1e-5)
    same = (i_ivf == i_flat) | np.isclose(d_ivf, d_flat, atol=1e-5)  # equal keys may come in either order
    assert same.all()


def test_evaluate_runs_the_baseline_once_for_its_score_and_its_knnlm(setup, monkeypatch) -> None:
    """`burrow eval --method knnlm` reads the kNN-LM's queries from the pass that scores the baseline:
    one forward pass over the windows, and the same kNN-LM score as one that runs its own pass."""
    from burrow.evaluate import bpb
    from burrow.evaluate.methods import MethodsConfig
    from burrow.evaluate.pipeline import EvalConfig, evaluate, model_entries

    memory, model = setup
    data = from_texts(["a", "b", "c"], ["Cats purr when content and hunt mice at night in the barn.",
                                        "A comet has a bright tail of dust and gas.", "Owls see well in the dark."],
                      memory.tokenizer, 8)
    knn_cfg = KnnLMConfig(lam=0.3, temperature=2.0, k=4, precision="fp32", progress=False)
    build_datastore(model, memory, N, knn_cfg)  # built beforehand: its windows are not the evaluation's
    alone, _ = score_knnlm("alone", model, data, memory, N, knn_cfg, same_documents(data, memory))
    passes = []
    real = bpb.run_windows

    def counted(*args, **kwargs):
        passes.append(1)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(bpb, "run_windows", counted)
    result = evaluate(model_entries("base", model), memory, data, EvalConfig(seq_len=N, precision="fp32"),
                      methods=MethodsConfig(methods=("knnlm",), knnlm=knn_cfg))
    assert len(passes) == 1
    np.testing.assert_array_equal(result.scores["base +kNN-LM"].chunk_bits, alone.chunk_bits)
    np.testing.assert_array_equal(result.scores["base"].chunk_bits,
                                  score_model("b", model, "baseline", data, N, None, CPU, None).chunk_bits)


def test_a_pass_collected_otherwise_is_refused(setup) -> None:
    """A kNN-LM handed an LM pass of another window length, precision or model says so instead of scoring
    queries that are not its own."""
    from burrow.evaluate.bpb import token_bits
    from burrow.evaluate.knnlm import LMPass

    memory, model = setup
    data = from_texts(["a", "b"], ["Cats purr when content and hunt mice.", "A comet has a bright tail."],
                      memory.tokenizer, 8)
    cfg = KnnLMConfig(lam=0.3, temperature=2.0, k=4, precision="fp32", progress=False)

    def collected(lm, n, dtype):
        with LMPass.collect(lm, data, n, dtype) as lm_pass:
            token_bits(lm, data, n, None, CPU, dtype, 8192, lm_pass.observe)
        return lm_pass

    other = build_model(get_preset("tiny", vocab_size=memory.tokenizer.vocab_size, chunk_size=8, d_model=32,
                                   n_layers=2, n_heads=2, head_dim=16, max_seq_len=N))
    for lm_pass, what in ((collected(model, N // 2, None), "window length"),
                          (collected(model, N, torch.bfloat16), "precision"), (collected(other, N, None), "model")):
        with pytest.raises(BurrowError, match=what):
            score_knnlm("knn", model, data, memory, N, cfg, lm_pass=lm_pass)
    own, _ = score_knnlm("knn", model, data, memory, N, cfg, lm_pass=collected(model, N, None))
    alone, _ = score_knnlm("knn", model, data, memory, N, cfg)
    np.testing.assert_array_equal(own.chunk_bits, alone.chunk_bits)
