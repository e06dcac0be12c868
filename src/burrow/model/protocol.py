"""What the stages need from a model: :class:`RetrievalLM`, a language model that takes tokens and neighbours.

burrow's own :class:`~burrow.model.Transformer` (baseline or RETRO) and the Hugging Face wrappers
(:class:`~burrow.model.hf.HFRetro`, :class:`~burrow.model.hf.HFBaseline`) all satisfy it, so train,
evaluate, generate and serve are typed against this protocol, never against ``Any``.

Shape legend: b batch, n tokens, l chunks, k neighbours, r retrieved tokens, v vocabulary.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from burrow.model.cache import ModelCache
from burrow.model.config import ModelConfig


@runtime_checkable
class RetrievalLM(Protocol):
    """A causal LM over chunks: ``model(tokens (b, n), neighbours (b, l, k, r), mask (b, l, k)) -> (b, n, v)``."""

    config: ModelConfig  # its shape; ``config.retro`` says whether neighbours are read

    def __call__(self, tokens: Tensor, neighbours: Tensor | None = None, neighbour_mask: Tensor | None = None,
                 cache: ModelCache | None = None) -> Tensor: ...

    def new_cache(self, batch_size: int, max_len: int | None = None) -> ModelCache: ...

    def num_parameters(self, non_embedding: bool = True) -> int: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...


def on_device(model: RetrievalLM, device: torch.device | str) -> RetrievalLM:
    """``model`` moved to ``device`` (``nn.Module.to`` returns the module, typed as the protocol)."""
    moved: RetrievalLM = model.to(device)
    return moved
