"""How to evaluate and how the kNN-LM runs, as configs that import nothing heavy (``burrow eval --help``
reads their defaults without torch or FAISS)."""

from __future__ import annotations

from dataclasses import dataclass

from burrow.data.documents import CorpusConfig
from burrow.defaults import DEFAULT_DEVICE, DEFAULT_K, DEFAULT_PRECISION, K_MAX
from burrow.errors import BurrowError
from burrow.evaluate.leakage import DEFAULT_ALPHAS

#: k values of the neighbours sweep, and memory fractions of the size sweep, when asked for without values.
DEFAULT_SWEEP_K = (1, 2, 4, K_MAX)
DEFAULT_SWEEP_MEMORY = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


@dataclass
class EvalConfig:
    """How to evaluate: windows, neighbours, precision, and which analyses to run."""

    seq_len: int | None = None  # n; None: the shortest max_seq_len of the models, down to a multiple of 2m
    k: int = DEFAULT_K  # neighbours per chunk for RETRO[ON] (the paper trains with 2)
    k_max: int = K_MAX  # neighbours retrieved once and cached; leakage uses them all (§2.6: 10), k ≤ k_max
    batch_tokens: int = 8192  # tokens per forward batch (windows of equal length are stacked)
    device: str = DEFAULT_DEVICE  # auto | cpu | cuda
    precision: str = DEFAULT_PRECISION  # autocast: auto (bf16 where fast, else fp16 on CUDA) | bf16 | fp16 | fp32
    leakage: bool = False  # r(C) and bpb(α) (needs a memory)
    alphas: tuple[float, ...] = DEFAULT_ALPHAS  # α grid of bpb(α)
    sweep_k: tuple[int, ...] = ()  # k values for the neighbours sweep, e.g. (1, 2, 4, 10)
    sweep_memory: tuple[float, ...] = ()  # memory fractions for the size sweep, e.g. (1/16, …, 1)
    memory_seed: int = 0  # seed of the document subset of the memory-size sweep
    sweep_k_docs: int | None = None  # the k sweep scores only the first N documents (None: all), its every k
    max_docs: int | None = None  # score only the first N documents (quick runs)
    text_field: str = "text"  # JSONL / Parquet field holding the text of --data files ("a,b" tries a then b)
    txt_split: str = "auto"  # how .txt --data files split into documents: auto | file | blank-line | wikitext | line
    bootstrap_samples: int = 2000  # resamples of documents for gain intervals

    def __post_init__(self) -> None:
        self.alphas, self.sweep_k = tuple(self.alphas), tuple(self.sweep_k)
        self.sweep_memory = tuple(self.sweep_memory)
        if not 1 <= self.k <= self.k_max:
            raise BurrowError(f"k must be in [1, k_max={self.k_max}], got {self.k}")
        if any(not 1 <= k <= self.k_max for k in self.sweep_k):
            raise BurrowError(f"sweep k values must be in [1, {self.k_max}], got {list(self.sweep_k)}")
        if any(not 0 < f <= 1 for f in self.sweep_memory):
            raise BurrowError(f"memory fractions must be in (0, 1], got {list(self.sweep_memory)}")
        if any(not 0 <= a <= 1 for a in self.alphas) or not self.alphas:
            raise BurrowError("alphas must be a non-empty grid inside [0, 1]")
        if self.seq_len is not None and self.seq_len < 2:
            raise BurrowError(f"seq_len must be ≥ 2, got {self.seq_len}")
        CorpusConfig(text_field=self.text_field, txt_split=self.txt_split)  # type: ignore[arg-type]  # checks it
        if self.batch_tokens < 1:
            raise BurrowError(f"batch_tokens must be ≥ 1, got {self.batch_tokens}")
        if self.bootstrap_samples < 1:
            raise BurrowError(f"bootstrap_samples must be ≥ 1, got {self.bootstrap_samples}")
        if self.max_docs is not None and self.max_docs < 1:
            raise BurrowError(f"max_docs must be ≥ 1, got {self.max_docs}")
        if self.sweep_k_docs is not None and self.sweep_k_docs < 1:
            raise BurrowError(f"sweep_k_docs must be ≥ 1, got {self.sweep_k_docs}")


@dataclass
class KnnLMConfig:
    """How the kNN-LM datastore is built and searched, and how λ and T are chosen."""

    k: int = 32  # neighbours per query (the paper uses 1024; far fewer work at our sizes)
    flat_below: int = 300_000  # exact search below this many entries, IVF (fp16 lists) above
    nlist: int | None = None  # IVF lists; None: about 4·sqrt(N), at most 4096
    nprobe: int = 16  # IVF lists visited per query
    train_sample: int = 200_000  # keys the IVF quantizer is trained on
    lam: float | None = None  # fixed λ (with ``temperature``): no tuning
    temperature: float | None = None  # fixed T
    lambdas: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)  # λ grid for tuning
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)  # T grid for tuning
    batch_tokens: int = 8192  # tokens per forward batch
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # autocast: auto (bf16 where fast) | bf16 | fp32
    progress: bool = True  # progress bars while building the datastore

    def __post_init__(self) -> None:
        self.lambdas, self.temperatures = tuple(self.lambdas), tuple(self.temperatures)
        if self.k < 1 or self.nprobe < 1:
            raise BurrowError("kNN-LM k and nprobe must be ≥ 1")
        if (self.lam is None) != (self.temperature is None):
            raise BurrowError("give both λ and T (fixed), or neither (tuned by cross-fitting)")
        if self.lam is not None and not 0.0 <= self.lam < 1.0:  # λ = 1: a token no neighbour holds gets p = 0
            raise BurrowError(f"λ must be in [0, 1) (at 1 a token no neighbour holds has probability 0: infinite "
                              f"bits), got {self.lam}")
        if self.temperature is not None and self.temperature <= 0:
            raise BurrowError(f"T must be > 0, got {self.temperature}")
        if any(not 0 <= x < 1 for x in self.lambdas) or any(t <= 0 for t in self.temperatures):
            raise BurrowError("λ grid must lie in [0, 1) and T grid must be > 0")
