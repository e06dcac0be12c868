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

from pathlib import Path

from burrow.generate.attribution import ChunkAttribution, CopiedSpan, NeighbourInfo, longest_run
from burrow.generate.chat import PREAMBLE, ChatConfig, ChatSession
from burrow.generate.config import GenerationConfig
from burrow.generate.generator import (
    AttributionEvent,
    DoneEvent,
    Event,
    GenerationResult,
    Generator,
    TokenEvent,
)
from burrow.model.io import load_named_model
from burrow.model.protocol import RetrievalLM


def load_generation_model(path: str | Path) -> RetrievalLM:
    """A model from a training run directory (``final/`` or its newest checkpoint) or a model directory."""
    return load_named_model(path)[1]


__all__ = [
    "PREAMBLE", "AttributionEvent", "ChatConfig", "ChatSession", "ChunkAttribution", "CopiedSpan", "DoneEvent",
    "Event", "GenerationConfig", "GenerationResult", "Generator", "NeighbourInfo", "TokenEvent",
    "load_generation_model", "longest_run",
]
