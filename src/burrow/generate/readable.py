"""A pretrained LM reading the memory, loaded by name, and the side-by-side example the demo ends with.

    from burrow.generate.readable import lm_generator, readable_example
    gen = lm_generator("smollm2", Memory("mem"), retriever="bm25", stride=32)
    print(readable_example("mem", lm="smollm2", prompt="The Battle of Hastings was fought in 1066 between"))
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError
from burrow.generate.config import GenerationConfig
from burrow.generate.generator import GenerationResult
from burrow.generate.incontext import InContextGenerator
from burrow.hub import hf_offline

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "The Battle of Hastings was fought in 1066 between"


def load_lm(name: str) -> Any:
    """An :class:`~burrow.lm.HFLM` for ``smollm2``, a local folder or a hub id; one clear error line."""
    from burrow.lm import load_hf_lm
    from burrow.model.hf import SMOLLM2

    local = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) and not local.is_dir():
        raise BurrowError(f"--lm {name}: no such folder; give a folder with a Hugging Face model, a hub id, "
                          "or smollm2")
    try:
        lm = load_hf_lm(str(local) if local.is_dir() else name)
        lm.name = local.resolve().name if local.is_dir() else name  # shown on pages: never a machine path
        return lm
    except BurrowError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if name.lower() == SMOLLM2:
            raise
        offline = hf_offline()  # as huggingface_hub reads the variable (burrow's default: off)
        fix = ("it is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1): download it "
               "once online (HF_HUB_OFFLINE=0), give a local folder, or use --lm smollm2") if offline else \
            "check the hub id or give a local folder with config.json and the tokenizer, or use --lm smollm2"
        raise BurrowError(f"cannot load the LM {name!r}: {fix} ({first[:200]})") from None


def lm_generator(lm: str | Any, memory: Any | None, retriever: str = "bm25", stride: int = 32,
                 query_tokens: int = 32, device: str | None = None, precision: str = "auto") -> InContextGenerator:
    """An :class:`InContextGenerator` of LM ``lm`` (a name or a loaded adapter) over ``memory`` (path or Memory)."""
    from burrow.memory import Memory

    if isinstance(memory, (str, Path)):
        memory = Memory(memory)
    model = load_lm(lm) if isinstance(lm, str) else lm
    return InContextGenerator(model, memory, retriever=retriever, stride=stride, query_tokens=query_tokens,
                              device=device, precision=precision)


def pick_retriever(memory: Any) -> str:
    """bm25 when the memory has an up-to-date BM25 index, else dense."""
    from burrow.memory.bm25 import bm25_status

    status = bm25_status(memory)
    return "bm25" if status is not None and status.get("up_to_date") else "dense"


def side_by_side(prompt: str, with_memory: GenerationResult, without: GenerationResult, name: str,
                 how: str, width: int = 96) -> str:
    """Plain text: the prompt, the two continuations, then the sources read per block."""

    def para(text: str) -> str:
        return "\n".join(textwrap.fill(line, width, initial_indent="  ", subsequent_indent="  ") if line.strip()
                         else "" for line in (prompt + text).splitlines())

    lines = [f"Prompt: {prompt}", "", f"── {name} without the memory ──", para(without.text), "",
             f"── {name} reading the memory ({how}) ──", para(with_memory.text), "", "Sources read:"]
    seen: set[int] = set()
    for block in with_memory.chunks:
        for nb in block.neighbours:
            copied = f"; copied \"{nb.copied.text.strip()}\" ({nb.copied.tokens} tokens)" if nb.copied else ""
            if nb.chunk_id in seen and not copied:
                continue
            seen.add(nb.chunk_id)
            lines.append(f"  [block {block.chunk}, #{nb.rank}] {nb.source} (score {-nb.distance:.2f}){copied}"
                         if nb.distance <= 0 else
                         f"  [block {block.chunk}, #{nb.rank}] {nb.source} (distance {nb.distance:.3f}){copied}")
            lines.append("      " + textwrap.shorten(nb.text.replace("\n", " "), width - 6, placeholder=" …"))
    if not seen:
        lines.append("  (no passage retrieved)")
    return "\n".join(lines)


def readable_example(memory: str | Path | Any, lm: str | Any = "smollm2", prompt: str = DEFAULT_PROMPT,
                     max_new_tokens: int = 48, retriever: str | None = None, stride: int = 32,
                     seed: int | None = None) -> str:
    """One generation of ``lm`` with and without ``memory``, side by side with its sources (plain text).

    Greedy unless ``seed`` is given (then top-p 0.9 sampling with that seed, the same for both).
    ``retriever`` None: bm25 when the memory has a BM25 index, else dense.
    """
    from burrow.memory import Memory

    mem = Memory(memory) if isinstance(memory, (str, Path)) else memory
    retriever = retriever or pick_retriever(mem)
    gen = lm_generator(lm, mem, retriever=retriever, stride=stride)
    config = GenerationConfig(max_new_tokens=max_new_tokens, greedy=seed is None, top_p=0.9, seed=seed)
    on = gen.generate(prompt, config)
    off = gen.generate(prompt, GenerationConfig(**{**config.__dict__, "retrieval": False}))
    how = f"{retriever} passages, refreshed every {stride} tokens"
    return side_by_side(prompt, on, off, str(gen.name), how)
