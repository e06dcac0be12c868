"""RETRO around a frozen Hugging Face causal LM (RETRO-fitting a pretrained Llama-style model).

Shape legend: b batch, n tokens in this call, d model width, v vocabulary, l chunks, k neighbours,
r tokens per neighbour.

The HF model runs its own forward (its rotary embedding, attention masks and KV cache); forward
hooks insert RETRO's chunked cross-attention after the self-attention of the chosen decoder layers,
so each of those blocks computes FFW(CCA(ATTN(H), E)) as in the paper. A decoder layer of a pre-norm
model computes ``H = X + attn(norm(X))``: a pre-hook on the layer keeps X, a hook on its attention
module gets attn(norm(X)) and returns attn(norm(X)) + CCA(norm(H)), so the layer's own residual add
yields H + CCA(norm(H)). The first CCA layer's H is H_u for the encoder (via
:class:`~burrow.model.retro.RetrievalContext`, shared with burrow's own decoder). Without neighbours
(and without a cache) no hook does anything: the logits are the HF model's, bit for bit.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from burrow.errors import BurrowError, first_line
from burrow.hfcache import load_auto_tokenizer, load_causal_lm
from burrow.hub import SMOLLM2 as SMOLLM2  # re-exported: the names used to live here
from burrow.hub import SMOLLM2_GGUF as SMOLLM2_GGUF
from burrow.hub import hf_offline_default
from burrow.hub import resolve_hf_base as resolve_hf_base
from burrow.model.cache import ModelCache
from burrow.model.cca import ChunkedCrossAttention
from burrow.model.config import ModelConfig
from burrow.model.encoder import RetrievalEncoder
from burrow.model.layers import RMSNorm
from burrow.model.retro import RetrievalContext

log = logging.getLogger(__name__)

def _looks_like_a_path(name: str) -> bool:
    """A name the hub could not hold (it takes ``owner/name`` or ``name``): a local path, or a typo of one."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith((".gguf", "/"))


def load_hf_causal_lm(name: str, gguf_file: str | None = None) -> Any:
    """A Hugging Face causal LM in eval mode, fp32, every weight frozen; offline unless allowed."""
    hf_offline_default()
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise BurrowError("a Hugging Face base model needs transformers: pip install transformers gguf") from None
    path, gguf = resolve_hf_base(name, gguf_file)
    if _looks_like_a_path(str(path)) and not Path(path).exists():
        raise BurrowError(f"{name}: no such run or model folder (nor a Hugging Face name: those are owner/name)")
    try:
        model = load_causal_lm(path, gguf, dtype=torch.float32)  # a GGUF is read once, then its converted copy
    except Exception as e:  # OSError, ValueError, ... from deep inside transformers: one clear line
        raise BurrowError(f"cannot load Hugging Face model {name!r} (gguf_file={gguf}): {first_line(e)}") from None
    model.eval()
    model.requires_grad_(False)
    return model


def load_hf_tokenizer_vocab(name: str, gguf_file: str | None = None) -> dict[str, int]:
    """The token -> id mapping of the base model's own tokenizer (to check a memory against)."""
    path, gguf = resolve_hf_base(name, gguf_file)
    try:
        tok = load_auto_tokenizer(path, gguf)
    except Exception as e:
        raise BurrowError(f"cannot load the tokenizer of {name!r}: {first_line(e)}") from None
    return dict(tok.get_vocab())


