"""Generation with attribution, and chat: a KV-cached decoder that retrieves at every chunk boundary.

    from burrow.generate import GenerationConfig, Generator
    gen = Generator(model, Memory("mem"))
    for event in gen.stream("The volcano", GenerationConfig(max_new_tokens=64, top_p=0.9, seed=0)):
        ...  # TokenEvent (text delta), AttributionEvent (per chunk), DoneEvent (the result)
    result = gen.generate("The volcano", GenerationConfig(greedy=True))
    result.to_json()                                  # text, tokens, per-chunk attributions

Attribution of a generated chunk: the neighbours it attended to, and the longest span it copied
from them (docs/serving.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports

if TYPE_CHECKING:
    from burrow.generate.attribution import ChunkAttribution, CopiedSpan, NeighbourInfo, longest_run
    from burrow.generate.chat import ChatSession
    from burrow.generate.config import PREAMBLE, ChatConfig, GenerationConfig
    from burrow.generate.generator import (
        AttributionEvent,
        DoneEvent,
        Event,
        GenerationResult,
        Generator,
        TokenEvent,
    )
    from burrow.model.protocol import RetrievalLM


def load_generation_model(path: str | Path) -> RetrievalLM:
    """A model from a training run directory (``final/`` or its newest checkpoint) or a model directory."""
    from burrow.model.io import load_named_model

    return load_named_model(path)[1]


__all__ = [
    "PREAMBLE", "AttributionEvent", "ChatConfig", "ChatSession", "ChunkAttribution", "CopiedSpan", "DoneEvent",
    "Event", "GenerationConfig", "GenerationResult", "Generator", "NeighbourInfo", "TokenEvent",
    "load_generation_model", "longest_run",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "attribution": ["ChunkAttribution", "CopiedSpan", "NeighbourInfo", "longest_run"],
    "chat": ["ChatSession"],
    "config": ["PREAMBLE", "ChatConfig", "GenerationConfig"],
    "generator": ["AttributionEvent", "DoneEvent", "Event", "GenerationResult", "Generator", "TokenEvent"],
})
