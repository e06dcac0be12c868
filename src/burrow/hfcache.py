"""A converted copy of each local GGUF checkpoint, so burrow reads a GGUF file once per machine, not per load.

transformers loads a GGUF checkpoint by parsing its metadata one element at a time (twice: once for the
config, once for the weights), building a tensor-name map per tensor and de-quantizing every weight:
SmolLM2-135M-Instruct's Q4_1 file takes ~43 s to become a model and ~6 s to become a tokenizer on this
2-core CPU (docs/speed.md). The first load keeps what it made, the fp32 weights as safetensors with their
config and the fast tokenizer's files; later loads read those in ~0.3 s and ~0.5 s: the same weights bit
for bit, the same tokens.

The cache folder is ``$BURROW_CACHE`` (``off`` keeps no copies), else ``$XDG_CACHE_HOME/burrow``, else
``~/.cache/burrow``. Copies live in ``gguf/<file stem>-<key>/{model,tokenizer}``; the key hashes the GGUF
file's resolved path, size and modification time and transformers' version, so a changed file or another
transformers converts again. A copy is written to a temporary folder and moved into place whole (a killed
load leaves none that looks complete); a copy that fails to load is removed and the GGUF read again; a
cache that cannot be written (read-only home, full disk) costs only the speed: one warning, then the GGUF
is read as before. A GGUF named on the hub (``--gguf-file`` with an ``owner/name``) is not copied:
transformers keeps the download, and burrow cannot key a file it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from burrow.artefacts import atomic_dir, write_json
from burrow.errors import BurrowError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable naming burrow's cache folder (``off``: no converted copies).
CACHE_ENV = "BURROW_CACHE"
#: Bump when the layout of a converted copy changes: older copies are then converted again.
COPY_VERSION = 1
#: Written last into a finished copy; a folder without it is not a copy.
DONE = "converted.json"


def cache_root() -> Path | None:
    """burrow's cache folder, or None when ``$BURROW_CACHE`` is ``off``."""
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() in ("off", "0", "none", "false"):
        return None
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "burrow"


def copy_folder(directory: str, gguf_file: str, kind: str) -> Path | None:
    """Where the converted ``kind`` ("model" or "tokenizer") of ``directory/gguf_file`` lives (made or not);
    None when copies are off or the GGUF is not a local file."""
    root = cache_root()
    gguf = Path(directory).expanduser() / gguf_file
    if root is None or not gguf.is_file():
        return None
    import transformers

    stat = gguf.stat()
    ident = [str(gguf.resolve()), stat.st_size, stat.st_mtime_ns, transformers.__version__, COPY_VERSION]
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    return root / "gguf" / f"{gguf.stem}-{key}" / kind


def load_converted(directory: str, gguf_file: str | None, kind: str, load: Callable[[str, dict[str, Any]], T],
                   save: Callable[[T, Path], None]) -> T:
    """``load(directory, {"gguf_file": gguf_file})``, read from the converted copy when there is one, else
    loaded from the GGUF and kept as a copy by ``save(obj, folder)``; without a GGUF, ``load(directory, {})``.

    ``load`` raises what transformers raises; the caller turns it into one line for the user.
    """
    if not gguf_file:
        return load(directory, {})
    copy = copy_folder(directory, gguf_file, kind)
    if copy is None:
        return load(directory, {"gguf_file": gguf_file})
    if (copy / DONE).is_file():
        try:
            return load(str(copy), {})
        except Exception as e:  # damaged on disk (truncated, edited): read the GGUF again below
            log.warning("the converted copy %s does not load (%s): converting %s again", copy, first_line(e),
                        gguf_file)
            shutil.rmtree(copy, ignore_errors=True)
    obj = load(directory, {"gguf_file": gguf_file})
    try:
        with atomic_dir(copy) as tmp:
            save(obj, tmp)
            write_json(tmp / DONE, {"kind": kind, "gguf": str(Path(directory).expanduser().resolve() / gguf_file),
                                    "version": COPY_VERSION})
    except (OSError, BurrowError) as e:
        log.warning("could not keep a converted copy of %s in %s (%s); the next load reads the GGUF again "
                    "(set %s to a writable folder, or to off)", gguf_file, copy.parent, first_line(e), CACHE_ENV)
    return obj


def save_causal_lm(model: Any, folder: Path) -> None:
    """The model's weights (safetensors; tied weights once) and its config without the GGUF quantization note."""
    from safetensors.torch import save_model

    config = model.config.to_diff_dict()
    config.pop("quantization_config", None)  # the weights are plain fp32 now, not a GGUF to de-quantize
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_json(folder / "config.json", config)


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))


def load_causal_lm(directory: str, gguf_file: str | None, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained(directory, gguf_file=..., **kwargs)`` through the converted copy."""
    from transformers import AutoModelForCausalLM

    return load_converted(directory, gguf_file, "model",
                          lambda path, kw: AutoModelForCausalLM.from_pretrained(path, **kwargs, **kw), save_causal_lm)


def load_auto_tokenizer(directory: str, gguf_file: str | None) -> Any:
    """``AutoTokenizer.from_pretrained(directory, gguf_file=...)`` through the converted copy."""
    from transformers import AutoTokenizer

    return load_converted(directory, gguf_file, "tokenizer",
                          lambda path, kw: AutoTokenizer.from_pretrained(path, **kw), save_tokenizer)
