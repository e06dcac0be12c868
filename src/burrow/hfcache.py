"""A converted copy of each local GGUF checkpoint, so burrow reads a GGUF file once per machine, not per load.

transformers loads a GGUF checkpoint by parsing its metadata one element at a time (twice: once for the
config, once for the weights), building a tensor-name map per tensor and de-quantizing every weight:
SmolLM2-135M-Instruct's Q4_1 file takes ~43 s to become a model and ~6 s to become a tokenizer on this
2-core CPU (docs/speed.md). The first load keeps what it made, the fp32 weights as safetensors with their
config and the fast tokenizer's files; later loads read those in ~0.3 s and ~0.5 s: the same weights bit
for bit, the same full-forward logits and the same tokens (a cached one-token step may differ from the
GGUF-loaded model's in the last float bits, as another kernel path would).

The cache folder is ``$BURROW_CACHE`` (``off`` keeps no copies), else ``$XDG_CACHE_HOME/burrow``, else
``~/.cache/burrow``. Copies live in ``gguf/<file stem>-<key>/{model,tokenizer}``; the key hashes the GGUF
file's resolved path, size and modification time and transformers' version, so a changed file or another
transformers converts again (and the older copy of the same file is removed). A copy is written to a
temporary folder and moved into place whole (a killed load leaves none that looks complete); a copy that
fails to load is converted again; a cache that cannot be written (read-only home, full disk) costs only
the speed: a warning at each load, which reads the GGUF as before. Weights that stay packed after loading
(transformers' newer GGUF loader) are not copied. Nor is a GGUF named on the hub (``--gguf-file`` with an
``owner/name``): transformers keeps the download, and burrow cannot key a file it has not seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from burrow.artefacts import atomic_dir, files_id, read_json, write_json
from burrow.errors import BurrowError, first_line
from burrow.hub import hf_offline_default

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
    here = Path(gguf_file).expanduser()
    if here.is_file() and here.resolve() != gguf.resolve():
        return None  # transformers reads a gguf_file in the working folder first: not the file keyed here
    import transformers

    stat = gguf.stat()
    ident: list[Any] = [str(gguf.resolve()), stat.st_size, stat.st_mtime_ns, transformers.__version__, COPY_VERSION]
    beside = [files_id(gguf.parent / name) for name in SIDE_FILES[kind] if (gguf.parent / name).is_file()]
    if beside:  # transformers also reads these from the folder (a tokenizer.json wins over the GGUF's vocabulary)
        ident.append(beside)
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    return root / "gguf" / f"{gguf.stem}-{key}" / kind


#: Files beside a GGUF that ``from_pretrained(folder, gguf_file=…)`` reads too, by kind of copy.
SIDE_FILES = {"tokenizer": ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"),
              "model": ("config.json", "generation_config.json")}


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
            obj = load(str(copy), {})
            with contextlib.suppress(OSError):
                os.utime(copy / DONE)  # when it was last read: a copy in use by another environment is kept
            return obj
        except Exception as e:  # damaged on disk (truncated, edited): converted again below, replacing it whole
            log.warning("the converted copy %s does not load (%s): converting %s again", copy, first_line(e),
                        gguf_file)
    obj = load(directory, {"gguf_file": gguf_file})
    source = str((Path(directory).expanduser() / gguf_file).resolve())
    try:
        with atomic_dir(copy) as tmp:
            save(obj, tmp)
            write_json(tmp / DONE, {"kind": kind, "gguf": source, "version": COPY_VERSION,
                                    "transformers": _transformers_version(), "gguf_id": files_id(source)})
    except NoCopy as e:
        log.info("no converted copy of %s: %s", gguf_file, e)
    except Exception as e:  # a full disk (safetensors and tokenizers raise their own errors), no permission, ...
        log.warning("could not keep a converted copy of %s in %s (%s); each load reads the GGUF again "
                    "(set %s to a writable folder, or to off)", gguf_file, copy.parent, first_line(e), CACHE_ENV)
    else:
        _remove_older_copies(copy, source)
    return obj


class NoCopy(Exception):
    """Raised by a ``save`` for an object that a copy would not reproduce (the GGUF is then read each time)."""


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


#: A copy made by an older transformers is removed once unread for this long (another environment sharing
#: the cache may still use it: removing it at once made two environments convert again on every turn).
UNUSED_DAYS = 7


def _superseded(done: dict[str, Any], source: str, last_read: float) -> bool:
    """Whether a copy recorded by ``done`` (last read at ``last_read``), under another key than this load's, will
    not be read again: of this GGUF file, made before the file or its side files changed, or by an older
    transformers and unread for :data:`UNUSED_DAYS`."""
    if done.get("gguf") != source:
        return False
    if "gguf_id" not in done or "transformers" not in done:  # a copy from before these were recorded
        return True
    if done["gguf_id"] != files_id(source):
        return True
    if str(done["transformers"]) == _transformers_version():
        return True  # the same file and transformers under another key: its side files (or layout) differ
    from packaging.version import InvalidVersion, Version

    try:
        older = Version(str(done["transformers"])) < Version(_transformers_version())
    except InvalidVersion:
        return False
    return older and time.time() - last_read > UNUSED_DAYS * 86400


def _remove_older_copies(copy: Path, source: str) -> None:
    """The copies of the same GGUF file under other keys that are never read again (an older transformers, the
    file before it changed): ~0.5 GB each for SmolLM2."""
    for other in copy.parent.parent.glob(copy.parent.name.rsplit("-", 1)[0] + "-*"):
        old = other / copy.name
        if other == copy.parent or not (old / DONE).is_file():
            continue
        try:
            superseded = _superseded(read_json(old / DONE), source, (old / DONE).stat().st_mtime)
        except (BurrowError, AttributeError, OSError):
            continue
        if superseded:
            shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(OSError):
                other.rmdir()  # when its other kind is gone too


def save_causal_lm(model: Any, folder: Path) -> None:
    """The model's weights (safetensors; tied weights once) and its config without the GGUF quantization note."""
    from safetensors.torch import save_model

    state = model.state_dict()
    if any(not t.is_floating_point() for t in state.values()):  # packed GGUF blocks (transformers' newer loader)
        raise NoCopy("its weights stay packed (not floating point) after loading")
    need = sum({t.data_ptr(): t.numel() * t.element_size() for t in state.values()}.values())
    free = shutil.disk_usage(folder).free
    if free < need + (256 << 20):  # before writing ~0.5 GB into a disk that cannot hold it
        raise OSError(f"{free / 2**30:.1f} GiB free, the copy needs {need / 2**30:.1f} GiB")
    config = model.config.to_diff_dict()
    config.pop("quantization_config", None)  # the weights are plain fp32 now, not a GGUF to de-quantize
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_json(folder / "config.json", config)


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))


def load_causal_lm(directory: str, gguf_file: str | None, **kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained(directory, gguf_file=..., **kwargs)`` through the converted copy."""
    hf_offline_default()  # before transformers (and huggingface_hub) load
    from transformers import AutoModelForCausalLM

    return load_converted(directory, gguf_file, "model",
                          lambda path, kw: AutoModelForCausalLM.from_pretrained(path, **kwargs, **kw), save_causal_lm)


def load_auto_tokenizer(directory: str, gguf_file: str | None) -> Any:
    """``AutoTokenizer.from_pretrained(directory, gguf_file=...)`` through the converted copy."""
    hf_offline_default()
    from transformers import AutoTokenizer

    return load_converted(directory, gguf_file, "tokenizer",
                          lambda path, kw: AutoTokenizer.from_pretrained(path, **kw), save_tokenizer)
