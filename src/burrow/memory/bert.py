"""A sentence-transformers BERT encoder (Transformer → mean Pooling → Normalize) in plain torch.

Why: importing sentence-transformers and transformers takes ~8 s on a 2-core CPU (transformers' model
machinery, scikit-learn, pandas), more than a whole `burrow generate` of a few chunks, and every command
that makes a key (generate, chat, serve, memory search, eval) paid it. The default encoder,
all-MiniLM-L6-v2, is a 6-layer BERT: this module runs the same weights with the same tokenizer
(``tokenizer.json`` through the ``tokenizers`` library), the same truncation and the same pooling, so
its keys equal sentence-transformers' to float rounding (tests/memory/test_bert_encoder.py).

:func:`load_plain_bert` accepts only a local sentence-transformers folder of exactly that shape;
anything else (another architecture or pooling, a prompt, a hub name) returns None and
:class:`~burrow.memory.encode.FrozenEncoder` loads sentence-transformers as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_MODULES = "sentence_transformers.models."


def plain_bert_spec(path: str | Path) -> dict[str, Any] | None:
    """The BERT config and ``max_seq_length`` of the folder ``path`` when this module computes what
    sentence-transformers (6.x, transformers 5.x) computes for it, else None. Accepted: modules
    Transformer → mean Pooling (→ Normalize) in the folder's root; an fp32 BERT encoder (not a decoder) with
    absolute positions and exact GELU; a ``tokenizer.json`` whose BERT normaliser agrees with
    ``tokenizer_config.json`` (which transformers rebuilds it from), right-side truncation and padding;
    ``model.safetensors``; no lower-casing, prompt or extra loading options of sentence-transformers' own."""
    root = Path(path)
    try:
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"].removeprefix(_MODULES) for m in modules]
        if types not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return None
        if modules[0].get("path", "") != "" or not (root / "model.safetensors").is_file():
            return None
        if not _mean_pooling(json.loads((root / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))):
            return None
        st = json.loads((root / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if not isinstance(st.get("max_seq_length"), int) or any(v for k, v in st.items() if k != "max_seq_length"):
            return None  # do_lower_case, tokenizer/processor/config/model kwargs: sentence-transformers' own
        extra = root / "config_sentence_transformers.json"
        if extra.is_file():
            ext = json.loads(extra.read_text(encoding="utf-8"))
            if ext.get("default_prompt_name") or any(ext.get("prompts", {}).values()):
                return None
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        if not _plain_bert_config(config) or not _bert_tokenizer(root):
            return None
        max_len = min(st["max_seq_length"], int(config.get("max_position_embeddings", 512)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {"config": config, "max_seq_length": max_len, "normalize": len(types) == 3}


def _mean_pooling(pooling: dict[str, Any]) -> bool:
    """Whether a Pooling module's config means plain mean pooling (``pooling_mode`` wins where present)."""
    if "pooling_mode" in pooling:
        return bool(pooling["pooling_mode"] == "mean")
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
    return modes.get("pooling_mode_mean_tokens") is True and not any(
        v for k, v in modes.items() if k != "pooling_mode_mean_tokens")


def _plain_bert_config(config: dict[str, Any]) -> bool:
    """A BERT encoder this module runs as transformers does (fp32 weights loaded as they are stored)."""
    dtype = config.get("dtype", config.get("torch_dtype"))
    return (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder") and dtype in (None, "float32"))


def _bert_tokenizer(root: Path) -> bool:
    """Whether ``tokenizer.json`` alone tokenizes as transformers' BertTokenizer of this folder does."""
    tok = json.loads((root / "tokenizer.json").read_text(encoding="utf-8"))
    cfg_file = root / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    norm = tok.get("normalizer") or {}
    if cfg.get("tokenizer_class", "BertTokenizer") not in ("BertTokenizer", "BertTokenizerFast"):
        return False
    if norm.get("type") != "BertNormalizer" or (tok.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        return False
    agree = (norm.get("lowercase") == cfg.get("do_lower_case", True)
             and norm.get("strip_accents") == cfg.get("strip_accents")
             and norm.get("handle_chinese_chars") == cfg.get("tokenize_chinese_chars", True)
             and cfg.get("do_basic_tokenize", True) and not cfg.get("never_split"))
    sides = (cfg.get("truncation_side", "right"), cfg.get("padding_side", "right"),
             ((tok.get("truncation") or {}).get("direction") or "Right").lower(),
             ((tok.get("padding") or {}).get("direction") or "Right").lower())
    return bool(agree) and all(side == "right" for side in sides)


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)  # query, key, value stacked (one matmul)
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.ff_in = nn.Linear(d, ff)
        self.ff_out = nn.Linear(ff, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, h, s, dh)
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, s, d)))
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class PlainBert(nn.Module):
    """BERT embeddings + encoder layers + masked mean pooling (+ L2 normalisation): a key per text."""

    def __init__(self, config: dict[str, Any], normalize: bool):
        super().__init__()
        d, eps = int(config["hidden_size"]), float(config.get("layer_norm_eps", 1e-12))
        self.word = nn.Embedding(int(config["vocab_size"]), d)
        self.position = nn.Embedding(int(config.get("max_position_embeddings", 512)), d)
        self.token_type = nn.Embedding(int(config.get("type_vocab_size", 2)), d)
        self.embed_norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(d, int(config["num_attention_heads"]), int(config["intermediate_size"]), eps)
            for _ in range(int(config["num_hidden_layers"])))
        self.normalize = normalize
        self.dim = d

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, e) keys of ``ids`` (b, s) with ``mask`` (b, s) 1 for real tokens, 0 for padding."""
        s = ids.shape[1]
        x = self.word(ids) + self.position.weight[:s] + self.token_type.weight[0]
        x = self.embed_norm(x)
        keep = mask.bool()[:, None, None, :]  # (b, 1, 1, s): every query sees the text's real tokens
        for layer in self.layers:
            x = layer(x, keep)
        m = mask.to(torch.float32).unsqueeze(-1)  # summed in fp32, as sentence-transformers pools
        pooled = (x.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def load_bert_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Take a Hugging Face ``BertModel`` state dict (an optional ``bert.`` prefix; the pooler unused)."""
        sd = {k.removeprefix("bert."): v for k, v in state.items()}
        own: dict[str, torch.Tensor] = {
            "word.weight": sd["embeddings.word_embeddings.weight"],
            "position.weight": sd["embeddings.position_embeddings.weight"],
            "token_type.weight": sd["embeddings.token_type_embeddings.weight"],
            "embed_norm.weight": sd["embeddings.LayerNorm.weight"], "embed_norm.bias": sd["embeddings.LayerNorm.bias"],
        }
        for i in range(len(self.layers)):
            p, a = f"encoder.layer.{i}.", f"layers.{i}."
            for part in ("weight", "bias"):
                own[a + "qkv." + part] = torch.cat([sd[f"{p}attention.self.{n}.{part}"]
                                                    for n in ("query", "key", "value")])
                own[a + "attn_out." + part] = sd[f"{p}attention.output.dense.{part}"]
                own[a + "attn_norm." + part] = sd[f"{p}attention.output.LayerNorm.{part}"]
                own[a + "ff_in." + part] = sd[f"{p}intermediate.dense.{part}"]
                own[a + "ff_out." + part] = sd[f"{p}output.dense.{part}"]
                own[a + "ff_norm." + part] = sd[f"{p}output.LayerNorm.{part}"]
        self.load_state_dict(own, strict=True)


