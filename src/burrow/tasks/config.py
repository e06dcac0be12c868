"""The configs of a task run: :class:`LMConfig` (burrow's lm-eval model) and :class:`TasksConfig` (the run).

Kept apart from the modules that import lm-eval, so the CLI reads their defaults without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from burrow.defaults import DEFAULT_DEVICE, DEFAULT_K, DEFAULT_PRECISION, K_MAX
from burrow.errors import BurrowError


@dataclass
class LMConfig:
    """How burrow's lm-eval model runs: neighbours, device, precision, batch size."""

    k: int = DEFAULT_K  # neighbours per chunk for RETRO[ON]
    device: str = DEFAULT_DEVICE  # auto | cpu | cuda
    precision: str = DEFAULT_PRECISION  # autocast: auto (bf16 where fast) | bf16 | fp16 | fp32
    batch_tokens: int = 4096  # padded tokens per forward batch (rows of similar length are stacked)
    max_length: int | None = 2048  # longest input fed (the model's own limit when smaller; None: the model's)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= K_MAX:
            raise BurrowError(f"k must be in [1, {K_MAX}], got {self.k}")
        if self.max_length is not None and self.max_length < 2:
            raise BurrowError(f"max_length must be ≥ 2, got {self.max_length}")
        if self.batch_tokens < 1:
            raise BurrowError(f"batch_tokens must be ≥ 1, got {self.batch_tokens}")


@dataclass
class TasksConfig:
    """How a task run goes: the model settings, how many documents, open-book passages, caching."""

    lm: LMConfig = field(default_factory=LMConfig)  # neighbours, device, precision, batch size, max length
    limit: int | None = None  # score only the first N documents of each task (MMLU: of each subject)
    passages: int = 2  # memory passages per open-book question
    lm_cache: bool = True  # lm-eval's request cache under out/lm_cache (request-level resume)
    bootstrap_iters: int = 100  # lm-eval's bootstrap resamples for the stderr of non-mean metrics
    progress: bool = True  # a progress bar over (model, task)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise BurrowError(f"limit must be ≥ 1, got {self.limit}")
        if self.passages < 1:
            raise BurrowError(f"passages must be ≥ 1, got {self.passages}")
