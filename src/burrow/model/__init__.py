"""The models: a Gopher-style decoder-only baseline and RETRO (the same decoder + retrieval encoder +
chunked cross-attention), with a KV cache for generation and safetensors persistence.

    cfg = get_preset("retro-cpu-small", vocab_size=8192)   # from burrow.presets
    model = build_model(cfg)
    logits = model(tokens, neighbours=nb)                   # (b, n) [, (b, l, k, r)] -> (b, n, v)
"""

from typing import TYPE_CHECKING

from burrow.lazy import lazy_exports

if TYPE_CHECKING:
    from burrow.model.cache import ModelCache
    from burrow.model.config import ModelConfig
    from burrow.model.io import load_model, load_named_model, load_run, save_model
    from burrow.model.protocol import RetrievalLM
    from burrow.model.transformer import Transformer, build_model

__all__ = ["ModelCache", "ModelConfig", "RetrievalLM", "Transformer", "build_model", "load_model", "load_named_model",
           "load_run", "save_model"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "cache": ["ModelCache"],
    "config": ["ModelConfig"],
    "io": ["load_model", "load_named_model", "load_run", "save_model"],
    "protocol": ["RetrievalLM"],
    "transformer": ["Transformer", "build_model"],
})
