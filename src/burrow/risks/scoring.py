"""Log-probabilities of short texts under a model arm, through burrow's evaluation code (bits per document)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from burrow.data.layout import window_length
from burrow.device import autocast_dtype, pick_device
from burrow.evaluate.bpb import score_model
from burrow.evaluate.data import from_texts
from burrow.risks.context import Arm, Context

#: texts -> (len(texts),) total natural-log probability of each text (higher: more likely).
Scorer = Callable[[Sequence[str]], np.ndarray]


def text_logprobs(ctx: Context, arm: Arm, texts: Sequence[str]) -> np.ndarray:
    """(len(texts),) ln p(text) under ``arm`` without retrieval, each text read as a whole document.

    Uses :func:`burrow.evaluate.bpb.score_model` on :func:`burrow.evaluate.data.from_texts`, the
    code ``burrow eval`` scores with, so a sentence is predicted exactly as an evaluation document is.
    """
    memory = ctx.memory
    m = memory.chunk_size
    data = from_texts([str(i) for i in range(len(texts))], list(texts), memory.tokenizer, m)
    if data.n_docs != len(texts):
        raise ValueError("a text has no tokens")  # never for the sentence sets used here
    device = pick_device(ctx.config.device)
    n = window_length(int(arm.model.config.max_seq_len), m)
    arm.model.to(device)
    mode = "off" if arm.mode == "on" else arm.mode
    score = score_model(arm.label, arm.model, mode, data, n, None, device,
                        autocast_dtype(device, ctx.config.precision))
    return np.asarray(-score.doc_bits * math.log(2.0))


def scorer_for(ctx: Context, arm: Arm) -> Scorer:
    """A :data:`Scorer` bound to ``arm``."""
    return lambda texts: text_logprobs(ctx, arm, texts)
