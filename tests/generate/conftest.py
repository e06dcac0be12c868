"""A tiny memory (8-token chunks) and tiny RETRO / baseline models on its tokenizer, for generation tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_model_config(vocab_size: int, retro: bool, max_seq_len: int = 1024):
    """A two-layer model with 8-token chunks: fast enough for a few hundred CPU steps per test."""
    from burrow.presets import get_preset

    extra = dict(cca_layers=(2,), enc_d_model=64, enc_n_heads=2, enc_head_dim=32, zero_init_cca_out=False,
                 retrieved_len=16) if retro else {}
    return get_preset("retro-tiny" if retro else "tiny", vocab_size=vocab_size, chunk_size=8, d_model=64,
                      n_layers=2, n_heads=2, head_dim=32, max_seq_len=max_seq_len, **extra)


@pytest.fixture
def tiny_config():
    """:func:`tiny_model_config`, as a fixture (test modules cannot import a conftest reliably)."""
    return tiny_model_config


@pytest.fixture(scope="session")
def gen_memory(make_memory):
    """A built memory of four short documents, 8-token chunks, 400-token vocabulary."""
    return make_memory("genmem")


@pytest.fixture(scope="session")
def retro_dir(tmp_path_factory: pytest.TempPathFactory, gen_memory) -> Path:
    """A saved, untrained tiny RETRO model (non-zero CCA, so retrieval changes its output)."""
    import torch

    from burrow.model import build_model, save_model

    torch.manual_seed(0)
    model = build_model(tiny_model_config(gen_memory.tokenizer.vocab_size, retro=True))
    return save_model(model, tmp_path_factory.mktemp("models") / "retro")


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory, gen_memory) -> Path:
    """A saved, untrained tiny baseline model."""
    import torch

    from burrow.model import build_model, save_model

    torch.manual_seed(1)
    model = build_model(tiny_model_config(gen_memory.tokenizer.vocab_size, retro=False))
    return save_model(model, tmp_path_factory.mktemp("models") / "base")


DOCS_TEXT = [
    "A volcano is a rupture in the crust where lava, ash and gases escape. Mount Etna in Sicily erupts often.",
    "Owls hunt at night, turning their heads to hear the smallest mouse in the grass.",
    "Bread is baked from flour, water, salt and yeast. Bakers knead the dough, let it rise.",
    "Chess is a board game for two players. Each player moves sixteen pieces.",
]


def _save_tiny_llama(folder: Path, byte_level: bool = True) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    if byte_level:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # a word-level tokenizer that knows almost nothing: cannot encode the memory's text
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(vocab_size=8, special_tokens=specials)
    tok.train_from_iterator(DOCS_TEXT * 3 if byte_level else ["zebra"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a byte-level BPE tokenizer, saved as a local Hugging Face folder."""
    return _save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def save_tiny_llama():
    """:func:`_save_tiny_llama`, as a fixture."""
    return _save_tiny_llama


@pytest.fixture(scope="session")
def bm25_memory(gen_memory):
    """:func:`gen_memory` with its BM25 index built."""
    from burrow.memory.bm25 import build_bm25

    build_bm25(gen_memory, progress=False)
    return gen_memory


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run these tiny models on one thread: on a shared 2-core machine, OpenMP threads spinning against
    other processes make a 64-wide model 20-100x slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
