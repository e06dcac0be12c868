"""Atomic folders: a finished write replaces the old folder whole, a failed one keeps it, a killed one's
leftovers are swept by the next write."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from burrow.artefacts import _host, atomic_dir


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_finished_write_replaces_the_folder_and_a_failed_one_keeps_it(tmp_path: Path) -> None:
    dest = tmp_path / "index"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(dest) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("killed halfway")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    assert _hidden(tmp_path) == []


def test_leftovers_of_gone_processes_of_this_host_are_swept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that has exited
    leftovers = [f".index.{_host()}-{gone}.x1.tmp", f".index.{_host()}-{gone}.x2.old"]
    kept = [f".index.{_host()}-1.x3.tmp",  # a live process (init) may still be writing
            ".index.otherhost-12.x4.tmp",  # another machine on a shared disk
            f".index2.{_host()}-{gone}.x5.tmp"]  # another folder's
    recent = f".index.{_host()}-{gone}.x6.tmp"  # a process gone here, but its files still change: another
    kept.append(recent)                          # PID namespace under the same host name may be writing
    for name in leftovers + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "part").write_text("x")
        if name != recent:
            for p in (tmp_path / name / "part", tmp_path / name):
                os.utime(p, (time.time() - 3600, time.time() - 3600))  # untouched for an hour
    with atomic_dir(tmp_path / "index") as tmp:
        (tmp / "a").write_text("1")
    assert _hidden(tmp_path) == sorted(kept)


def test_a_failed_move_puts_the_previous_folder_back(tmp_path: Path, monkeypatch) -> None:
    import burrow.artefacts as artefacts

    dest = tmp_path / "index"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("1")
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the new folder onto its place
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(artefacts.os, "replace", second_fails)
    with pytest.raises(OSError, match="disk gone"), atomic_dir(dest) as tmp:
        (tmp / "b").write_text("2")
    monkeypatch.setattr(artefacts.os, "replace", real)
    assert sorted(p.name for p in dest.iterdir()) == ["a"]


def test_artefacts_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    """mkstemp/mkdtemp make their files 0600 and folders 0700, and os.replace kept that: every manifest, index,
    key shard and model burrow wrote was unreadable to the other users of a shared disk (a team's memory)."""
    from burrow.artefacts import atomic_path, write_json

    before = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "index") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(before)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "index").stat().st_mode & 0o777 == 0o755
    assert _hidden(tmp_path) == []
