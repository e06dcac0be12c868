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

from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.model.io import RETROFIT_FILE, load_named_model
from burrow.model.protocol import RetrievalLM
from burrow.tasks.backends import Backend, BurrowBackend, HFBackend
from burrow.tasks.harness_lm import BurrowEvalLM, LMConfig

log = logging.getLogger(__name__)

_BURROW_MARKERS = ("train.manifest.json", "model.manifest.json", "final", "checkpoints", RETROFIT_FILE)


def is_burrow_dir(source: str) -> bool:
    """True when ``source`` is a burrow run or model directory (not a Hugging Face folder or name)."""
    p = Path(source)
    return p.is_dir() and any((p / name).exists() for name in _BURROW_MARKERS)


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
    if memory.tokenizer.vocab_size > model.config.vocab_size:
        raise BurrowError(f"{label}: the memory's tokenizer has {memory.tokenizer.vocab_size} tokens but the model "
                          f"only {model.config.vocab_size}; pass the memory the model was trained with")
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
    mem = Memory(memory) if isinstance(memory, str | Path) else memory
    if not is_burrow_dir(source):
        from burrow.lm import load_hf_lm

        if Path(source).is_dir() and not (Path(source) / "config.json").exists():
            raise BurrowError(f"{source} is neither a burrow run/model directory nor a Hugging Face model folder")
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
