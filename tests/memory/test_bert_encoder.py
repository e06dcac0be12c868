"""The plain-torch BERT path gives sentence-transformers' keys (the same weights, tokenizer, truncation and
pooling), so memories built either way are searched alike; other models still load sentence-transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from burrow.memory.bert import plain_bert_spec
from burrow.memory.encode import EncoderConfig, FrozenEncoder, resolve_model_path

TEXTS = [
    "The river floods the valley every spring, and farmers plant rice in the wet fields.",
    "", "a", "  leading and trailing spaces  ", "Café naïve façade — 東京 🦉 émigré",
    "Owls hunt at night. " * 80,  # past 256 tokens: truncated as sentence-transformers truncates
    "Glaciers carve deep valleys as they slide slowly down from the peaks.",
]


@pytest.fixture(scope="module")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu").eval()


def test_the_default_encoder_runs_the_plain_path(encoder) -> None:
    assert encoder.plain is not None and encoder.model is None and encoder.dim == 384


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_plain_keys_equal_sentence_transformers(sentence_transformer, precision) -> None:
    from burrow.device import autocast

    enc = FrozenEncoder(EncoderConfig(precision=precision))
    ours = enc.encode(TEXTS)
    with torch.inference_mode(), autocast(enc.device, enc.dtype):
        theirs = sentence_transformer.encode(TEXTS, batch_size=64, convert_to_numpy=True)
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() > (0.99999 if precision == "fp32" else 0.999), cos
    if precision == "fp32":
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    counts = enc.token_counts(TEXTS)
    want = [len(ids) for ids in sentence_transformer.tokenizer(TEXTS, add_special_tokens=False)["input_ids"]]
    assert counts == [min(n, 256) for n in want]  # counted as truncated (what a batch computes)


def test_another_model_shape_falls_back_to_sentence_transformers(tmp_path: Path) -> None:
    """CLS pooling is not what the plain path computes: such a folder loads sentence-transformers."""
    dst = _folder_copy(tmp_path / "cls-pooled")
    _edit(dst / "1_Pooling" / "config.json", pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    assert plain_bert_spec(dst) is None
    enc = FrozenEncoder(EncoderConfig(model=str(dst)))
    assert enc.plain is None and enc.model is not None
    assert enc.encode(["owls hunt at night"]).shape == (1, 384)


def _folder_copy(dst: Path) -> Path:
    """The packaged MiniLM folder, its weights linked (plain_bert_spec reads only the small files)."""
    src = Path(resolve_model_path("all-MiniLM-L6-v2"))
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def _edit(path: Path, **fields) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(fields)
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("file, fields", [
    ("tokenizer_config.json", {"do_lower_case": False}),  # transformers rebuilds the normaliser from this
    ("tokenizer_config.json", {"truncation_side": "left"}),
    ("tokenizer_config.json", {"tokenizer_class": "RobertaTokenizer"}),
    ("sentence_bert_config.json", {"do_lower_case": True}),
    ("sentence_bert_config.json", {"tokenizer_args": {"model_max_length": 128}}),
    ("config.json", {"is_decoder": True}),
    ("config.json", {"torch_dtype": "float16"}),
    ("config.json", {"hidden_act": "gelu_new"}),
    ("1_Pooling/config.json", {"pooling_mode": "cls"}),  # sentence-transformers 6: wins over the old keys
])
def test_folders_whose_keys_would_differ_are_left_to_sentence_transformers(tmp_path: Path, file, fields) -> None:
    folder = _folder_copy(tmp_path / "model")
    assert plain_bert_spec(folder) is not None
    _edit(folder / file, **fields)
    assert plain_bert_spec(folder) is None


def test_making_a_key_imports_neither_sentence_transformers_nor_transformers() -> None:
    """Their imports take ~8 s here, more than a short generation; the default encoder needs neither."""
    import subprocess
    import sys

    code = ("import sys; from burrow.memory.encode import EncoderConfig, FrozenEncoder\n"
            "print(FrozenEncoder(EncoderConfig()).encode(['owls hunt at night']).shape)\n"
            "print(*(m in sys.modules for m in ('sentence_transformers', 'transformers', 'sklearn')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["(1, 384)", "False False False"], proc.stdout
