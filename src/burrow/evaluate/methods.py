"""Ways to read a memory, side by side on the same documents: RETRO, kNN-LM, in-context retrieval, controls.

Every method's score is a :class:`~burrow.evaluate.bpb.ModelScore` on the same :class:`EvalData`, so
bpb, bpb(α) and the paired document bootstrap apply unchanged, and each method's gain is measured
against *its own* no-retrieval base (``EvalResult.bases``):

============  ==========================================  =====================================
method        reads the memory through                     its base
============  ==========================================  =====================================
retro         RETRO[ON]: CCA over k neighbours per chunk   the same model, RETRO[OFF]
              (a RETRO-fit run is scored the same way)
random        RETRO[ON] with random memory chunks          RETRO[OFF]  (a control)
knnlm         p = λ·p_kNN + (1 − λ)·p_LM                   the LM alone (λ = 0)
incontext     retrieved passages before the LM's window    the same loop without passages
============  ==========================================  =====================================
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burrow.errors import BurrowError
from burrow.evaluate.incontext import MAX_CONTEXT, BurrowLM, InContextConfig, load_hf_lm, score_incontext
from burrow.evaluate.knnlm import KnnLMConfig, same_documents, score_knnlm

log = logging.getLogger(__name__)

METHODS = ("retro", "random", "knnlm", "incontext")

#: method -> (the score modes it reads, what those are): a method applies to models of these modes only.
APPLIES_TO = {"retro": (("on",), "RETRO runs"), "random": (("off",), "RETRO runs"),
              "knnlm": (("baseline",), "baseline runs"), "incontext": (("baseline",), "baseline runs or --lm")}


@dataclass
class MethodsConfig:
    """Which retrieval methods ``burrow eval`` adds to the plain scores, and their settings."""

    methods: tuple[str, ...] = ()  # any of METHODS; "retro" is the RETRO[OFF]/[ON] pair scored by default
    knnlm: KnnLMConfig = field(default_factory=KnnLMConfig)  # kNN-LM datastore, search and tuning
    incontext: Any = None  # InContextConfig (None: its defaults)
    lm: str | None = None  # an HF causal LM for in-context retrieval (e.g. smollm2), besides baseline runs
    random_seed: int = 0  # seed of the random-neighbour control

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise BurrowError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")


def check_methods(config: MethodsConfig, modes: Collection[str] | None, memory: Any, data: Any = None,
                  warn: bool = True) -> None:
    """Refuse, before any scoring, methods that cannot run on models of ``modes`` ("baseline" | "off" | "on";
    None: not known yet) with ``memory`` and ``data`` (an ``EvalData``; None: not tokenized yet)."""
    asked = config.methods
    if config.lm and "incontext" not in asked:
        raise BurrowError(f"--lm {config.lm} is the LM of in-context retrieval: add --method incontext, or drop --lm")
    if not asked:
        return
    if memory is None:
        raise BurrowError("retrieval methods need a memory (--memory)")
    for method in dict.fromkeys(asked):
        wanted, what = APPLIES_TO[method]
        if modes is None or (method == "incontext" and config.lm):
            continue
        if not any(mode in wanted for mode in modes):
            raise BurrowError(f"--method {method} applies to {what} only, and none is given: drop it or add one")
        if warn and any(mode not in wanted for mode in modes):
            log.warning("--method %s applies to %s only: the other runs are scored without it", method, what)
    if "incontext" in asked:
        _check_incontext(config.incontext or InContextConfig(), memory)
    knn = config.knnlm
    if ("knnlm" in asked and knn.lam is None and data is not None and data.n_docs < 2
            and (modes is None or "baseline" in modes)):
        raise BurrowError(f"tuning kNN-LM λ and T by cross-fitting needs at least 2 documents, and {data.n_docs} "
                          "is scored: give more documents (--data, a larger --max-docs), or fix --knn-lambda and "
                          "--knn-temperature")


def _check_incontext(cfg: InContextConfig, memory: Any) -> None:
    """In-context retrieval's memory index and stride, refused before any LM loads."""
    from burrow.artefacts import read_manifest
    from burrow.memory.bm25 import BM25_DIR, bm25_inputs

    if cfg.retriever == "bm25":
        manifest = read_manifest(memory.dir / BM25_DIR, "bm25")
        if manifest is None:
            raise BurrowError(f"memory {memory.dir} has no BM25 index for --method incontext: build it with "
                              f"`burrow memory bm25 {memory.dir}`, or use --retriever dense")
        if manifest.get("inputs") != bm25_inputs(memory):  # else refused only after every model was scored
            raise BurrowError(f"memory {memory.dir} has no up-to-date BM25 index for --method incontext (its chunks "
                              f"changed since): rebuild it with `burrow memory bm25 {memory.dir}`, or use "
                              "--retriever dense")
    context = cfg.max_context or MAX_CONTEXT
    if context < cfg.stride + 2:
        raise BurrowError(f"--stride {cfg.stride} leaves no context: an LM reads at most {context} tokens per "
                          "forward, which must exceed the stride + 1")


