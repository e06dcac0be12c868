"""How `burrow` starts: the root and every command's --help, a mistyped command, `memory info` and a mistyped
path answer from modules that import neither torch nor FAISS (~0.4–1 s instead of ~3–4), and usage errors
are a usage line. Each import check runs `burrow.cli.main` in a fresh interpreter, where nothing is loaded yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from burrow.cli import main

HEAVY = ("torch", "faiss", "lm_eval", "fastapi", "sentence_transformers")


def fresh(argvs: list[list[str]],
          exit_code: int | None = 0) -> tuple[subprocess.CompletedProcess[str], dict[str, bool]]:
    """Run ``burrow ARGV`` for each of ``argvs`` in one fresh interpreter; each must exit with ``exit_code``
    (0: success or no exit; None: any). Returns the process and which of :data:`HEAVY` were imported."""
    check = {0: "assert not e.code, (argv, e.code)", None: "pass"}.get(
        exit_code, f"assert e.code == {exit_code}, (argv, e.code)")
    code = ("import sys; from burrow.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    sys.argv = ['burrow', *argv]\n"
            f"    try:\n        main()\n    except SystemExit as e:\n        {check}\n"
            + ("    else:\n        raise AssertionError(argv)\n" if exit_code else "")
            + f"print(*(m in sys.modules for m in {HEAVY!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    flags = proc.stdout.strip().splitlines()[-1].split()
    return proc, dict(zip(HEAVY, (f == "True" for f in flags), strict=True))


def test_the_root_lists_every_command_its_modules_register() -> None:
    """COMMANDS names each command's module; every command a module registers must be listed there."""
    from burrow.cli import COMMANDS, module_commands

    for module in set(COMMANDS.values()):
        assert {n for n, m in COMMANDS.items() if m == module} == set(module_commands(module)), module


def test_the_root_help_and_a_mistyped_command_import_neither_torch_nor_faiss() -> None:
    """`burrow --help` and `burrow trian` read the commands' own help lines and names from modules that
    import neither torch nor FAISS (~2.5 s); the typo still gets typer's suggestion."""
    import typer

    proc, loaded = fresh([["--help"], ["trian"]], exit_code=None)
    assert not loaded["torch"] and not loaded["faiss"], proc.stdout
    assert "train     Train a baseline" in proc.stdout and "No such command 'trian'" in proc.stderr
    if tuple(int(x) for x in typer.__version__.split(".")[:2]) >= (0, 20):  # typer's suggestions
        assert "Did you mean 'train'?" in proc.stderr, proc.stderr


def test_every_command_help_imports_neither_torch_nor_faiss() -> None:
    """A command's --help reads only config defaults (burrow.defaults, the components' config modules, lazy
    package namespaces): it answers in ~0.5 s, not the ~3 s of importing torch and FAISS."""
    from burrow.cli import COMMANDS, module_commands

    argvs = [[name, "--help"] for name in COMMANDS]
    for name, module in COMMANDS.items():
        group = module_commands(module)[name]
        argvs += [[name, sub, "--help"] for sub in getattr(group, "commands", {})]
    assert len(argvs) > len(COMMANDS)  # the groups' sub-commands are covered too
    proc, loaded = fresh(argvs)
    assert not any(loaded.values()), (loaded, proc.stdout[-2000:])


def test_memory_info_opens_a_memory_without_torch(make_memory) -> None:
    """Opening a memory (its manifests, token store, chunk table, key-shard checks) needs no encoder: the
    encoder, and torch with it, loads when keys are made. `burrow memory info` answers in ~0.7 s, not ~3."""
    memory = make_memory("info")
    proc, loaded = fresh([["memory", "info", str(memory.dir)]])
    assert "chunks" in proc.stdout and not loaded["torch"] and not loaded["faiss"], proc.stdout


def test_wrong_paths_are_one_line_before_torch_loads(make_memory, tmp_path: Path) -> None:
    """A mistyped memory, token store or RUN is refused by the torch-free open of what the command reads
    (~0.4 s), not after importing torch and the model code (~3 s); training leaves no run directory."""
    missing, mem = str(tmp_path / "missing"), str(make_memory("wrong-paths").dir)
    argvs = [["train", "--model", "retro-tiny", "--memory", missing, "-o", str(tmp_path / "run")],
             ["train", "--model", "tiny", "--tokens", missing, "-o", str(tmp_path / "run")],
             ["generate", missing, "Owls", "-m", mem], ["chat", missing, "-m", mem], ["serve", missing, "-m", mem],
             ["risks", missing, "-m", mem, "-o", str(tmp_path / "risks")],
             ["risks", missing, "-o", str(tmp_path / "risks")]]
    proc, loaded = fresh(argvs, exit_code=2)
    assert not loaded["torch"] and not loaded["faiss"], proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == len(argvs) and "Traceback" not in proc.stderr, proc.stderr
    assert "is not a memory directory" in errors[0] and "has no complete tokens" in errors[1]
    assert all("no such model or run directory" in line for line in errors[2:]), errors
    assert not (tmp_path / "run").exists() and not (tmp_path / "risks").exists()  # no report of "not measured" rows


@pytest.mark.parametrize("argv", [["demo", "--no-such-option"], ["no-such-command"], ["train"]])
def test_usage_errors_are_a_usage_line_not_a_traceback(argv, monkeypatch, capsys) -> None:
    # typer >= 0.22 raises its vendored click's exceptions: main() must recognise them as well as click's.
    monkeypatch.setattr(sys, "argv", ["burrow", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Error:" in err
