"""What every measurement reads: the models as arms (baseline, RETRO[OFF], RETRO[ON]), the memory, the config.

An *arm* is one way of running one model: a baseline once; a RETRO model without retrieval
([OFF], its weights alone) and, with a memory, with retrieval ([ON]). Models are loaded once and
shared by every measurement; generations are cached here so that toxicity, PII and retrieval copying
read the same samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from burrow.artefacts import config_hash, files_id
from burrow.errors import BurrowError
from burrow.evaluate.retrieval import memory_fingerprint
from burrow.memory import Memory
from burrow.model.io import load_named_model, weights_id
from burrow.model.protocol import RetrievalLM
from burrow.risks.config import RisksConfig

log = logging.getLogger(__name__)


class Unavailable(BurrowError):
    """A measurement cannot run in this setup (not bad input): in a full report its row says why, no error."""


class NeedsRetrieval(Unavailable):
    """A measurement needs RETRO[ON] (a RETRO model and its memory) and there is none."""


@dataclass
class Arm:
    """One model run one way."""

    label: str  # e.g. "baseline", "retro[OFF]", "retro[ON]"
    run: Path  # the run or model directory it was loaded from
    model: RetrievalLM
    mode: str  # baseline | off | on (burrow.evaluate's modes)

    @property
    def retrieval(self) -> bool:
        """True for RETRO[ON]."""
        return self.mode == "on"


@dataclass
class Context:
    """Models, memory, config and output directory shared by the measurements of one report."""

    config: RisksConfig
    out: Path
    runs: list[Path]
    memory_dir: Path | None
    arms: list[Arm] = field(default_factory=list)
    load_error: str | None = None  # why no model could be loaded (rows that need one say so)
    cache: dict[str, Any] = field(default_factory=dict)  # generations and other shared intermediates
    force: bool = False  # measure again and generate the samples again (once per report), reusing nothing
    _memory: Memory | None = None

    @property
    def memory(self) -> Memory:
        """The memory; a one-line error when none was given."""
        if self._memory is None:
            if self.memory_dir is None:
                raise BurrowError("this measurement needs the models' memory (--memory DIR): its tokenizer and "
                                  "its chunks")
            self._memory = Memory(self.memory_dir)
        return self._memory

    def model_arms(self, retrieval: bool | None = None) -> list[Arm]:
        """The arms (all; only RETRO[ON] with ``retrieval=True``; none of them with False); an error when
        there are none."""
        if not self.arms:
            raise BurrowError(self.load_error or "no model could be loaded")
        arms = self.arms if retrieval is None else [a for a in self.arms if a.retrieval == retrieval]
        if not arms and retrieval:
            raise NeedsRetrieval("needs a RETRO model and its memory (RETRO[ON]); " + (
                "no --memory was given" if self.memory_dir is None else "none of the runs is a RETRO model"))
        if not arms:
            raise BurrowError("needs a model that runs without retrieval (a baseline or RETRO[OFF])")
        return arms

    def weight_arms(self) -> list[Arm]:
        """Arms that read no memory: baselines and RETRO[OFF]."""
        return self.model_arms(retrieval=False)

    def fingerprint(self) -> str:
        """A hash of what the measurements read, so a changed input is measured again, never served from an old
        part: each model's weights hash (of ``final/``, else of the newest checkpoint, which is what loads), the
        memory's manifests (contents and index), and the size and time of every file under the data folder
        and of ``--tasks-results``."""
        if "fingerprint" not in self.cache:
            parts: list[Any] = [weights_id(run) for run in self.runs]
            if self.memory_dir is not None and (self.memory_dir / "memory.manifest.json").is_file():
                parts.append(memory_fingerprint(self.memory))
            for path in (self.config.data_dir, self.config.tasks_results):
                parts.append(files_id(path) if path is not None else None)
            self.cache["fingerprint"] = config_hash(parts)
        return str(self.cache["fingerprint"])

    def labels(self) -> list[str]:
        """Every arm's label, in order."""
        return [a.label for a in self.arms]


def load_arms(ctx: Context) -> None:
    """Load every run of ``ctx`` into arms; on failure the error is kept for the rows that need models."""
    try:
        memory = ctx.memory if ctx.memory_dir is not None else None
        names: set[str] = set()
        for run in ctx.runs:
            if memory is not None:
                memory.check_trained_on(run)
            name, model = load_named_model(run)
            while name in names:
                name += "'"
            names.add(name)
            if not model.config.retro:
                ctx.arms.append(Arm(name, Path(run), model, "baseline"))
                continue
            ctx.arms.append(Arm(f"{name}[OFF]", Path(run), model, "off"))
            if memory is not None:
                memory.check_model(model.config)
                ctx.arms.append(Arm(f"{name}[ON]", Path(run), model, "on"))
        if ctx.arms and memory is None:
            raise BurrowError("burrow models read text through their memory's tokenizer: give --memory DIR")
    except BurrowError as e:
        ctx.arms.clear()
        ctx.load_error = str(e)
        log.warning("no model loaded: %s", e)