def hf_decoder_config(hf_config: Any) -> dict[str, Any]:
    """ModelConfig fields describing the HF decoder (width, depth, heads, vocabulary, positions)."""
    d = int(hf_config.hidden_size)
    heads = int(hf_config.num_attention_heads)
    rope = getattr(hf_config, "rope_theta", None)
    if rope is None:  # transformers >= 5 keeps it in rope_parameters
        rope = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return {
        "vocab_size": int(hf_config.vocab_size), "d_model": d, "n_layers": int(hf_config.num_hidden_layers),
        "n_heads": heads, "head_dim": int(getattr(hf_config, "head_dim", None) or d // heads),
        "d_ffw": int(getattr(hf_config, "intermediate_size", 4 * d)),
        "max_seq_len": int(getattr(hf_config, "max_position_embeddings", 2048)),
        "tie_embeddings": bool(getattr(hf_config, "tie_word_embeddings", False)),
        "norm_eps": float(getattr(hf_config, "rms_norm_eps", 1e-6)), "rope_base": float(rope),
        "init_std": float(getattr(hf_config, "initializer_range", 0.02)),
    }


def layout_visible(tokens: Tensor, pad: int | None, start: int | None) -> Tensor | None:
    """(b, n) long: 0 where ``tokens`` holds a layout pad (a pad followed by a pad or by s), else 1; None
    without both ids. Each run of pads before a document is hidden and s stays (when s is the pad id, the
    run's last token). A pad ending ``tokens`` stays: its next token is not known."""
    if pad is None or start is None:
        return None
    is_pad = tokens == pad  # (b, n)
    nxt = torch.zeros_like(is_pad)
    nxt[:, :-1] = (tokens[:, 1:] == pad) | (tokens[:, 1:] == start)
    return (~(is_pad & nxt)).long()


class HFBaseline(nn.Module):
    """A plain HF causal LM behind burrow's model interface (a baseline: ``config.retro`` false), so it
    is scored and compared like a burrow baseline; ``neighbours`` are rejected by the evaluator."""

    def __init__(self, base: nn.Module, name: str = "", pad_id: int | None = None,
                 start_id: int | None = None) -> None:
        super().__init__()
        self.base: Any = base
        self.config = ModelConfig(**hf_decoder_config(base.config), name=name,  # type: ignore[attr-defined]
                                  pad_id=pad_id, start_id=start_id)

    def forward(self, tokens: Tensor, neighbours: Tensor | None = None, neighbour_mask: Tensor | None = None,
                cache: ModelCache | None = None) -> Tensor:
        """Logits (b, n, v); no retrieval and no cache (use :class:`HFRetro` for those). With ``pad_id`` and
        ``start_id`` the layout's pads are hidden, as from an :class:`HFRetro`'s base (the same scores as its
        [OFF]); without, the model reads every token."""
        if neighbours is not None or cache is not None:
            raise BurrowError("HFBaseline takes neither neighbours nor a cache")
        visible = layout_visible(tokens, self.config.pad_id, self.config.start_id)
        kwargs = {} if visible is None or bool(visible.all()) else {"attention_mask": visible}
        logits: Tensor = self.base(input_ids=tokens, **kwargs).logits  # (b, n, v)
        return logits

    def new_cache(self, batch_size: int, max_len: int | None = None) -> ModelCache:
        """Not offered: an HFBaseline is for scoring (see :class:`HFRetro` for generation)."""
        raise BurrowError("HFBaseline has no KV cache; generate with a burrow model or an HFRetro")

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count of the HF model (shared tensors once; ``non_embedding`` is not applied)."""
        return sum(p.numel() for p in self.base.parameters())


#: Hugging Face model types whose decoder layer is x + attn(norm(x)), then + mlp(norm(·)): HFRetro's hooks
#: return attn + CCA(norm(X + attn)) from self_attn, so the layer's residual add gives H + CCA(norm(H)).
PRE_NORM_LAYOUTS = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "olmo",
                    "starcoder2")


class HFRetroCache(ModelCache):
    """RETRO's chunk state (:class:`ModelCache`) plus the HF model's own KV cache."""

    def __init__(self, batch_size: int, max_len: int) -> None:
        super().__init__(0, batch_size, max_len)  # no burrow layers: keys/values live in ``hf``
        from transformers import DynamicCache

        self.hf = DynamicCache()
        self.visible: Tensor | None = None  # (b, length) keys the base may attend to (with hidden layout pads)
        self.last: Tensor | None = None  # (b, 1) the latest token: a pad ending a call is hidden if a pad or s follows


class CCALayer(nn.Module):
    """The norm and chunked cross-attention added to one HF decoder layer."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.cca = ChunkedCrossAttention(cfg)


@dataclass
class _CallState:
    """One forward call's retrieval context and the input of the CCA layer it is inside (HFRetro's hooks)."""

    context: RetrievalContext | None = None
    layer_input: Tensor | None = None


class HFRetro(nn.Module):
    """A frozen HF causal LM (``base``) + RETRO encoder and CCA layers; burrow's model interface.

    ``config`` is a RETRO :class:`ModelConfig` whose decoder fields mirror the HF model's
    (:func:`hf_decoder_config`); evaluation and generation read it as they read a burrow model's.
    """

    def __init__(self, base: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        if not config.retro:
            raise BurrowError("HFRetro needs a RETRO config (retro=true, cca_layers)")
        self.config = config
        self.base: Any = base  # a transformers PreTrainedModel (typed loosely: transformers is optional)
        self.cca: dict[str, CCALayer] = nn.ModuleDict(  # type: ignore[assignment]  # str -> CCALayer
            {str(i): CCALayer(config) for i in config.cca_layers})
        self.encoder = RetrievalEncoder(config)
        self._cache_kw = _cache_keyword(base)
        # What one forward call hands its hooks, per thread: a server runs several generations on one model at
        # once (worker threads), and a call's neighbours must never reach another call's layers.
        self._calls: dict[int, _CallState] = {}
        for i in config.cca_layers:
            layer = self.decoder_layers[i - 1]
            layer.register_forward_pre_hook(self._keep_input)
            # a partial of a bound method, not a closure: a deep copy of the model (the generator's pre-cast copy)
            # rebinds it to the copy; a closure kept reading the original's state, and the copy never retrieved
            layer.self_attn.register_forward_hook(functools.partial(self._attention_hook, str(i)))
        self.reset_new_parameters()

    @property
    def decoder_layers(self) -> Any:
        """The HF decoder's layers (``base.model.layers`` in Llama, Mistral, Qwen2, SmolLM)."""
        kind = getattr(getattr(self.base, "config", None), "model_type", None)
        if kind not in PRE_NORM_LAYOUTS:
            # Gemma2 and OLMo2 normalise the attention's output before the residual add, Phi and Cohere run
            # attention and MLP side by side: a CCA added after self_attn would not be H + CCA(norm(H)) there
            raise BurrowError(f"a {kind or type(self.base).__name__} model cannot be RETRO-fitted: CCA is added "
                              f"after self-attention in pre-norm residual decoders ({', '.join(PRE_NORM_LAYOUTS)})")
        inner = getattr(self.base, "model", None)
        layers = getattr(inner, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise BurrowError(f"{type(self.base).__name__} has no model.layers; only Llama-style decoders "
                              "can be RETRO-fitted")
        return layers

    def reset_new_parameters(self) -> None:
        """Initialise the new modules as :class:`~burrow.model.Transformer` does; CCA outputs zero."""
        for module in [*(m for layer in self.cca.values() for m in layer.modules()), *self.encoder.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=self.config.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        if self.config.zero_init_cca_out:
            for layer in self.cca.values():
                nn.init.zeros_(layer.cca.attn.out.weight)

    def train(self, mode: bool = True) -> HFRetro:
        """Train mode for the new modules only: the frozen base always runs as in inference."""
        super().train(mode)
        self.base.eval()
        return self

    def forward(self, tokens: Tensor, neighbours: Tensor | None = None, neighbour_mask: Tensor | None = None,
                cache: ModelCache | None = None) -> Tensor:
        """Logits (b, n, v); arguments as :meth:`burrow.model.Transformer.forward`."""
        n = tokens.shape[1]
        if cache is not None:
            if not isinstance(cache, HFRetroCache):
                raise BurrowError("an HFRetro model needs its own cache: use model.new_cache()")
            cache.check_step(tokens.shape[0], n)
        call = self._calls.setdefault(threading.get_ident(), _CallState())
        try:
            if neighbours is not None or cache is not None:
                embed = self.base.get_input_embeddings()
                p0 = cache.length if cache is not None else 0
                call.context = RetrievalContext(self.encoder, embed, neighbours, neighbour_mask, p0, n, cache)
            kwargs: dict[str, Any] = {}
            if cache is not None:
                kwargs = {self._cache_kw: cache.hf, "use_cache": True}  # type: ignore[attr-defined]
            visible = self._visible(tokens, cache)
            if visible is not None:
                kwargs["attention_mask"] = visible
            logits: Tensor = self.base(input_ids=tokens, **kwargs).logits  # (b, n, v)
        finally:
            self._calls.pop(threading.get_ident(), None)
        if cache is not None:
            cache.length += n
        return logits

    def _visible(self, tokens: Tensor, cache: HFRetroCache | None) -> Tensor | None:
        """(b, past + n): :func:`layout_visible` of this call after the cached calls' (kept in ``cache``), so
        the base reads [pads] + s + d as it reads s + d (rotary attention sees only relative positions).
        None when nothing is hidden (the base's own causal path, bit for bit) or when the config names no
        start token (fits saved before: their base saw every pad, as in their training)."""
        visible = layout_visible(tokens, self.config.pad_id, self.config.start_id)
        if visible is None:
            return None
        if cache is not None:
            if cache.visible is not None and cache.last is not None:
                # the previous call's last token again: a pad there is a layout pad when this call goes on with
                # a pad or s (it stayed visible while its next token was unknown; no later token has read it yet)
                both = layout_visible(torch.cat([cache.last, tokens], dim=1), self.config.pad_id,
                                      self.config.start_id)
                assert both is not None
                visible = torch.cat([cache.visible[:, :-1], both], dim=1)
            cache.visible, cache.last = visible, tokens[:, -1:]
        return None if bool(visible.all()) else visible  # nothing hidden: the base's own (causal) path, bit for bit

    def _keep_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Pre-hook of a CCA decoder layer: keep its input X (b, n, d) to rebuild H = X + attn."""
        call = self._calls.get(threading.get_ident())
        if call is not None and call.context is not None:
            call.layer_input = args[0]

    def _attention_hook(self, key: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        """Forward hook of CCA layer ``key``'s self-attention: add chunked cross-attention to its output."""
        call = self._calls.get(threading.get_ident())
        if call is None or call.context is None or call.layer_input is None:
            return None  # retrieval off: the base's output, untouched
        ctx = call.context
        attn = output[0] if isinstance(output, tuple) else output  # (b, n, d)
        h = call.layer_input + attn  # H = ATTN(X), the stream the paper's CCA reads
        ctx.observe(h)
        if ctx.encoded is None or ctx.window is None:
            return None
        layer = self.cca[key]
        attn = attn + layer.cca(layer.norm(h), ctx.encoded, ctx.encoded_mask, ctx.window, ctx.chunk_state)
        return (attn, *output[1:]) if isinstance(output, tuple) else attn

    def new_cache(self, batch_size: int, max_len: int | None = None) -> HFRetroCache:
        """An empty cache (HF keys/values + RETRO chunk state) for :meth:`forward`."""
        return HFRetroCache(batch_size, max_len or self.config.max_seq_len)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count (shared tensors once); ``non_embedding`` leaves out the vocabulary matrices."""
        vocab = {id(self.base.get_input_embeddings().weight)}
        out = self.base.get_output_embeddings()
        if out is not None:
            vocab.add(id(out.weight))
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or (non_embedding and id(p) in vocab):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def new_state_dict(self) -> dict[str, Tensor]:
        """Only the RETRO-fit's own weights (CCA layers + encoder), not the frozen base."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}


def _cache_keyword(base: nn.Module) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older), whichever forward accepts."""
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
