"""One evaluation: score every model, then the leakage analysis and the sweeps; the library's entry point.

    from burrow.evaluate import EvalConfig, evaluate, model_entries, write_report
    models = {**model_entries("baseline", base), **model_entries("retro", retro)}
    result = evaluate(models, Memory(mem_dir), ["wiki.valid.tokens"], EvalConfig(leakage=True), cache_dir=out)
    write_report(result, out)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from burrow.data.documents import CorpusConfig
from burrow.data.layout import window_length
from burrow.data.tokens import TokenStore, memory_documents
from burrow.device import autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.evaluate.bpb import MODES, BatchObserver, Gain, ModelScore, bootstrap_gain, check_mode, score_model
from burrow.evaluate.config import EvalConfig
from burrow.evaluate.data import EvalData, from_store, load_eval_data
from burrow.evaluate.knnlm import LMPass
from burrow.evaluate.leakage import Leakage, bpb_alpha, measure_leakage
from burrow.evaluate.methods import MethodsConfig, add_methods, check_methods, incontext_lms
from burrow.evaluate.retrieval import eval_neighbours, retrieved_from_ids, values_of
from burrow.evaluate.sweeps import MemorySubset, sweep_k, sweep_memory
from burrow.memory import Memory
from burrow.model.io import load_named_model
from burrow.model.protocol import RetrievalLM

log = logging.getLogger(__name__)

REPORT_ALPHA = 0.125  # the paper's headline leakage threshold: r(C) ≤ 0.125, a shared run of at most 8 of 64 tokens

#: A model to score and how: (model, "baseline" | "off" | "on").
ModelEntry = tuple[RetrievalLM, str]




@dataclass
class EvalResult:
    """Everything one evaluation measured; :func:`burrow.evaluate.write_report` writes it out."""

    config: EvalConfig
    data: EvalData
    seq_len: int  # n (stride n/2)
    scores: dict[str, ModelScore]  # name -> score at α = 1
    memory: str | None = None  # memory directory used for RETRO[ON] and leakage
    leakage: Leakage | None = None
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (a,) bpb(α)
    sweep_k: dict[str, dict[int, float]] = field(default_factory=dict)  # RETRO[ON] name -> k -> bpb
    sweep_k_docs: int | None = None  # the k sweep's documents: the first N of data (None: all of them)
    sweep_memory: list[MemorySubset] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # stage or score -> wall seconds (where time went)
    bases: dict[str, str] = field(default_factory=dict)  # score -> its own no-retrieval base (methods, RETRO[ON])
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # score -> how its method was run (tuning)
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> per-seed bpbs, mean, t interval
    docs_in_memory: int = 0  # evaluated documents the memory holds too (same id and length)
    _gains: dict[str, dict[str, Any]] | None = field(default=None, repr=False)

    def bpb(self, name: str, alpha: float = 1.0) -> float:
        """bpb of model ``name``; at ``alpha`` < 1 only chunks with r(C) ≤ alpha count (needs leakage)."""
        if alpha >= 1.0:
            return self.scores[name].bpb
        if self.leakage is None:
            raise BurrowError("bpb(α < 1) needs the leakage analysis (EvalConfig(leakage=True))")
        return float(bpb_alpha(self.scores[name].chunk_bits, self.data.chunk_bytes, self.leakage.r, (alpha,))[0])

    def gain(self, name: str, reference: str, alpha: float = 1.0, seed: int = 0) -> Gain:
        """bpb(reference) − bpb(name) at ``alpha`` with a 95% bootstrap interval over documents."""
        if alpha < 1.0 and self.leakage is None:
            raise BurrowError("gains at α < 1 need the leakage analysis (EvalConfig(leakage=True))")
        r = self.leakage.r if self.leakage is not None else None
        return bootstrap_gain(self.data, self.scores[name], self.scores[reference], r, alpha,
                              self.config.bootstrap_samples, seed=seed)

    def gains(self) -> dict[str, dict[str, Any]]:
        """Gain of every other model over its own base (:attr:`bases`; else :meth:`reference`) at α = 1 and (with
        leakage) α = 0.125, as ``{name: {"reference": base, "alpha=1": Gain.to_dict(), "alpha=0.125": …}}``;
        RETRO[ON], whose own base is its [OFF], also against :meth:`reference` under ``"vs_reference"`` (the
        paper's headline comparison). Computed once."""
        if self._gains is None:
            self._gains = self._compute_gains()
        return self._gains

    def _compute_gains(self) -> dict[str, dict[str, Any]]:
        ref = self.reference()
        alphas = [1.0] + ([REPORT_ALPHA] if self.leakage is not None else [])
        out: dict[str, dict[str, Any]] = {}
        for name in self.scores:
            base = self.bases.get(name, ref)
            if base is None or name == base:  # no baseline: only the methods (RETRO[ON] too) have a base
                continue
            out[name] = {"reference": base, **self._gains_over(name, base, alphas)}
            if ref is not None and base != ref and self.scores[name].mode == "on":
                out[name]["vs_reference"] = {"reference": ref, **self._gains_over(name, ref, alphas)}
        return out

    def _gains_over(self, name: str, base: str, alphas: list[float]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in alphas:
            try:
                out[f"alpha={a:g}"] = self.gain(name, base, a).to_dict()
            except BurrowError as e:  # no chunk below α: the report says so instead of failing
                log.warning("no gain for %s over %s at α=%g: %s", name, base, a, e)
        return out

    def reference(self) -> str | None:
        """The first baseline-mode model (what gains are measured against), if any."""
        return next((n for n, s in self.scores.items() if s.mode == "baseline"), None)


def docs_in_memory_note(inside: int, total: int) -> str:
    """What it means that ``inside`` of the ``total`` evaluated documents are also memory documents."""
    return (f"{inside} of {total} evaluated documents are also in the memory: RETRO[ON] can retrieve each one's "
            "own text, and its neighbours' continuations are the next chunks it predicts (as in the paper, its "
            "search does not exclude them; --leakage measures the overlap, bpb(α) discounts it), while kNN-LM and "
            "in-context retrieval exclude a document's own entries")


def model_entries(name: str, model: RetrievalLM) -> dict[str, ModelEntry]:
    """How a model is scored: a baseline once; a RETRO model as ``NAME [OFF]`` and ``NAME [ON]``."""
    if model.config.retro:
        return {f"{name} [OFF]": (model, "off"), f"{name} [ON]": (model, "on")}
    return {name: (model, "baseline")}


def _chunk_size(memory: Memory | None, data: EvalData | TokenStore | Sequence[str | Path]) -> int | None:
    """m: the data's when already cut into chunks, else the memory's (None: neither; nothing can run)."""
    if isinstance(data, EvalData):
        return data.chunk_size
    return memory.chunk_size if memory is not None else None


def _seq_len(models: Mapping[str, ModelEntry], config: EvalConfig, m: int) -> int:
    """n: given, or the shortest trained length among the models, rounded down to a multiple of 2m."""
    longest = min(int(model.config.max_seq_len) for model, _ in models.values())
    n = config.seq_len if config.seq_len is not None else window_length(longest, m)
    if config.seq_len is None and n < 2 * m:  # no --seq-len was given: "seq_len 0" would name nothing the user set
        raise BurrowError(f"a model's max_seq_len ({longest}) is shorter than 2 × the chunk size ({2 * m}): evaluation "
                          "windows (stride n/2) must start on chunk boundaries; use a memory with shorter chunks, or "
                          "give --seq-len (a multiple of 2 × chunk size) to score past the trained length")
    if n < 2 * m or n % (2 * m):
        raise BurrowError(f"seq_len {n} must be a positive multiple of 2 × chunk size ({2 * m}) so that "
                          "windows (stride n/2) start on chunk boundaries")
    if n > longest:
        log.warning("seq_len %d exceeds a model's max_seq_len %d: positions past training length", n, longest)
    return n


def _check_models(models: Mapping[str, ModelEntry], memory: Memory | None, config: EvalConfig) -> None:
    """Fail before any scoring when a model, mode or analysis cannot run."""
    if not models:
        raise BurrowError("no models to evaluate")
    if config.leakage and memory is None:
        raise BurrowError("the leakage analysis needs a memory (--memory)")
    if (config.sweep_k or config.sweep_memory) and not any(mode == "on" for _, mode in models.values()):
        log.warning("sweeps apply to RETRO[ON] models and there are none: skipped")
    for name, (model, mode) in models.items():
        check_mode(model, mode)
        if mode == "on" and memory is None:
            raise BurrowError(f"{name}: RETRO[ON] needs a memory (--memory)")
        if memory is not None:
            try:
                memory.check_vocab(getattr(model.config, "vocab_size", None))
                if mode == "on":
                    memory.check_model(model.config)
            except BurrowError as e:
                raise BurrowError(f"{name}: {e}") from None


def as_data(data: EvalData | TokenStore | Sequence[str | Path], memory: Memory | None, m: int | None,
            config: EvalConfig) -> EvalData:
    """``data`` as :class:`EvalData`: tokenized with the memory's tokenizer into chunks of ``m``."""
    if isinstance(data, EvalData):
        return data
    if memory is None or m is None:
        raise BurrowError("tokenizing evaluation data needs a memory (its tokenizer); or pass EvalData")
    if isinstance(data, TokenStore):
        return from_store(data, memory.tokenizer, m, config.max_docs)
    corpus = CorpusConfig(text_field=config.text_field, txt_split=config.txt_split)  # type: ignore[arg-type]
    return load_eval_data(list(data), memory.tokenizer, m, config.max_docs, corpus)


class _Scorer:
    """Scores (model, mode) pairs on one data set with fixed windows, device and precision."""

    def __init__(self, data: EvalData, memory: Memory | None, n: int, config: EvalConfig):
        self.data, self.n, self.config = data, n, config
        self.device = pick_device(config.device)
        self.dtype = autocast_dtype(self.device, config.precision)
        self.values = values_of(memory) if memory is not None else None
        self.timings: dict[str, float] = {}  # score name -> wall seconds (summed over calls of one name)
        # score name -> the LM pass a kNN-LM reads (collected while scoring a baseline with ``keep_pass``)
        self.lm_passes: dict[str, LMPass] = {}

    def __call__(self, name: str, model: RetrievalLM, mode: str, ids: np.ndarray | None = None,
                 k: int | None = None, keep_pass: bool = False) -> ModelScore:
        with timed(self.timings, name):
            if not keep_pass:
                return self._score(name, model, mode, ids, k)
            with LMPass.collect(model, self.data, self.n, self.dtype) as lm_pass:
                score = self._score(name, model, mode, ids, k, lm_pass.observe)
            self.lm_passes[name] = lm_pass
            return score

    def _score(self, name: str, model: RetrievalLM, mode: str, ids: np.ndarray | None, k: int | None,
               each: BatchObserver | None = None) -> ModelScore:
        k = k or self.config.k
        retrieved = None
        if mode == "on":
            assert ids is not None and self.values is not None
            retrieved = retrieved_from_ids(ids, self.data, k, self.values)
        model.to(self.device)
        return score_model(name, model, mode, self.data, self.n, retrieved, self.device, self.dtype,
                           self.config.batch_tokens, k, each)


def evaluate(models: Mapping[str, ModelEntry], memory: Memory | None,
             data: EvalData | TokenStore | Sequence[str | Path], config: EvalConfig | None = None,
             cache_dir: str | Path | None = None, methods: MethodsConfig | None = None) -> EvalResult:
    """Score ``models`` (name -> (model, mode)) on ``data``; leakage and sweeps as ``config`` asks.

    ``memory`` (a :class:`burrow.memory.Memory`, or None for baselines on pre-tokenized
    :class:`EvalData`) supplies the tokenizer, RETRO[ON]'s neighbours and the leakage neighbours;
    ``cache_dir`` keeps the evaluation neighbours (k_max per chunk) for reuse across calls;
    ``methods`` adds other ways of reading the memory (kNN-LM, in-context, controls), each scored
    on the same documents and measured against its own base.
    """
    config = config or EvalConfig()
    t0 = time.perf_counter()
    _check_models(models, memory, config)
    data = as_data(data, memory, _chunk_size(memory, data), config)
    methods = methods or MethodsConfig()
    check_methods(methods, [mode for _, mode in models.values()], memory, data)
    lms = incontext_lms(models, memory, methods)  # loaded (and their context checked) before any scoring
    n = _seq_len(models, config, data.chunk_size)
    cache = Path(cache_dir) / "neighbours" if cache_dir is not None else None
    on = {name: model for name, (model, mode) in models.items() if mode == "on"}
    # _check_models refused RETRO[ON] without a memory
    timings: dict[str, float] = {}
    with timed(timings, "neighbours"):
        input_nb = eval_neighbours(memory, data, "input", config.k_max, cache) if on and memory is not None else None
    score = _Scorer(data, memory, n, config)
    ids = input_nb.ids if input_nb is not None else None
    # A baseline's kNN-LM reads the pass that scores it (its queries: hidden states and ln p_LM per token).
    knn = "knnlm" in methods.methods
    scores = {name: score(name, model, mode, ids, keep_pass=knn and mode == "baseline")
              for name, (model, mode) in models.items()}
    result = EvalResult(config, data, n, scores, memory=str(memory.dir) if memory is not None else None)
    if memory is not None:
        result.docs_in_memory = int((memory_documents(data.doc_ids, data.doc_bytes, memory.store.docs) >= 0).sum())
        if result.docs_in_memory and (on or methods.methods):
            log.warning("%s", docs_in_memory_note(result.docs_in_memory, data.n_docs))
    with timed(timings, "methods"):
        add_methods(result, score, models, memory, ids, methods, lms)
    if config.leakage and memory is not None:  # _check_models refused leakage without a memory
        with timed(timings, "leakage"):
            _run_leakage(result, memory, cache)
    if on and input_nb is not None and config.sweep_k:
        with timed(timings, "sweep k"):
            _run_sweep_k(result, score, on, input_nb.ids, memory)
    if on and input_nb is not None and memory is not None and config.sweep_memory:
        fns = {name: _bpb_with_ids(score, name, model) for name, model in on.items()}
        with timed(timings, "sweep memory"):
            result.sweep_memory = sweep_memory(memory, input_nb.keys, input_nb.ids, fns, config.sweep_memory,
                                               config.k, config.memory_seed)
    result.timings = {**{name: score.timings[name] for name in models}, **timings}
    result.seconds = time.perf_counter() - t0
    return result


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall seconds to ``timings[name]`` (stage timings of the evaluation and the demo)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _run_sweep_k(result: EvalResult, score: _Scorer, on: dict[str, RetrievalLM], ids: np.ndarray,
                 memory: Memory | None) -> None:
    """RETRO[ON] at every k of the sweep: on all documents (the main k's score reused), or, with
    ``sweep_k_docs``, on the first N documents only (every k scored there, the main k too: a cheaper sweep)."""
    config = result.config
    docs = config.sweep_k_docs
    if docs is None or docs >= result.data.n_docs:
        for name, model in on.items():
            result.sweep_k[name] = sweep_k(_bpb_at_k(score, name, model, result.scores[name]), ids, config.sweep_k)
        return
    subset = result.data.first_docs(docs)
    sub_score = _Scorer(subset, memory, result.seq_len, config)
    sub_ids = ids[: int(result.data.input_offsets[docs])]  # input chunks of the first N documents
    for name, model in on.items():
        result.sweep_k[name] = sweep_k(_bpb_at_k(sub_score, name, model, None), sub_ids, config.sweep_k)
    result.sweep_k_docs = docs


def _bpb_with_ids(score: _Scorer, name: str, model: RetrievalLM) -> Callable[[np.ndarray], float]:
    return lambda ids: score(f"{name} (memory subset)", model, "on", ids).bpb


def _bpb_at_k(score: _Scorer, name: str, model: RetrievalLM,
              main: ModelScore | None) -> Callable[[np.ndarray, int], float]:
    """bpb at k, reusing the main score (when given) at the main k rather than scoring it twice."""
    return lambda ids, k: main.bpb if main is not None and k == main.k else score(f"{name} k={k}", model, "on", ids,
                                                                                   k).bpb


def _run_leakage(result: EvalResult, memory: Memory, cache: Path | None) -> None:
    """r(C) from each target chunk's k_max neighbours (the paper's 10), then bpb(α) for every scored model."""
    k_max = result.config.k_max
    target = eval_neighbours(memory, result.data, "target", k_max, cache)
    tokens = values_of(memory)(target.ids[:, :k_max])  # (q, k_max, r)
    result.leakage = measure_leakage(result.data, tokens, result.config.alphas)
    result.curves = {name: result.leakage.curve(result.data, s.chunk_bits) for name, s in result.scores.items()}


def config_dict(config: EvalConfig) -> dict[str, Any]:
    """JSON-ready config."""
    return asdict(config)


#: (name, model) from a model, retrofit or run directory; model I/O's :func:`load_named_model`.
load_eval_model = load_named_model

__all__ = ["MODES", "EvalConfig", "EvalResult", "ModelEntry", "evaluate", "load_eval_model", "model_entries"]
