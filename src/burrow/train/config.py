"""The training config (one typed dataclass) and how a model spec (preset name or TOML) becomes a ModelConfig.

A run config can also come from TOML (``[train]`` table or top-level keys); explicit overrides win.
A model TOML holds :class:`~burrow.model.ModelConfig` fields (top-level or under ``[model]``), with an
optional ``preset = "name"`` to start from. Sizes that the data decides (vocabulary, chunk length,
retrieved length, sequence length) are filled in from the data and may only be written if they agree.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from burrow.artefacts import check_out_not
from burrow.data.layout import retrieved_length
from burrow.defaults import DEFAULT_DEVICE, DEFAULT_K, DEFAULT_PRECISION
from burrow.errors import BurrowError
from burrow.fieldtypes import check_field_types, check_seed
from burrow.model import ModelConfig
from burrow.presets import get_preset

PRECISIONS = ("auto", "bf16", "fp16", "fp32")

# Fields that may change between a run and its resumption without changing the trained weights
# (where it runs, how it reports, when it validates and checkpoints).
# Data paths are compared by the content fingerprints in config.json instead, so a moved memory is fine.
RESUMABLE_FIELDS = frozenset({"device", "compile", "progress", "force", "keep_checkpoints", "checkpoint_every",
                              "eval_every", "out", "memory", "tokens", "valid_tokens", "parallel"})


@dataclass
class TrainConfig:
    """Everything that defines one training run (the model's shape lives in its own ModelConfig)."""

    # Model: a preset name (``retro-cpu-small``) or a model TOML file.
    model: str
    # Run directory: config.json, metrics.jsonl, checkpoints/, final/.
    out: Path
    # Memory directory; needed for RETRO (neighbours), optional for the baseline (its token store).
    memory: Path | None = None
    # Token store to train on; default: the memory's own store.
    tokens: Path | None = None
    # Token store for validation; default: the last ``valid_fraction`` of the training sequences.
    valid_tokens: Path | None = None
    # Optimizer steps.
    steps: int = 1000
    # Sequences per optimizer step (split into ``grad_accum`` micro-batches).
    batch_size: int = 8
    # Tokens per sequence n; a multiple of the chunk length m.
    seq_len: int = 512
    # Peak learning rate (Gopher 44M/117M use 6e-4; RETRO uses 2e-4, 1e-4 at 7.5B): for burrow's small presets.
    lr: float = 6e-4
    # Linear warm-up steps; None: min(750, steps // 10) (the paper warms up for 750 steps).
    warmup: int | None = None
    # The cosine decays to this fraction of the peak at the last step (the paper's 0.1).
    min_lr_ratio: float = 0.1
    # AdamW decoupled weight decay, not applied to norms, biases and embeddings (the paper's 0.1).
    weight_decay: float = 0.1
    # AdamW first-moment decay.
    beta1: float = 0.9
    # AdamW second-moment decay (0.95, as in Gopher-family training).
    beta2: float = 0.95
    # AdamW epsilon.
    eps: float = 1e-8
    # Neighbours per chunk given to RETRO during training (the paper's k = 2).
    k: int = DEFAULT_K
    # Micro-batches per optimizer step; must divide batch_size. Does not change the maths.
    grad_accum: int = 1
    # Global gradient-norm clip (1.0 as in Gopher); 0 disables clipping.
    clip: float = 1.0
    # Validation loss every this many steps (and at the end); 0: only at the end.
    eval_every: int = 100
    # At most this many validation sequences are scored each time (a fixed, deterministic set).
    valid_sequences: int = 64
    # Fraction of the training sequences held out (from the end) when no valid_tokens is given.
    valid_fraction: float = 0.01
    # Checkpoint every this many steps (and at the end); None: same as eval_every.
    checkpoint_every: int | None = None
    # Checkpoints kept on disk (the newest ones).
    keep_checkpoints: int = 2
    # Seed of the initialisation, dropout and the data order.
    seed: int = 0
    # ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``.
    device: str = DEFAULT_DEVICE
    # Autocast: ``auto`` (bf16 on CUDA or a bf16 CPU), ``bf16``, ``fp16``, ``fp32`` (none).
    precision: str = DEFAULT_PRECISION
    # Under torchrun: ``ddp`` (a full replica per process) or ``fsdp`` (FSDP2 ``fully_shard``: parameters,
    # gradients and optimizer state sharded, for models that do not fit one device). Ignored in one process.
    parallel: str = "ddp"
    # torch.compile the model for training steps; the first step pays the compilation (cached on
    # disk for the next run, burrow.model.compile). Faster on GPUs; not on the 2-core CPU (docs/speed.md).
    compile: bool = False
    # Show a progress bar (loss, tokens/s, ETA).
    progress: bool = True
    # Discard an existing run directory's checkpoints and results and start again.
    force: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("memory", "tokens", "valid_tokens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if self.memory is None and self.tokens is None:
            raise BurrowError("training needs data: give --memory DIR or --tokens STORE")
        self._check_ranges()
        if self.warmup is None:
            self.warmup = min(750, self.steps // 10)
        if self.warmup > self.steps:
            raise BurrowError(f"warmup ({self.warmup}) must not exceed steps ({self.steps})")
        if self.checkpoint_every is None:
            self.checkpoint_every = self.eval_every

    def _check_ranges(self) -> None:
        check_field_types(self, "training setting")
        positive = ("steps", "batch_size", "seq_len", "k", "grad_accum", "keep_checkpoints", "valid_sequences")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise BurrowError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise BurrowError(f"grad-accum ({self.grad_accum}) must divide batch-size ({self.batch_size})")
        if self.parallel not in ("ddp", "fsdp"):
            raise BurrowError(f"parallel must be ddp or fsdp, not {self.parallel!r}")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise BurrowError(f"lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.clip < 0 or self.eps <= 0:
            raise BurrowError("weight_decay and clip must be >= 0 and eps > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise BurrowError(f"AdamW betas must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if (self.warmup is not None and self.warmup < 0) or self.eval_every < 0:
            raise BurrowError("warmup and eval-every must be >= 0")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise BurrowError("checkpoint-every must be >= 0")
        if not 0 < self.valid_fraction < 0.5:
            raise BurrowError(f"valid_fraction must be in (0, 0.5), got {self.valid_fraction}")
        if self.precision not in PRECISIONS:
            raise BurrowError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        check_seed(self.seed)

    @property
    def micro_batch(self) -> int:
        """Sequences per forward pass."""
        return self.batch_size // self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from a TOML file (``[train]`` table or top-level keys); ``overrides`` win."""
        data = _read_toml(path)
        section = data["train"] if "train" in data else {k: v for k, v in data.items() if not isinstance(v, dict)}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise BurrowError(f"{path}: unknown training settings {unknown}")
        fields = dict(section)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        if "model" not in fields or "out" not in fields:
            raise BurrowError(f"{path}: a run config needs `model` and `out` (or give --model and -o)")
        return cls(**fields)


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise BurrowError(f"{path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise BurrowError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise BurrowError(f"{path} is not valid TOML: not UTF-8 text") from None
    except IsADirectoryError:
        raise BurrowError(f"{path} is a folder, not a TOML file") from None


def check_run_out(root: Path) -> None:
    """-o is a run directory or a new folder: a run written into a saved model's folder (a run's ``final/``, a
    checkpoint, a Hugging Face folder) or a memory replaced its ``config.json`` and left it unusable."""
    check_out_not(root, (("a saved model", ("model.manifest.json", "model.safetensors", "pytorch_model.bin")),
                         ("a memory", ("memory.manifest.json",))), "a run's config.json, checkpoints/ and final/")


def read_model_spec(spec: str) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig that ``spec`` (a preset name or a model TOML) names, and the fields a TOML sets itself."""
    if spec.endswith(".toml") or Path(spec).is_file():
        data = _read_toml(spec)
        section = dict(data.get("model", data))
        preset = section.pop("preset", None) or data.get("preset")
        return (get_preset(preset, **section) if preset else ModelConfig.from_dict(section)), section
    return get_preset(spec), {}


def resolve_model_config(spec: str, vocab_size: int, chunk_size: int | None, seq_len: int,
                         pad_id: int | None = None) -> ModelConfig:
    """The ModelConfig for ``spec`` (a preset name or a model TOML), sized for this data.

    ``vocab_size`` comes from the token store, ``chunk_size`` m from the memory (None: the model's
    own, when there is no memory), ``retrieved_len`` is 2m and ``max_seq_len`` at least ``seq_len``. A TOML that
    sets one of these to a value the data contradicts is an error, never silently changed. A RETRO
    model masks the store's ``pad_id`` in its neighbours (unless the TOML sets ``pad_id`` itself).
    """
    cfg, explicit = read_model_spec(spec)
    chunk_size = cfg.chunk_size if chunk_size is None else chunk_size
    wanted = {"vocab_size": vocab_size, "chunk_size": chunk_size, "retrieved_len": retrieved_length(chunk_size)}
    for name, value in wanted.items():
        given = explicit.get(name)
        if given is not None and (given < value if name == "vocab_size" else given != value):
            raise BurrowError(f"{spec}: {name} = {given} but the data needs {value}")
    updates: dict[str, Any] = {name: explicit.get(name, value) for name, value in wanted.items()}
    if cfg.max_seq_len < seq_len or "max_seq_len" not in explicit:
        if "max_seq_len" in explicit:
            raise BurrowError(f"{spec}: max_seq_len = {cfg.max_seq_len} is shorter than seq-len {seq_len}")
        updates["max_seq_len"] = seq_len
    if cfg.retro and "pad_id" not in explicit:
        updates["pad_id"] = pad_id
    return dataclasses.replace(cfg, **updates)


#: Where RETRO-fitting trains differently from :class:`TrainConfig`'s defaults: a short run (the paper
#: retro-fits for ~3% of pre-training) of fresh modules at a higher peak rate, validated more often.
RETROFIT_TRAINING: dict[str, Any] = {"steps": 200, "lr": 1e-3, "eval_every": 50}
