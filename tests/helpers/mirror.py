"""Mirror-mode test support: a conduit on real temp trees, listings, library rows.

Used by tests/integration/test_mirror_*.py and tests/property/test_mirror_*.py:
the same conduit is driven through the CLI in a subprocess (`sync_cli`) or
through the service API in-process (`sync_api`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.cli import run_cli, write_config

INTERNAL = ".conduitd"

# kind, mode bits, mtime_ns (None for directories: best effort), body
Listed = tuple[str, int, int | None, bytes | None]


@dataclass(frozen=True, slots=True)
class Mirror:
    """One mirror conduit named `name` on `source` → `target`."""

    tmp: Path
    source: Path
    target: Path
    state_dir: Path
    config: Path
    name: str = "m"

    def rewrite(self, **overrides: Any) -> Mirror:
        """Rewrite the config with other conduit keys (same roots, same name)."""
        write_mirror_config(self, **overrides)
        return self


def make_mirror(tmp: Path, *, create_target: bool = False, **overrides: Any) -> Mirror:
    source = tmp / "source"
    source.mkdir()
    target = tmp / "target"
    if create_target:
        target.mkdir()
    mirror = Mirror(tmp, source, target, tmp / "state", tmp / "conduitd.toml")
    write_mirror_config(mirror, **overrides)
    return mirror


def write_mirror_config(mirror: Mirror, **overrides: Any) -> None:
    conduit: dict[str, Any] = {
        "name": mirror.name,
        "source": str(mirror.source),
        "target": str(mirror.target),
        "mode": "mirror",
        "min_free": "1%",
    }
    conduit.update(overrides)
    write_config(mirror.config, mirror.state_dir, [conduit], log_level="warning")


def write(path: Path, data: bytes = b"x", *, mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


# ---------------------------------------------------------------- listings


def listing(root: Path, *, internal: bool = False) -> dict[str, Listed]:
    """Every entry under `root` (not `.conduitd/` unless `internal`), by path."""
    seen: dict[str, Listed] = {}
    for path in _walk(root, internal=internal):
        st = os.lstat(path)
        rel = os.fsdecode(os.path.relpath(path, root))
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            seen[rel] = ("dir", mode, None, None)
        elif stat.S_ISLNK(st.st_mode):
            seen[rel] = ("link", 0, st.st_mtime_ns, os.readlink(path).encode())
        else:
            seen[rel] = ("file", mode, st.st_mtime_ns, Path(path).read_bytes())
    return seen


def _walk(root: Path, *, internal: bool) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        if not internal and dirpath == str(root) and INTERNAL in dirnames:
            dirnames.remove(INTERNAL)
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def full_snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path (internal ones too) with its mode, size and mtime_ns."""
    seen: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        if not os.path.lexists(root):
            seen[str(root)] = (-1, -1, -1)
            continue
        for path in [str(root), *_walk(root, internal=True)]:
            st = os.lstat(path)
            seen[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


def data_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """`full_snapshot` of a root but for the mtime of `.conduitd/` itself.

    A run probes its roots' filesystems in `.conduitd/` (issue 8) before the
    brakes, so a refused run may change that directory's mtime; everything in
    it (marker, tmp, trash) and everything else must stay as it was.
    """
    seen = full_snapshot(root)
    seen.pop(str(root / INTERNAL), None)
    return seen


def tmp_entries(root: Path) -> list[str]:
    tmp = root / INTERNAL / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def trash_files(root: Path, generation: int | None = None) -> dict[str, bytes]:
    """Trashed files under `.conduitd/trash/[generation/]`, by path below it."""
    top = root / INTERNAL / "trash"
    if generation is not None:
        top = top / str(generation)
    found: dict[str, bytes] = {}
    if not top.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                found[str(path.relative_to(top))] = path.read_bytes()
    return found


# ----------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def document(self) -> Any:
        return json.loads(self.stdout)


def sync_cli(mirror: Mirror, *args: str, json_output: bool = True) -> CliRun:
    """`conduitd --config X sync NAME [args] [--json]` in a subprocess."""
    extra = ("--json",) if json_output else ()
    done: subprocess.CompletedProcess[str] = run_cli(
        "sync", mirror.name, *args, *extra, config=mirror.config
    )
    return CliRun(done.returncode, done.stdout, done.stderr)


def sync_here(mirror: Mirror, *args: str, json_output: bool = True) -> CliRun:
    """The same command line run in this process (click's test runner): the
    CLI's parsing, printing and exit codes without an interpreter start."""
    from click.testing import CliRunner

    from conduitd.cli import cli

    extra = ["--json"] if json_output else []
    argv = ["--config", str(mirror.config), "sync", mirror.name, *args, *extra]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    return CliRun(result.exit_code, result.stdout, result.stderr)


async def scan_both(mirror: Mirror, session: Any) -> tuple[int, int]:
    """Scan the mirror's source and target in a `writer_session`; return
    their location ids (source, target)."""
    ids = []
    for root in (mirror.source, mirror.target):
        row = await session.library.db.fetch_one(
            "SELECT id FROM location WHERE path = ?", (os.fsencode(root),)
        )
        assert row is not None
        ids.append(int(row[0]))
        await session.indexer.scan(ids[-1])
    return ids[0], ids[1]


async def sync_api(mirror: Mirror, *, force: bool = False, runner: Any = None) -> Any:
    """One one-shot run through the service API; returns the GenerationRecord."""
    from conduitd.config import load_config
    from conduitd.oneshot import writer_session
    from conduitd.sync.service import FileSyncService

    config = load_config(mirror.config)
    async with writer_session(config) as session:
        service = FileSyncService(
            session.library,
            session.tm,
            session.indexer,
            config,
            one_shot=True,
            runner=runner,
        )
        return await service.sync_now(mirror.name, force=force)


# ------------------------------------------------------------ library rows


def library_db(state_dir: Path) -> Path:
    found = sorted((state_dir / "libraries").glob("*/library.db"))
    assert len(found) == 1, found
    return found[0]


def query(state_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(f"file:{library_db(state_dir)}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def trash_rows(state_dir: Path) -> list[dict[str, Any]]:
    rows = query(
        state_dir,
        "SELECT generation, root, relative_path, trash_path, reason, size,"
        " content_id FROM sync_trash ORDER BY id",
    )
    return [
        {
            **dict(row),
            "relative_path": os.fsdecode(row["relative_path"]),
            "trash_path": os.fsdecode(row["trash_path"]),
        }
        for row in rows
    ]


def generation_rows(state_dir: Path, name: str = "m") -> list[dict[str, Any]]:
    """The conduit's `sync_generation` rows, oldest first."""
    return [
        dict(row)
        for row in query(
            state_dir,
            "SELECT g.generation, g.status, g.verification_status, g.completed_at,"
            " g.files_copied, g.files_deleted, g.metadata_updated,"
            " g.files_skipped, g.errors_encountered"
            " FROM sync_generation g JOIN sync_conduit c ON c.id = g.conduit_id"
            " WHERE c.name = ? ORDER BY g.generation",
            (name,),
        )
    ]
