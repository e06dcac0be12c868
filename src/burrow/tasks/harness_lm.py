"""burrow's model for lm-evaluation-harness: an lm-eval ``LM`` over a burrow run or a Hugging Face LM.

    lm = load_lm("runs/retro", memory="memory", mode="on")   # or "smollm2" (burrow.tasks.models)
    lm_eval.simple_evaluate(model=lm, tasks=["burrow_arc_easy"], task_manager=TaskManager(include_path=...))

``loglikelihood`` and ``loglikelihood_rolling`` score rows batched by length (:mod:`burrow.tasks.rows`);
``generate_until`` decodes greedily with a KV cache (burrow models through
:class:`burrow.generate.Generator`, retrieving at every chunk boundary for RETRO[ON]). Every result
goes to lm-eval's cache hook, so ``use_cache`` resumes an interrupted run request by request.
Opened from a run directory or a HF name by :func:`burrow.tasks.models.load_lm`; registered as ``burrow``
in lm-eval's model registry by :func:`burrow.tasks.models.register`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from burrow.data.layout import window_length
from burrow.device import autocast_dtype, pick_device
from burrow.errors import BurrowError
from burrow.evaluate.bpb import window_plan
from burrow.generate import GenerationConfig, Generator
from burrow.memory import Memory
from burrow.tasks.backends import Backend, BurrowBackend, HFBackend
from burrow.tasks.config import LMConfig
from burrow.tasks.rows import ChunkNeighbours, Row, layout_row, plain_row, score_rows

log = logging.getLogger(__name__)


class BurrowEvalLM(TemplateLM):
    """An lm-eval model: a burrow model (baseline, RETRO[OFF], RETRO[ON]) or a Hugging Face causal LM."""

    def __init__(self, backend: Backend, mode: str = "baseline", memory: Memory | None = None,
                 config: LMConfig | None = None, name: str = "burrow") -> None:
        super().__init__()
        self.backend, self.mode, self.memory, self.name = backend, mode, memory, name
        self.config = config or LMConfig()
        if mode == "on" and memory is None:
            raise BurrowError(f"{name}: RETRO[ON] needs a memory (--memory)")
        self._device = pick_device(self.config.device)
        self.dtype = autocast_dtype(self._device, self.config.precision)
        backend.to(self._device)
        if self.config.max_length is not None:
            backend.max_length = min(backend.max_length, self.config.max_length)
        self.neighbours = ChunkNeighbours(memory, self.config.k) if mode == "on" and memory is not None else None
        self._generator: Generator | None = None

    # --- what lm-eval asks of a model -------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.backend.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.backend.start_id

    @property
    def max_length(self) -> int:
        return self.backend.max_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.backend.encode(string, add_special_tokens)

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        rows = [self._pair_row(ctx_text, ctx, cont) for (ctx_text, _), ctx, cont in requests]
        results = self._score(rows)
        for (pair, _, _), res in zip(requests, results, strict=True):
            if pair is not None:
                self.cache_hook.add_partial("loglikelihood", pair, res)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        per_request = [self._rolling_rows(self.tok_encode(req.args[0])) for req in requests]
        flat = [row for rows in per_request for row in rows]
        scores = self._score(flat)
        out, at = [], 0
        for req, rows in zip(requests, per_request, strict=True):
            total = sum(s for s, _ in scores[at : at + len(rows)])
            at += len(rows)
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in tqdm(requests, desc=f"{self.name}: generating", disable=disable_tqdm):
            context, gen_kwargs = req.args
            text = self._generate(context, dict(gen_kwargs))
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    # --- rows -------------------------------------------------------------------------------------------

    def _pair_row(self, context_text: str, context: list[int], continuation: list[int]) -> Row:
        b = self.backend
        if not isinstance(b, BurrowBackend):
            return plain_row(context, continuation, b.max_length)
        if context_text == "" and context == [b.start_id]:
            context = []  # the document layout already starts with s
        doc = context + continuation
        return layout_row(b.head(), doc, len(continuation), b.max_length, b.chunk_size)

    def _rolling_rows(self, tokens: list[int]) -> list[Row]:
        """The windows of one document, each target token scored once (burrow: ``burrow eval``'s windows)."""
        b = self.backend
        if not tokens:
            return []
        if not isinstance(b, BurrowBackend):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

            windows = map(make_disjoint_window, get_rolling_token_windows(
                token_list=tokens, prefix_token=b.start_id, max_seq_len=b.max_length, context_len=1))
            return [plain_row(ctx, pred, b.max_length) for ctx, pred in windows]
        m = b.chunk_size
        x = b.head() + tokens[:-1]
        y = [0] * (m - 1) + tokens
        n = window_length(b.max_length, m)
        rows = []
        for w in window_plan(len(x), n):
            lo = max(w.score_from, m - 1)  # positions before m − 1 have no target
            if lo < w.end:
                rows.append(Row(x[w.start : w.end], y[w.start : w.end], lo - w.start, w.start == 0))
        return rows

    def _score(self, rows: list[Row]) -> list[tuple[float, bool]]:
        return score_rows(self.backend, rows, self.neighbours, self._device, self.dtype, self.config.batch_tokens)

    # --- generation -------------------------------------------------------------------------------------

    def _generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        until = gen_kwargs.get("until") or []
        stops = tuple(s for s in ([until] if isinstance(until, str) else until) if s)
        max_new = int(gen_kwargs.get("max_gen_toks", 256))
        b = self.backend
        if isinstance(b, BurrowBackend):
            return self._generate_burrow(b, context, stops, max_new)
        return self._generate_hf(b, context, stops, max_new)

    def _generate_burrow(self, b: BurrowBackend, context: str, stops: tuple[str, ...], max_new: int) -> str:
        if self.memory is None:
            raise BurrowError(f"{self.name}: generating with a burrow model needs its memory (--memory)")
        if self._generator is None:
            self._generator = Generator(b.model, self.memory, device=str(self._device),
                                        precision=self.config.precision)
        ids = b.encode(context)
        room = b.max_length - b.chunk_size - 1
        max_new = max(1, min(max_new, room // 2))
        if len(ids) > room - max_new:  # keep the end of a long prompt (the question)
            context = b.decode(ids[-(room - max_new):])
        cfg = GenerationConfig(max_new_tokens=max_new, greedy=True, retrieval=self.mode == "on", k=self.config.k,
                               stop=stops)
        return self._generator.generate(context, cfg).text

    @torch.inference_mode()
    def _generate_hf(self, b: HFBackend, context: str, stops: tuple[str, ...], max_new: int) -> str:
        ids = b.encode(context)[-(b.max_length - max_new):] or [b.start_id]
        cache = b.lm.new_cache()
        logits = b.lm.step(ids, cache, self.dtype)
        out: list[int] = []
        text = ""
        for _ in range(max_new):
            nxt = int(logits.argmax())
            if nxt == b.eos_id:
                break
            out.append(nxt)
            text = b.decode(out)
            if any(s in text for s in stops):
                break
            logits = b.lm.step([nxt], cache, self.dtype)
        cut = min((text.find(s) for s in stops if s in text), default=len(text))
        return text[:cut]
