"""The retrieval memory: chunks → frozen-encoder keys → FAISS index → neighbours (a directory on disk)."""

from burrow.memory.memory import Memory, SearchResult
from burrow.memory.neighbours import DEFAULT_K, K_MAX

__all__ = ["DEFAULT_K", "K_MAX", "Memory", "SearchResult"]
