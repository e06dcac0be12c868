"""The chunk layout is one: a RETRO trained to copy from a twin shows its gain through `burrow eval`.

Twin corpus: every document appears twice (two files, so two documents), made of random common words
that no small model can predict. In training, same-document exclusion leaves each chunk's nearest
neighbour the *same chunk of its twin*, whose continuation is the text to predict; a RETRO learns to
copy it. Evaluated on copies of some documents through the user's path (`burrow eval`, its CLI), its
RETRO[ON] must then be far below its RETRO[OFF]. With training and evaluation cutting documents one
token apart (wave 1), the evaluation's queries were never the memory's chunks and the copying frame
was off by one: RETRO[ON] stayed level with RETRO[OFF].
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

WORDS = ("river valley farmer owl night mouse grass ship rock radar museum glacier peak violin string bow bee "
         "pollen flower honey hive press book europe people king castle bread oven crust comet tail sun chess "
         "piece board game snow winter market city bridge train station garden apple tree stone wall door").split()


def _twin_corpus(directory, n_docs: int = 24, words: int = 70, seed: int = 0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    texts = []
    for d in range(n_docs):
        text = " ".join(rng.choice(WORDS, size=words)) + "."
        texts.append(text)
        for copy in ("a", "b"):
            (directory / f"doc{d:02d}{copy}.txt").write_text(text + "\n", encoding="utf-8")
    return texts


@pytest.mark.e2e
def test_twin_trained_retro_gains_through_burrow_eval(tmp_path, encoder) -> None:
    from burrow.data.tokenizer import TokenizerConfig
    from burrow.memory.build import MemoryConfig, build_memory, compute_neighbours
    from burrow.memory.encode import EncoderConfig
    from burrow.train import TrainConfig, train

    texts = _twin_corpus(tmp_path / "corpus")
    config = MemoryConfig(tokenizer=TokenizerConfig(vocab_size=300), encoder=EncoderConfig(shard_size=256),
                          chunk_size=8)
    memory, _ = build_memory([str(tmp_path / "corpus")], tmp_path / "mem", config, progress=False, encoder=encoder)
    compute_neighbours(memory, k=2, progress=False)
    model = tmp_path / "model.toml"
    model.write_text('preset = "retro-tiny"\nd_model = 64\nn_layers = 2\nn_heads = 2\nhead_dim = 32\n'
                     "cca_layers = [1, 2]\nenc_d_model = 64\nenc_n_heads = 2\nenc_head_dim = 32\n"
                     "zero_init_cca_out = false\n", encoding="utf-8")
    train(TrainConfig(model=str(model), memory=memory.dir, out=tmp_path / "run", steps=400, batch_size=8,
                      seq_len=64, lr=3e-3, eval_every=0, progress=False, precision="fp32"))
    valid = tmp_path / "valid.jsonl"
    valid.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:6]), encoding="utf-8")

    from burrow.cli.evaluate import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--memory", str(memory.dir), "--data", str(valid),
                                   "--k", "2", "--seq-len", "64", "--precision", "fp32", "-o", str(out)])
    assert res.exit_code == 0, res.output
    models = json.loads((out / "eval.json").read_text())["models"]
    on, off = models["run [ON]"]["bpb"], models["run [OFF]"]["bpb"]
    # the retrieved twin holds the continuation: copying it must cut the cost by far more than noise
    assert on < 0.6 * off, (on, off)
