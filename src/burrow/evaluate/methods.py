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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from burrow.errors import BurrowError
from burrow.evaluate.incontext import BurrowLM, InContextConfig, load_hf_lm, score_incontext
from burrow.evaluate.knnlm import KnnLMConfig, same_documents, score_knnlm

log = logging.getLogger(__name__)

METHODS = ("retro", "random", "knnlm", "incontext")


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


def random_ids(ids: np.ndarray, n_chunks: int, seed: int = 0) -> np.ndarray:
    """Neighbour ids of the same shape and count as ``ids``, drawn uniformly from the memory's chunks."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, n_chunks, size=ids.shape)
    return np.where(ids >= 0, out, -1)


def add_methods(result: Any, scorer: Any, models: Mapping[str, tuple[Any, str]], memory: Any,
                input_ids: np.ndarray | None, config: MethodsConfig) -> None:
    """Score each asked method and add it (and its base) to ``result`` (an ``EvalResult``)."""
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
        _add_incontext(result, models, memory, config)
    for name, (_, mode) in models.items():  # RETRO[ON] is measured against its own [OFF]
        if mode == "on":
            off = name.replace("[ON]", "[OFF]")
            if off in result.scores:
                result.bases.setdefault(name, off)


def _knn_config(config: MethodsConfig, scorer: Any) -> KnnLMConfig:
    """The kNN-LM config on the evaluation's device and precision."""
    return dataclasses.replace(config.knnlm, device=scorer.config.device, precision=scorer.config.precision,
                               batch_tokens=scorer.config.batch_tokens)


def _add_incontext(result: Any, models: Mapping[str, tuple[Any, str]], memory: Any, config: MethodsConfig) -> None:
    """In-context retrieval for each baseline run (and the HF LM named by ``config.lm``)."""
    lms: list[tuple[str, Any]] = []
    for name, (model, mode) in models.items():
        if mode == "baseline":
            lms.append((name, BurrowLM(model, memory.tokenizer, name=name)))
    if config.lm:
        lms.append((config.lm, load_hf_lm(config.lm)))
    if not lms:
        raise BurrowError("in-context retrieval needs a baseline run or an HF LM (--lm smollm2)")
    for name, lm in lms:
        _score_incontext(result, name, lm, memory, config)


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
