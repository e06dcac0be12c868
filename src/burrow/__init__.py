"""burrow: retrieval-enhanced language models (RETRO), Gopher-style baselines and evaluation.

The package mirrors the data flow: ``data`` (corpus → tokenizer → token store), ``memory``
(chunks → frozen-encoder keys → FAISS index → neighbours), ``model`` (baseline and RETRO),
``train``, ``evaluate``; ``cli`` is a thin layer over them.
"""

from burrow.errors import BurrowError

__version__ = "0.1.0"
__all__ = ["BurrowError", "__version__"]
