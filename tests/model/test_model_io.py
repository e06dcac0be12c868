"""Save -> load gives identical logits; config JSON round trip and validation (paper point f)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from burrow.errors import BurrowError
from burrow.model import ModelConfig, build_model, load_model, save_model
from burrow.presets import get_preset


@pytest.mark.parametrize("name,tie", [("tiny", True), ("retro-tiny", False)])
def test_save_load_gives_identical_logits(tmp_path: Path, name: str, tie: bool) -> None:
    cfg = get_preset(name, vocab_size=50, d_model=64, n_heads=4, head_dim=16, enc_d_model=32,
                     enc_n_heads=2, enc_head_dim=16, chunk_size=4, retrieved_len=8, tie_embeddings=tie,
                     zero_init_cca_out=False)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert loaded.config == cfg
    tokens = torch.randint(0, 50, (2, 10))
    nb = torch.randint(0, 50, (2, 3, 2, 8)) if cfg.retro else None
    with torch.no_grad():
        assert torch.equal(loaded(tokens, neighbours=nb), model(tokens, neighbours=nb))
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "model.manifest.json").exists()


def test_config_round_trip_and_validation() -> None:
    cfg = get_preset("retro-cpu-small", vocab_size=1234)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BurrowError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(BurrowError, match="cca_layers"):
        ModelConfig(retro=True, n_layers=4, cca_layers=(5,))
    with pytest.raises(BurrowError, match="retro is false"):
        ModelConfig(cca_layers=(2,))
    with pytest.raises(BurrowError):
        ModelConfig(d_model=0)


def test_load_model_rejects_a_non_model_directory(tmp_path: Path) -> None:
    with pytest.raises(BurrowError, match="no model.safetensors"):
        load_model(tmp_path)


def test_weights_of_another_shape_than_config_json_are_one_error(tmp_path: Path) -> None:
    """config.json edited (or weights copied from another model) so a weight's shape differs: one BurrowError
    naming the first mismatch, not load_state_dict's many-line RuntimeError."""
    import json

    cfg = get_preset("tiny", vocab_size=64, d_model=32, n_layers=1, n_heads=2, head_dim=16, max_seq_len=32)
    save_model(build_model(cfg), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = 80
    (tmp_path / "m" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(BurrowError, match="does not match its config.json .*size mismatch") as info:
        load_model(tmp_path / "m")
    assert "\n" not in str(info.value)


def test_weights_changed_in_place_are_found_by_their_recorded_hash(tmp_path: Path) -> None:
    """Bytes overwritten inside model.safetensors without changing its size loaded silently and failed later
    (NaN probabilities in generate, "window plan is broken" in eval); the SHA-256 recorded at save time
    finds them, and NaN or infinite weights are refused where there is no record to compare with."""
    from safetensors.torch import save_model as save_weights

    cfg = get_preset("tiny", vocab_size=64, d_model=32, n_layers=1, n_heads=2, head_dim=16, max_seq_len=32)
    model = build_model(cfg)
    d = save_model(model, tmp_path / "m")
    load_model(d)  # as saved: loads
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = b"\x7f" * 64  # inside the last tensor's data: the header still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(BurrowError, match="damaged or truncated .*SHA-256"):
        load_model(d)
    (d / "model.manifest.json").unlink()  # no record: the values themselves are checked
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    save_weights(model, str(weights))
    with pytest.raises(BurrowError, match="norm.weight holds NaN or infinite values"):
        load_model(d)


def test_weights_id_names_what_load_run_loads(tmp_path: Path) -> None:
    """Cache keys (tasks, risks) follow the weights that load: final/, else the newest checkpoint."""
    import shutil

    from burrow.model.io import STATE_FILE, weights_id

    cfg = get_preset("tiny", vocab_size=50, d_model=32, n_heads=2, head_dim=16, n_layers=1, chunk_size=4)
    run = tmp_path / "run"
    for step in (1, 2):
        torch.manual_seed(step)
        save_model(build_model(cfg), run / "checkpoints" / f"step_{step:06d}")
        (run / "checkpoints" / f"step_{step:06d}" / STATE_FILE).write_bytes(b"state")
    newest = weights_id(run)
    assert newest[0] == "step_000002" and newest != weights_id(run / "checkpoints" / "step_000001")
    shutil.copytree(run / "checkpoints" / "step_000002", run / "final")
    assert weights_id(run) == ["final", newest[1]]
    torch.manual_seed(9)
    save_model(build_model(cfg), run / "final")  # retrained: another id
    assert weights_id(run)[1] != newest[1]
    assert weights_id("smollm2") == "smollm2"  # a name, not a path
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"12345")
    assert weights_id(plain) == [["weights.bin", 5, (plain / "weights.bin").stat().st_mtime_ns]]


def test_a_save_killed_after_the_weights_never_loads_with_the_previous_config(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """save_model over a model directory replaced the weights, then config.json: killed between the two, the
    new weights loaded with the previous model's config.json (same shapes, another chunk size) as complete."""
    import burrow.model.io as io

    cfg = get_preset("retro-tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=2, head_dim=16, enc_d_model=32,
                     enc_n_heads=2, enc_head_dim=16, chunk_size=4, retrieved_len=8, max_seq_len=32, cca_layers=(2,))
    save_model(build_model(cfg), tmp_path / "m")
    other = ModelConfig.from_dict({**cfg.to_dict(), "chunk_size": 8, "retrieved_len": 8})

    def killed(path, obj) -> None:
        raise KeyboardInterrupt  # the process killed before config.json is written

    monkeypatch.setattr(io, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(build_model(other), tmp_path / "m")
    monkeypatch.undo()
    with pytest.raises(BurrowError, match="no config.json .*save the model again"):
        load_model(tmp_path / "m")


def test_a_config_json_this_version_cannot_build_says_why(tmp_path: Path) -> None:
    """A config.json that parses but is no config this burrow builds (a newer burrow's field, a bad value) was
    reported as "damaged or truncated (not valid JSON)"; the error names the file and what is wrong with it."""
    import json

    cfg = get_preset("tiny", vocab_size=64, d_model=32, n_layers=1, n_heads=2, head_dim=16, max_seq_len=32)
    save_model(build_model(cfg), tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for data, why in (({**config, "sliding_window": 8}, "unknown model config keys .*newer burrow"),
                      ({**config, "head_dim": 15}, "head_dim must be even"), ([1, 2], "not a model config")):
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(BurrowError, match=why) as info:
            load_model(tmp_path / "m")
        assert str(path) in str(info.value) and "not valid JSON" not in str(info.value)
    path.write_text("{", encoding="utf-8")  # truncated: still the damaged-file message
    with pytest.raises(BurrowError, match="damaged or truncated .*not valid JSON"):
        load_model(tmp_path / "m")
