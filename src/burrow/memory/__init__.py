"""The retrieval memory: chunks → frozen-encoder keys → FAISS index → neighbours (a directory on disk)."""

from burrow.memory.memory import Memory, SearchResult

__all__ = ["Memory", "SearchResult"]
