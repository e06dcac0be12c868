"""The retrieval memory: chunks → frozen-encoder keys → FAISS index → neighbours (a directory on disk)."""

from typing import TYPE_CHECKING

from burrow.defaults import DEFAULT_K, K_MAX
from burrow.lazy import lazy_exports

if TYPE_CHECKING:
    from burrow.memory.memory import Memory, SearchResult

__all__ = ["DEFAULT_K", "K_MAX", "Memory", "SearchResult"]

__getattr__, __dir__ = lazy_exports(__name__, {"memory": ["Memory", "SearchResult"]})
