"""Self-describing, atomically written artefacts.

Every directory burrow writes holds a ``manifest.json`` per stage (format version, config, counts,
dtypes, hashes of inputs). Files are written to a temporary name and moved into place with
``os.replace``, so a killed command never leaves a file that looks complete; a stage whose manifest
is present and matches is skipped on re-run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError, first_line

FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_beside(path.parent, f".{path.name}.", ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``dest``; on success it replaces ``dest`` as a whole.

    A killed writer leaves the previous ``dest`` (or, killed between the two renames, none), never half
    of one. Its leftovers are hidden folders named after this host and process; the next ``atomic_dir``
    of the same ``dest`` removes those whose process is gone from this host and in which nothing has
    been written for ``_STALE_SECONDS`` (another host's, or another PID namespace's under one host
    name, may still be writing on a shared disk: their files keep changing).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ours = f".{dest.name}.{_host()}-"  # this host's writers; then the process id
    for p in dest.parent.glob(ours + "*"):
        pid = p.name[len(ours):].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)) and time.time() - _newest_mtime(p) > _STALE_SECONDS:
            shutil.rmtree(p, ignore_errors=True)
    tag = f"{ours}{os.getpid()}."
    tmp = _new_beside(dest.parent, tag, ".tmp", folder=True)
    try:
        yield tmp
        old = None
        if dest.exists():  # os.replace cannot overwrite a non-empty folder: move it aside first
            old = _new_beside(dest.parent, tag, ".old", folder=True)
            os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None:
                os.replace(old, dest)  # the previous folder back in place
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _new_beside(parent: Path, prefix: str, suffix: str, folder: bool = False) -> Path:
    """A new empty file (or folder) ``parent/prefix<random>suffix`` with the permissions the umask gives, as any
    file the user writes (mkstemp's and mkdtemp's are the owner's alone, 0600 / 0700, which ``os.replace`` keeps:
    the other users of a shared disk could not read an artefact)."""
    while True:
        p = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            if folder:
                p.mkdir(0o777)
            else:
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return p


#: A dead writer's leftovers are swept once nothing in them has changed for this long.
_STALE_SECONDS = 600.0


def _newest_mtime(folder: Path) -> float:
    """The latest modification time of ``folder`` and everything in it (0 when it vanished meanwhile)."""
    newest = 0.0
    for p in (folder, *folder.rglob("*")):
        with contextlib.suppress(OSError):
            newest = max(newest, p.stat().st_mtime)
    return newest


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def removing_new_folders(path: str | Path) -> Iterator[None]:
    """Run a block that creates folder ``path``; if it fails, remove the folders it created and left empty.

    Only empty folders go (``path``'s empty sub-folders, ``path``, then the parents this block made), so
    a failed command leaves no empty output folder behind and never deletes anything finished.
    """
    path = Path(path)
    top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    try:
        yield
    except BaseException:
        if top is not None and path.is_dir():
            for d in sorted((d for d in path.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
        for p in (path, *path.parents):
            if top is None or not p.is_relative_to(top):
                break
            with contextlib.suppress(OSError):
                p.rmdir()  # fails, and is kept, when not empty
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Read JSON, turning a missing or corrupt file into a clear :class:`BurrowError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BurrowError(f"{path} not found; build that artefact first") from None
    except IsADirectoryError:
        raise BurrowError(f"{path} is a folder, not the JSON file expected there") from None
    except json.JSONDecodeError as e:
        raise BurrowError(f"{path} is corrupt ({e.msg}); delete it and re-run with --force") from None
    except UnicodeDecodeError:
        raise BurrowError(f"{path} is not UTF-8 text (corrupt); delete it and re-run with --force") from None


@contextlib.contextmanager
def damaged(path: str | Path, fix: str = "rebuild it (re-run the command that made it with --force)") -> Iterator[None]:
    """Turn a failure to read an artefact file (truncated, overwritten, not what it claims) into one line
    naming the file and what to do."""
    import zipfile

    try:
        yield
    except (ValueError, OSError, EOFError, RuntimeError, KeyError, IndexError, zipfile.BadZipFile) as e:
        if not Path(path).exists():  # a library's own "could not open" (FAISS: a RuntimeError) is no damage
            raise BurrowError(f"{path} is missing; {fix}") from None
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise BurrowError(f"cannot read {path}: {e.strerror or e}") from None
        raise BurrowError(f"{path} is damaged ({first_line(e)[:120]}); {fix}") from None


def check_out_dir(path: str | Path | None) -> Path | None:
    """``path`` as an output folder, refused up front (before any work) where it, or a folder above it,
    is a file."""
    if path is None:
        return None
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise BurrowError(f"{p} is a file; the output must be a folder (give another -o)")
            break
    return path


def write_manifest(directory: str | Path, kind: str, **fields: Any) -> dict[str, Any]:
    """Write ``manifest.json`` (or ``<kind>.manifest.json`` for sub-stages) marking a stage complete."""
    manifest = {"kind": kind, "format_version": FORMAT_VERSION, **fields}
    write_json(manifest_path(directory, kind), manifest)
    return manifest


def manifest_path(directory: str | Path, kind: str) -> Path:
    """Where the manifest of stage ``kind`` lives inside ``directory``."""
    return Path(directory) / f"{kind}.manifest.json"


def read_manifest(directory: str | Path, kind: str) -> dict[str, Any] | None:
    """Return a stage's manifest, or ``None`` when that stage has not completed."""
    path = manifest_path(directory, kind)
    if not path.exists():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise BurrowError(f"{path} is corrupt (not a JSON object); delete it and re-run with --force")
    if manifest.get("kind") != kind:
        raise BurrowError(f"{path} describes a {manifest.get('kind')!r}, not a {kind!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BurrowError(
            f"{path} has format version {manifest.get('format_version')}, this burrow reads "
            f"{FORMAT_VERSION}; rebuild it with --force"
        )
    return manifest


def files_id(path: str | Path) -> list[list[Any]]:
    """[name relative to ``path``, size, mtime] of the file ``path`` or of every file under the folder ``path``
    (none when nothing is there): a cheap identity of inputs read whole, for cache keys, without hashing them
    (lists, so that a key read back from JSON compares equal)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    out = []
    for f in files:
        st = f.stat()
        out.append([f.name if f == path else str(f.relative_to(path)), st.st_size, st.st_mtime_ns])
    return out


def require_model_path(path: str | Path) -> Path:
    """``path`` as a Path; a :class:`BurrowError` when nothing is there (a mistyped model or run directory),
    said the same way by every command, with or without torch loaded."""
    p = Path(path)
    if not p.exists():
        raise BurrowError(f"{p}: no such model or run directory")
    return p


def require_manifest(directory: str | Path, kind: str) -> dict[str, Any]:
    """Like :func:`read_manifest` but a missing stage is an error that says what to run."""
    manifest = read_manifest(directory, kind)
    if manifest is None:
        raise BurrowError(f"{directory} has no complete {kind} (no {kind}.manifest.json); build it first")
    return manifest


def check_out_not(path: str | Path, kinds: Sequence[tuple[str, Sequence[str]]], writes: str) -> Path:
    """``path`` as an output folder, refused (before any work) where one of ``kinds``' marker files or folders
    (``(what, names)``, e.g. ``("a memory", ("memory.manifest.json",))``) shows it is another artefact, which
    what the command ``writes`` would overwrite (`train -o RUN/final` left the model unusable)."""
    p = Path(path)
    for what, marks in kinds:
        found = next((m for m in marks if (p / m).exists()), None)
        if found is not None:
            raise BurrowError(f"{p} is {what} (it holds {found}); {writes} would overwrite its files: "
                              "give -o a new folder")
    return p


def file_as_recorded(path: str | Path, record: dict[str, Any] | None) -> bool:
    """Whether ``path`` is a file of the size its manifest ``record`` wrote (a record from before sizes were
    recorded trusts the file)."""
    path = Path(path)
    return record is not None and path.is_file() and record.get("bytes", path.stat().st_size) == path.stat().st_size


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    """Hex SHA-256 of a file (of its first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while True:
            size = 1 << 20 if remaining is None else min(1 << 20, remaining)
            block = f.read(size)
            if not block:
                break
            h.update(block)
            if remaining is not None:
                remaining -= len(block)
                if remaining <= 0:
                    break
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable config."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
