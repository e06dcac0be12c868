"""Open what ``burrow tasks run`` is given: a burrow run or model directory (with its memory), or a HF LM.

A burrow run reads text through its memory's tokenizer, so it needs ``--memory``; the memory must be
the one the model was trained with (the run records its tokenizer's fingerprint) and, for RETRO,
must have the model's chunk and retrieved lengths (:meth:`Memory.check_model`). Anything else names a
Hugging Face causal LM: ``smollm2``, a local folder, or a hub id (online only).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from burrow.defaults import DEFAULT_DEVICE, DEFAULT_K, DEFAULT_PRECISION
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.model.io import RETROFIT_FILE, load_named_model
from burrow.model.protocol import RetrievalLM
from burrow.tasks.backends import Backend, BurrowBackend, HFBackend
from burrow.tasks.config import LMConfig
from burrow.tasks.harness_lm import BurrowEvalLM

log = logging.getLogger(__name__)

MODEL_NAME = "burrow"  # the name in lm-eval's model registry (``lm_eval --model burrow``)
_BURROW_MARKERS = ("train.manifest.json", "model.manifest.json", "final", "checkpoints", RETROFIT_FILE)


def is_burrow_dir(source: str) -> bool:
    """True when ``source`` is a burrow run or model directory (not a Hugging Face folder or name)."""
    p = Path(source)
    return p.is_dir() and any((p / name).exists() for name in _BURROW_MARKERS)


def check_source(source: str) -> None:
    """One-line error unless ``source`` can name a model: a directory (burrow or Hugging Face) or a HF name."""
    p = Path(source)
    if p.is_file():
        hint = f" (here: {p.parent})" if _model_dir(p.parent) else ""
        raise BurrowError(f"{source} is a file; pass a model directory{hint}: a burrow run/model directory or a "
                          "Hugging Face model folder, or a Hugging Face name")
    if p.is_dir() and not _model_dir(p):
        raise BurrowError(f"{source} is neither a burrow run/model directory nor a Hugging Face model folder")


def _model_dir(path: Path) -> bool:
    return is_burrow_dir(str(path)) or (path / "config.json").exists()


def open_memory(path: str | Path) -> Memory:
    """The memory at ``path`` with its tokenizer read; a model or run directory given instead is one line saying so."""
    p = Path(path)
    if not (p / "memory.manifest.json").exists() and _model_dir(p):
        raise BurrowError(f"{path} is a model/run directory, not a memory; pass --memory the folder `burrow memory "
                          "build` wrote")
    memory = Memory(path)
    memory.tokenizer  # noqa: B018 - fail on a damaged memory before any scoring
    return memory


def run_tokenizer(path: Path) -> str | None:
    """The tokenizer fingerprint a burrow run was trained with (its ``config.json``), if recorded."""
    for d in (path, path.parent, path.parent.parent):
        cfg = d / "config.json"
        if cfg.exists():
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return None
            tok = data.get("data", {}).get("tokenizer") if isinstance(data.get("data"), dict) else None
            if tok:
                return str(tok)
    return None


def check_memory(label: str, path: Path, model: RetrievalLM, memory: Memory) -> None:
    """One-line error unless ``memory`` has the tokenizer ``model`` was trained on and fits its chunks."""
    trained = run_tokenizer(path)
    if trained is not None and trained != memory.tokenizer.fingerprint():
        raise BurrowError(f"{label}: the memory {memory.dir} has tokenizer {memory.tokenizer.fingerprint()}, but the "
                          f"model was trained with tokenizer {trained}; pass the memory the model was trained with")
    try:
        memory.check_vocab(model.config.vocab_size)
    except BurrowError as e:
        raise BurrowError(f"{label}: {e}") from None
    try:
        memory.check_model(model.config)
    except BurrowError as e:
        raise BurrowError(f"{label}: {e}; pass the memory the model was trained with") from None


@dataclass
class OpenModel:
    """A loaded model and how it is scored: its label and modes (baseline; or RETRO [OFF] and [ON])."""

    label: str
    source: str
    backend: Backend
    modes: tuple[str, ...]
    memory: Memory | None

    def mode_label(self, mode: str) -> str:
        """``retro[OFF]`` / ``retro[ON]`` for a RETRO model, else the label."""
        return f"{self.label}[{mode.upper()}]" if mode in ("on", "off") else self.label

    def lm(self, mode: str, config: LMConfig | None = None) -> BurrowEvalLM:
        """The lm-eval model scoring in ``mode``."""
        if mode not in self.modes:
            raise BurrowError(f"{self.label} scores as {', '.join(self.modes)}, not {mode!r}")
        return BurrowEvalLM(self.backend, mode, self.memory, config, name=self.mode_label(mode))


def open_model(source: str, memory: str | Path | Memory | None = None) -> OpenModel:
    """Load ``source`` (a burrow run/model directory, or a HF name) for task runs."""
    mem = open_memory(memory) if isinstance(memory, str | Path) else memory
    check_source(source)
    if not is_burrow_dir(source):
        from burrow.lm import load_hf_lm

        lm = load_hf_lm(source)
        label = Path(source).name if Path(source).is_dir() else source.removeprefix("hf:")
        return OpenModel(label, source, HFBackend(lm), ("baseline",), mem)
    if mem is None:
        raise BurrowError(f"{source} is a burrow model: pass --memory DIR (the memory it was trained with: it gives "
                          "the tokenizer, and RETRO[ON]'s neighbours)")
    label, model = load_named_model(source)
    check_memory(label, Path(source), model, mem)
    modes = ("off", "on") if model.config.retro else ("baseline",)
    return OpenModel(label, source, BurrowBackend(model, mem.tokenizer), modes, mem)


def load_lm(run: str, memory: str | Path | None = None, mode: str | None = None,
            config: LMConfig | None = None) -> BurrowEvalLM:
    """burrow's lm-eval model for ``run`` (a run/model directory with its memory, or a HF name) in ``mode``
    (default: RETRO[ON] for a RETRO model with a memory, else its only mode)."""
    loaded = open_model(run, memory)
    return loaded.lm(mode or loaded.modes[-1], config)


class RegisteredLM(BurrowEvalLM):
    """:class:`BurrowEvalLM` as lm-eval's CLI builds it, from ``--model_args``."""

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> BurrowEvalLM:
        """``run=DIR_OR_NAME,memory=DIR,mode=on|off|baseline,k=2,precision=fp32,device=cpu,…``."""
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> BurrowEvalLM:
        """From parsed ``--model_args``; ``additional_config`` (lm-eval's batch size and device) is ignored:
        burrow batches by tokens, and lm-eval's --device defaults to cuda even where there is none."""
        args = dict(arg_dict)
        if "run" not in args:
            raise BurrowError("--model_args needs run=RUN_DIR_OR_HF_NAME (and memory=DIR for burrow runs)")
        config = LMConfig(k=int(args.get("k", DEFAULT_K)), device=str(args.get("device", DEFAULT_DEVICE)),
                          precision=str(args.get("precision", DEFAULT_PRECISION)),
                          batch_tokens=int(args.get("batch_tokens", LMConfig.batch_tokens)),
                          max_length=int(args["max_length"]) if "max_length" in args else LMConfig.max_length)
        mem = args.get("memory")
        return load_lm(str(args["run"]), str(mem) if mem else None, args.get("mode"), config)


def register() -> None:
    """Put ``burrow`` in lm-eval's model registry (``simple_evaluate(model="burrow", model_args=…)``)."""
    import lm_eval.models  # noqa: F401 - lm-eval's own models first (it fills an empty registry only)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME)(RegisteredLM)
