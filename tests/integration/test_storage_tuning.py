"""A process's connection tuning reaches every connection it opens afterwards:
the library's own and a scan's read-only one; the daemon's default is
SQLite's."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from conduitd.storage.database import (
    LONG_LIVED,
    SHORT_LIVED,
    ConnectionTuning,
    Database,
    connection_tuning,
    tuned_connections,
)
from conduitd.storage.entries import EntryReader
from helpers.cli import conduitd_env

pytestmark = pytest.mark.anyio


def _tuning_of(conn: sqlite3.Connection) -> ConnectionTuning:
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    (mmap,) = conn.execute("PRAGMA mmap_size").fetchone()
    return ConnectionTuning(cache_kib=-cache, mmap_bytes=mmap)


async def _database_tuning(path: Path) -> ConnectionTuning:
    db = await Database.open(path)
    try:
        cache = await db.fetch_one("PRAGMA cache_size")
        mmap = await db.fetch_one("PRAGMA mmap_size")
        assert cache is not None
        assert mmap is not None
        return ConnectionTuning(cache_kib=-cache[0], mmap_bytes=mmap[0])
    finally:
        await db.close()


async def test_the_long_lived_tuning_is_sqlites_default(tmp_path: Path) -> None:
    with tuned_connections(LONG_LIVED):
        assert await _database_tuning(tmp_path / "a.db") == LONG_LIVED
    with closing(sqlite3.connect(tmp_path / "plain.db")) as plain:
        assert _tuning_of(plain) == LONG_LIVED


async def test_a_short_lived_process_tunes_every_connection(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with closing(sqlite3.connect(path)) as setup:
        setup.execute("CREATE TABLE t (x)")
    before = connection_tuning()
    with tuned_connections(SHORT_LIVED):
        assert await _database_tuning(path) == SHORT_LIVED
        with closing(EntryReader(path, location_id=1)) as reader:
            assert _tuning_of(reader._connection()) == SHORT_LIVED
    assert connection_tuning() == before
    with tuned_connections(LONG_LIVED):
        assert await _database_tuning(path) == LONG_LIVED


def test_the_process_default_is_long_lived() -> None:
    """The daemon opens its connections without choosing: SQLite's defaults."""
    code = (
        "from conduitd.storage.database import LONG_LIVED, connection_tuning;"
        "assert connection_tuning() == LONG_LIVED"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=conduitd_env())
