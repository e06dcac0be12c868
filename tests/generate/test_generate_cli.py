"""The command surface: `burrow generate --json`, the streamed terminal view, and `burrow chat` with piped stdin."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from burrow.cli import app
from burrow.generate import PREAMBLE, ChatConfig, ChatSession, Generator
from burrow.model import load_model

runner = CliRunner()


def test_generate_json(retro_dir, gen_memory, monkeypatch) -> None:
    warmed = []
    real = Generator.warm_up
    monkeypatch.setattr(Generator, "warm_up", lambda self: warmed.append(self) or real(self))
    out = runner.invoke(app, ["generate", str(retro_dir), "--memory", str(gen_memory.dir), "Owls hunt at night",
                              "--max-tokens", "20", "--seed", "3", "--top-p", "0.9", "--top-k", "40", "-k", "2",
                              "--json", "--precision", "fp32"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["seed"] == 3 and len(doc["tokens"]) == 20 and doc["finish_reason"] == "length"
    assert doc["chunks"] and all({"chunk", "text", "neighbours", "copied"} <= set(c) for c in doc["chunks"])
    assert any(nb["source"].endswith(".txt:line 1") for c in doc["chunks"] for nb in c["neighbours"])
    assert "".join(c["text"] for c in doc["chunks"]) == doc["text"]
    assert len(warmed) == 1  # the memory opened before the timed generation


def test_generate_streams_text_then_attributions(retro_dir, gen_memory) -> None:
    out = runner.invoke(app, ["generate", str(retro_dir), "--memory", str(gen_memory.dir), "Bread is baked",
                              "--max-tokens", "12", "--greedy"])
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("Bread is baked")
    assert "chunk " in out.stdout and "distance" in out.stdout


def test_generate_says_when_the_context_ends_it_early(gen_memory, tiny_config, tmp_path, burrow_cli) -> None:
    """Asked for more tokens than the context holds, the streamed view stopped short without a word (only --json's
    finish_reason said why)."""
    import torch

    from burrow.model import build_model, save_model

    torch.manual_seed(0)
    run = save_model(build_model(tiny_config(gen_memory.tokenizer.vocab_size, retro=False, max_seq_len=32)),
                     tmp_path / "short")
    code, out, err = burrow_cli("generate", run, "--memory", gen_memory.dir, "Owls", "--max-tokens", "40",
                                "--seed", "1")
    assert code == 0 and out.startswith("Owls")
    assert "of 40 tokens: the model's context (max_seq_len) is full" in err, err
    code, _, err = burrow_cli("generate", run, "--memory", gen_memory.dir, "Owls", "--max-tokens", "4", "--seed", "1")
    assert code == 0 and "max_seq_len" not in err


def test_generate_rejects_bad_options(retro_dir, gen_memory) -> None:
    from burrow.errors import BurrowError

    out = runner.invoke(app, ["generate", str(retro_dir), "--memory", str(gen_memory.dir), "x", "--top-p", "2"])
    assert isinstance(out.exception, BurrowError) and "top_p" in str(out.exception)


def test_chat_with_piped_stdin(retro_dir, gen_memory) -> None:
    out = runner.invoke(app, ["chat", str(retro_dir), "--memory", str(gen_memory.dir), "--max-tokens", "16",
                              "--seed", "1"], input="Hello there\n\nWhat is bread?\n/quit\nnever read\n")
    assert out.exit_code == 0, out.output
    assert out.stdout.count("Burrow:") == 2  # two messages answered; the blank line skipped; /quit ends
    assert "\nUser:" not in out.stdout and "error" not in out.stdout


def test_chat_prompt_has_the_dialogue_structure(retro_dir, gen_memory) -> None:
    session = ChatSession(Generator(load_model(retro_dir), gen_memory, device="cpu"), ChatConfig(seed=0,
                                                                                                max_new_tokens=8))
    assert session.config.generation(0).top_p == 0.8 and session.config.generation(0).stop == ("\nUser:",)
    for text in ("respectful", "polite", "inclusive", "truthful", "does not know", "User:", "Burrow:"):
        assert text in PREAMBLE
    first = session.ask("Hi")
    prompt = session.prompt_for("And now?")
    assert prompt.startswith(PREAMBLE)
    assert prompt.endswith(f"User: Hi\nBurrow: {first.text.strip()}\nUser: And now?\nBurrow:")
    assert "\nUser:" not in first.text


def test_chat_forgets_old_turns_to_fit_the_context(retro_dir, gen_memory) -> None:
    session = ChatSession(Generator(load_model(retro_dir), gen_memory, device="cpu"), ChatConfig(max_new_tokens=8))
    session.turns = [(f"question {i} " + "words " * 60, "answer") for i in range(10)]
    prompt = session.prompt_for("latest")
    assert "question 9" in prompt and "question 0" not in prompt
    assert len(gen_memory.tokenizer.encode(prompt)) < 1024


def test_chat_refuses_bad_options_and_a_context_without_room_at_the_start(retro_dir, gen_memory, burrow_cli,
                                                                          monkeypatch) -> None:
    """A bad --max-tokens or --top-p was an `error:` per message and exit 0; now one line before the model
    loads, exit 2. A model whose context the preamble fills is said once, not at every message."""
    import burrow.cli.generate
    import burrow.generate.chat
    from burrow.errors import BurrowError

    monkeypatch.setattr(burrow.cli.generate, "_generator", lambda *a: pytest.fail("loaded the model first"))
    for option in (["--max-tokens", "0"], ["--top-p", "0"], ["--temperature", "inf"], ["--seed", "-1"]):
        code, _, err = burrow_cli("chat", retro_dir, "--memory", gen_memory.dir, *option)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (option, err)
    gen = Generator(load_model(retro_dir), gen_memory, device="cpu")
    with pytest.raises(BurrowError, match="preamble leaves no room"):
        ChatSession(gen, ChatConfig(preamble="words " * 2000))
    assert burrow.generate.chat.ChatSession(gen, ChatConfig()).prompt_for("Hi").endswith("User: Hi\nBurrow:")


def test_chat_with_stdin_closed_ends_like_an_empty_input(retro_dir, gen_memory, burrow_cli, monkeypatch) -> None:
    """`burrow chat <&-`: Python's sys.stdin is None (it was an AttributeError traceback)."""
    monkeypatch.setattr("sys.stdin", None)
    code, out, err = burrow_cli("chat", retro_dir, "--memory", gen_memory.dir, "--max-tokens", "4")
    assert code == 0 and "Traceback" not in err and "Burrow:" not in out, err
