"""The model-side work behind the HTTP API: generation, memory search and bits-per-byte scoring.

Kept apart from :mod:`burrow.serve.app` so the HTTP layer only validates, limits and streams. Every
method here is blocking (model or index work) and is called from a worker thread.
"""

from __future__ import annotations

import logging
from typing import Any

from burrow.data.layout import window_length
from burrow.errors import BurrowError
from burrow.evaluate.bpb import score_model
from burrow.evaluate.data import from_texts
from burrow.evaluate.retrieval import eval_neighbours, retrieved_from_ids, values_of
from burrow.generate import Generator
from burrow.memory import Memory
from burrow.model.protocol import RetrievalLM
from burrow.serve.config import ServeConfig

log = logging.getLogger(__name__)


class Service:
    """A loaded model and memory, with the three operations the API offers.

    ``model`` (a burrow run's model, or None) and ``generators`` (e.g. a pretrained LM reading the
    memory in context, :class:`~burrow.generate.incontext.InContextGenerator`, by method id) are the
    server's methods; a request picks one by id (``method``), the first is the default.
    """

    def __init__(self, model: RetrievalLM | None, memory: Memory, config: ServeConfig,
                 generators: dict[str, Any] | None = None) -> None:
        self.config = config
        self.memory = memory
        self.methods: dict[str, Any] = {}
        self.model = None
        if model is not None:
            run = Generator(model, memory, device=config.device, precision=config.precision)
            self.model = run.model
            self.methods[str(getattr(model.config, "name", "") or "run")] = run
        self.methods.update(generators or {})
        if not self.methods:
            raise BurrowError("nothing to serve: give a RUN, an --lm, or both")
        self.generator = next(iter(self.methods.values()))
        self._warm_up()

    def pick(self, method: str | None) -> Any:
        """The generator of method ``method`` (None: the default one)."""
        if method is None:
            return self.generator
        if method not in self.methods:
            raise BurrowError(f"unknown method {method!r}; this server has {', '.join(self.methods)}")
        return self.methods[method]

    def _warm_up(self) -> None:
        """Load the memory's lazily opened parts now, not concurrently inside the first requests."""
        _ = self.memory.tokenizer, self.memory.chunks, self.memory.store
        for gen in self.methods.values():
            gen.warm_up()

    def info(self) -> dict[str, Any]:
        """Model (the default method's), every method, memory and limits, for /health."""
        from burrow.generate.incontext import describe

        methods = []
        for key, gen in self.methods.items():
            if isinstance(gen, Generator):
                cfg = gen.model.config
                methods.append({"id": key, "label": f"{key} ({'RETRO' if cfg.retro else 'baseline'})",
                                "name": cfg.name, "retro": bool(cfg.retro), "max_seq_len": int(cfg.max_seq_len),
                                "chunk_size": int(cfg.chunk_size), "vocab_size": int(cfg.vocab_size),
                                "parameters": int(gen.n_parameters), "method": "retro"
                                if cfg.retro else "baseline"})
            else:
                d = describe(gen)
                how = f" reading the memory in context ({d['retriever']}, every {d['stride']} tokens)" if gen.retro \
                    else ""
                methods.append({"id": key, "label": f"{d['name']}{how}", **d})
        return {
            "model": {k: v for k, v in methods[0].items() if k not in ("id", "label")},
            "methods": methods,
            "memory": {"directory": self.memory.dir.name, "chunks": len(self.memory),
                       "chunk_size": int(self.memory.chunk_size)},
            "device": str(self.generator.device),
        }

    def search(self, query: str, k: int) -> list[dict[str, Any]]:
        """The ``k`` nearest memory chunks of ``query`` with text and provenance."""
        return self.memory.search([query], k=k).to_json()[0]

    def score(self, text: str, retrieval: bool, k: int) -> dict[str, Any]:
        """Bits-per-byte of ``text`` as one document (the evaluator's convention), RETRO[ON] when asked."""
        gen = next((g for g in self.methods.values() if isinstance(g, Generator)), None)
        if gen is None:
            raise BurrowError("/v1/score scores with a burrow run's model; this server has none (serve a RUN too)")
        m = int(self.memory.chunk_size)
        data = from_texts(["request"], [text], self.memory.tokenizer, m)
        mode = ("on" if retrieval else "off") if gen.retro else "baseline"
        retrieved = None
        if mode == "on":
            neighbours = eval_neighbours(self.memory, data, "input", k_max=k)
            retrieved = retrieved_from_ids(neighbours.ids, data, k, values_of(self.memory))
        n = max(2 * m, window_length(int(gen.model.config.max_seq_len), m))
        score = score_model("request", gen.model, mode, data, n, retrieved, gen.device, gen.dtype, k=k)
        return {"bpb": score.bpb, "bits": score.bits, "bytes": int(data.n_bytes), "tokens": int(data.n_tokens),
                "mode": mode, "k": k if mode == "on" else None}