class PlainBertEncoder:
    """A :class:`PlainBert` with its tokenizer: ``encode(texts)`` → (n, e) float32 keys, as
    sentence-transformers' ``encode`` of the same folder gives them."""

    def __init__(self, path: str | Path, spec: dict[str, Any], device: torch.device):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        root = Path(path)
        self.max_length = int(spec["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = int(spec["config"].get("pad_token_id") or 0)
        self.model = PlainBert(spec["config"], spec["normalize"])
        weights = load_file(str(root / "model.safetensors"))
        if any(w.is_floating_point() and w.dtype != torch.float32 for w in weights.values()):
            raise ValueError("half-precision weights: transformers would run them as stored")
        self.model.load_bert_weights(weights)
        self.model.to(device).eval()
        self.device = device
        self.dim = self.model.dim

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text without the special tokens (the order :meth:`FrozenEncoder.encode` batches in)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), e) keys, one batch padded to its longest text."""
        encs = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = torch.full((len(encs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encs), width), dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
        return self.model(ids.to(self.device), mask.to(self.device))


def load_plain_bert(path: str | Path, device: torch.device) -> PlainBertEncoder | None:
    """The model folder ``path`` as a :class:`PlainBertEncoder` when :func:`plain_bert_spec` accepts it, else None."""
    spec = plain_bert_spec(path)
    if spec is None:
        return None
    try:
        return PlainBertEncoder(path, spec, device)
    except Exception as e:  # weights of another layout or dtype, a file that does not parse: sentence-transformers
        log.info("encoder %s: %s; loading it through sentence-transformers", path, e)
        return None


__all__ = ["PlainBert", "PlainBertEncoder", "load_plain_bert", "plain_bert_spec"]
