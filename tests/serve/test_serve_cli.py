"""`burrow serve` wires the run, memory and limits into the app and listens on loopback by default."""

from __future__ import annotations

from typer.testing import CliRunner

from burrow.cli import app


def test_serve_builds_the_app_with_limits_on_loopback(retro_dir, gen_memory, monkeypatch) -> None:
    import burrow.serve

    seen = {}
    monkeypatch.setattr(burrow.serve, "run_server", lambda a, host, port: seen.update(app=a, host=host, port=port))
    out = CliRunner().invoke(app, ["serve", str(retro_dir), "--memory", str(gen_memory.dir), "--port", "8123",
                                   "--max-concurrent", "3", "--max-tokens", "50", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    limiter, service = seen["app"].state.limiter, seen["app"].state.service
    assert limiter.limit == 3 and service.config.max_new_tokens == 50 and service.generator.retro
