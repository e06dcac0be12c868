"""A tiny memory (8-token chunks, self neighbours k = 2) and tiny model TOMLs, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SENTENCES = [
    "The river floods the valley every spring and farmers plant rice in the wet fields.",
    "Owls hunt at night, turning their heads to hear the smallest mouse in the grass.",
    "The old lighthouse guided ships past the rocks until radar made it a museum.",
    "Glaciers carve deep valleys as they slide slowly down from the mountain peaks.",
    "A violin has four strings tuned in fifths and is played with a bow of horsehair.",
    "Bees carry pollen between flowers and turn nectar into honey inside the hive.",
    "The printing press spread books across Europe and changed how people learned.",
]


def write_train_corpus(directory: Path) -> Path:
    """Ten documents of 2..7 sentences each (lengths that leave short last chunks)."""
    directory.mkdir(parents=True, exist_ok=True)
    for d in range(10):
        n = 2 + d % 6
        text = "\n".join(SENTENCES[(d + i) % len(SENTENCES)] for i in range(n))
        (directory / f"doc{d}.txt").write_text(f"Document {d}.\n{text}\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def train_memory(tmp_path_factory: pytest.TempPathFactory, encoder):
    """A built memory with its 'self' neighbour table (k = 2), same-document exclusion applied."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig, build_memory, compute_neighbours
    from burrow.memory.encode import EncoderConfig

    root = tmp_path_factory.mktemp("train")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=64),
                          chunk_size=8)
    memory, _ = build_memory([str(write_train_corpus(root / "corpus"))], root / "mem", config, progress=False,
                             encoder=encoder)
    compute_neighbours(memory, k=2, progress=False)
    return memory


def write_model_toml(path: Path, retro: bool, dropout: float = 0.0, chunk_size: int | None = None) -> str:
    """A model small enough to train in well under a second per step (``chunk_size``: set m explicitly)."""
    preset = "retro-tiny" if retro else "tiny"
    extra = "cca_layers = [2]\nenc_d_model = 32\nenc_n_heads = 2\nenc_head_dim = 16\nzero_init_cca_out = false\n"
    path.write_text(f'preset = "{preset}"\nd_model = 32\nn_layers = 2\nn_heads = 2\nhead_dim = 16\n'
                    f"dropout = {dropout}\n" + (f"chunk_size = {chunk_size}\n" if chunk_size else "")
                    + (extra if retro else ""), encoding="utf-8")
    return str(path)


@pytest.fixture
def model_toml():
    """:func:`write_model_toml`, as a fixture (test modules cannot import a conftest reliably)."""
    return write_model_toml
