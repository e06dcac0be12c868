"""The server's limits and runtime, readable without importing torch (the CLI's options come from here)."""

from __future__ import annotations

from dataclasses import dataclass

from burrow.defaults import DEFAULT_DEVICE, DEFAULT_PRECISION, K_MAX
from burrow.errors import BurrowError


@dataclass
class ServeConfig:
    """Limits and runtime of the server; every limit is answered with a clear 4xx."""

    # Longest prompt in characters (413 above); the model's max_seq_len also bounds it in tokens.
    max_prompt_chars: int = 4000
    # Largest max_tokens a request may ask for (422 above).
    max_new_tokens: int = 256
    # Requests (generate, search, score) running at once; one more is answered 429.
    max_concurrent: int = 8
    # Largest k (neighbours) a request may ask for.
    max_k: int = K_MAX
    # Longest text /v1/score accepts, in characters (413 above).
    max_score_chars: int = 20000
    # Device: auto | cpu | cuda.
    device: str = DEFAULT_DEVICE
    # Autocast: auto | bf16 | fp32.
    precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        for name in ("max_prompt_chars", "max_new_tokens", "max_concurrent", "max_k", "max_score_chars"):
            if int(getattr(self, name)) < 1:
                raise BurrowError(f"serve config {name} must be ≥ 1, got {getattr(self, name)}")
