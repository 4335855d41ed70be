"""The three seed tables match the seed SQL column for column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conduitd.storage.library import open_library

SEED_FSYNC_002 = """
CREATE TABLE entry (id INTEGER PRIMARY KEY);
CREATE TABLE sync_conduit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL UNIQUE,
    source_entry_id INTEGER NOT NULL,
    target_entry_id INTEGER NOT NULL,
    sync_mode TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    schedule TEXT NOT NULL DEFAULT 'manual',
    use_index_rules INTEGER NOT NULL DEFAULT 1,
    index_mode_override TEXT,
    parallel_transfers INTEGER NOT NULL DEFAULT 3,
    bandwidth_limit_mbps INTEGER,
    last_sync_completed_at TEXT,
    sync_generation INTEGER NOT NULL DEFAULT 0,
    last_sync_error TEXT,
    total_syncs INTEGER NOT NULL DEFAULT 0,
    files_synced INTEGER NOT NULL DEFAULT 0,
    bytes_transferred INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (source_entry_id) REFERENCES entry(id) ON DELETE CASCADE,
    FOREIGN KEY (target_entry_id) REFERENCES entry(id) ON DELETE CASCADE
);
CREATE INDEX idx_sync_conduit_enabled ON sync_conduit(enabled);
CREATE TABLE sync_generation (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conduit_id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    files_copied INTEGER NOT NULL DEFAULT 0,
    files_deleted INTEGER NOT NULL DEFAULT 0,
    conflicts_resolved INTEGER NOT NULL DEFAULT 0,
    bytes_transferred INTEGER NOT NULL DEFAULT 0,
    errors_encountered INTEGER NOT NULL DEFAULT 0,
    verified_at TEXT,
    verification_status TEXT NOT NULL DEFAULT 'unverified',
    FOREIGN KEY (conduit_id) REFERENCES sync_conduit(id) ON DELETE CASCADE
);
CREATE INDEX idx_sync_generation_conduit ON sync_generation(conduit_id, generation);
"""

SEED_LSYNC_008 = """
CREATE TABLE sync_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sequence INTEGER NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    model_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    change_type TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    data TEXT NOT NULL
);
CREATE INDEX idx_sync_log_sequence ON sync_log(sequence);
CREATE INDEX idx_sync_log_device ON sync_log(device_id);
CREATE INDEX idx_sync_log_model_record ON sync_log(model_type, record_id);
CREATE INDEX idx_sync_log_timestamp ON sync_log(timestamp);
"""


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[object, ...]]:
    rows = conn.execute(f"PRAGMA table_info({table})").fetchall()
    # (cid, name, type, notnull, dflt_value, pk): compare all but the position.
    return {r[1]: (r[2], r[3], r[4], r[5]) for r in rows}


def _indexes(conn: sqlite3.Connection, table: str) -> dict[str, tuple[object, ...]]:
    found = {}
    for _, name, unique, origin, _partial in conn.execute(
        f"PRAGMA index_list({table})"
    ):
        columns = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
        key = name if origin == "c" else f"{origin}:{columns}"
        found[key] = (unique, origin, columns)
    return found


def _foreign_keys(conn: sqlite3.Connection, table: str) -> set[tuple[object, ...]]:
    rows = conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()
    # (id, seq, table, from, to, on_update, on_delete, match)
    return {(r[2], r[3], r[4], r[5], r[6]) for r in rows}


def _assert_contains_seed(ours: sqlite3.Connection, seed_sql: str, table: str) -> None:
    seed = sqlite3.connect(":memory:")
    seed.executescript(seed_sql)
    seed_columns, our_columns = _columns(seed, table), _columns(ours, table)
    for name, shape in seed_columns.items():
        assert our_columns.get(name) == shape, f"{table}.{name} differs from the seed"
    seed_indexes, our_indexes = _indexes(seed, table), _indexes(ours, table)
    for name, shape in seed_indexes.items():
        assert our_indexes.get(name) == shape, f"{table} index {name} differs"
    assert _foreign_keys(seed, table) <= _foreign_keys(ours, table)


@pytest.fixture
async def library_files(tmp_path: Path) -> tuple[Path, Path]:
    library = await open_library(tmp_path / "state")
    await library.close()
    return library.directory / "library.db", library.directory / "sync.db"


@pytest.mark.parametrize("table", ["sync_conduit", "sync_generation"])
async def test_fsync_002_tables_match_the_seed(
    library_files: tuple[Path, Path], table: str
) -> None:
    ours = sqlite3.connect(library_files[0])
    _assert_contains_seed(ours, SEED_FSYNC_002, table)


async def test_sync_log_matches_lsync_008(library_files: tuple[Path, Path]) -> None:
    ours = sqlite3.connect(library_files[1])
    _assert_contains_seed(ours, SEED_LSYNC_008, "sync_log")


async def test_library_db_runs_in_wal_with_every_design_table(
    library_files: tuple[Path, Path],
) -> None:
    conn = sqlite3.connect(library_files[0])
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    expected = {
        "location",
        "entry",
        "sync_conduit",
        "sync_generation",
        "sync_baseline",
        "sync_conflict",
        "sync_leadership",
        "sync_outbox",
        "sync_trash",
    }
    assert expected <= tables
    applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert (1,) in applied