def incontext_lms(models: Mapping[str, tuple[Any, str]], memory: Any, config: MethodsConfig) -> list[tuple[str, Any]]:
    """The LMs in-context retrieval reads with (each baseline, and ``config.lm`` loaded), their context checked
    against the stride: before any scoring."""
    if "incontext" not in config.methods:
        return []
    lms: list[tuple[str, Any]] = [(name, BurrowLM(model, memory.tokenizer, name=name))
                                  for name, (model, mode) in models.items() if mode == "baseline"]
    if config.lm:
        lms.append((config.lm, load_hf_lm(config.lm)))
    if not lms:
        raise BurrowError("in-context retrieval needs a baseline run or an HF LM (--lm smollm2)")
    cfg = config.incontext or InContextConfig()
    for name, lm in lms:
        context = min(lm.max_length, MAX_CONTEXT) if cfg.max_context is None else cfg.max_context
        if context < cfg.stride + 2:
            raise BurrowError(f"{name}: its context ({context} tokens) must exceed --stride ({cfg.stride}) + 1: "
                              "give a smaller --stride")
    return lms


def random_ids(ids: np.ndarray, n_chunks: int, seed: int = 0) -> np.ndarray:
    """Neighbour ids of the same shape and count as ``ids``, drawn uniformly from the memory's chunks."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, n_chunks, size=ids.shape)
    return np.where(ids >= 0, out, -1)


def add_methods(result: Any, scorer: Any, models: Mapping[str, tuple[Any, str]], memory: Any,
                input_ids: np.ndarray | None, config: MethodsConfig,
                lms: Sequence[tuple[str, Any]] | None = None) -> None:
    """Score each asked method and add it (and its base) to ``result`` (an ``EvalResult``); ``lms``: in-context
    retrieval's LMs (:func:`incontext_lms`; None: loaded here)."""
    if config.methods and memory is None:
        raise BurrowError("retrieval methods need a memory (--memory)")
    for name, (model, mode) in models.items():
        if mode == "off" and "random" in config.methods:
            if input_ids is None:
                raise BurrowError("the random-neighbour control needs RETRO[ON] neighbours")
            rnd = random_ids(input_ids, len(memory.chunks), config.random_seed)
            key = name.replace("[OFF]", "[random]")
            result.scores[key] = scorer(key, model, "on", rnd)
            result.scores[key].mode = "random"
            result.bases[key] = name
        if mode == "baseline" and "knnlm" in config.methods:  # one datastore per LM: the baselines' (the costly part)
            key = f"{name} +kNN-LM"
            score, info = score_knnlm(key, model, result.data, memory, result.seq_len, _knn_config(config, scorer),
                                      same_documents(result.data, memory), scorer.lm_passes.pop(name, None))
            result.scores[key] = score
            result.bases[key] = name
            result.methods[key] = {"method": "knnlm", **info}
    if "incontext" in config.methods:
        for name, lm in (incontext_lms(models, memory, config) if lms is None else lms):
            _score_incontext(result, name, lm, memory, config)
    for name, (_, mode) in models.items():  # RETRO[ON] is measured against its own [OFF]
        if mode == "on":
            off = name.replace("[ON]", "[OFF]")
            if off in result.scores:
                result.bases.setdefault(name, off)


def _knn_config(config: MethodsConfig, scorer: Any) -> KnnLMConfig:
    """The kNN-LM config on the evaluation's device and precision."""
    return dataclasses.replace(config.knnlm, device=scorer.config.device, precision=scorer.config.precision,
                               batch_tokens=scorer.config.batch_tokens)


def _score_incontext(result: Any, name: str, lm: Any, memory: Any, config: MethodsConfig) -> None:
    cfg = config.incontext or InContextConfig()
    base_key = f"{name} (in-context windows)"
    if base_key not in result.scores:
        result.scores[base_key] = score_incontext(base_key, lm, result.data, None, cfg)
    key = f"{name} +in-context {cfg.retriever}"
    result.scores[key] = score_incontext(key, lm, result.data, memory, cfg)
    if len(result.scores[key].doc_bits) != result.data.n_docs:
        raise BurrowError("in-context max_docs must not be set inside `burrow eval` (use --max-docs for all methods)")
    result.bases[key] = base_key
    result.methods[key] = {"method": "incontext", "retriever": cfg.retriever, "stride": cfg.stride,
                           "query_tokens": cfg.query_tokens}


def method_rows(result: Any) -> Sequence[tuple[str, str, str]]:
    """(method score, its base, method kind) for the methods table."""
    return [(name, base, result.methods.get(name, {}).get("method", result.scores[name].mode))
            for name, base in result.bases.items()]
