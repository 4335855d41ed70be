"""Migrations of sync.db: the sync log of seed LSYNC-008, column for column."""

from __future__ import annotations

from typing import Final

from conduitd.storage.migrations import Migration

INITIAL: Final = """
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

# Issue 3: the outbox drainer's idempotence and the leader fence. `origin` names
# one incarnation of library.db (a rebuilt library.db restarts its outbox ids),
# `origin_outbox_id` the outbox row an entry came from; `sync_log_meta` holds
# per-origin drain high-water marks and the highest leader term that appended.
OUTBOX_ORIGIN: Final = """
ALTER TABLE sync_log ADD COLUMN origin TEXT;
ALTER TABLE sync_log ADD COLUMN origin_outbox_id INTEGER;
CREATE UNIQUE INDEX idx_sync_log_origin ON sync_log(origin, origin_outbox_id);
CREATE TABLE sync_log_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

SYNCLOG_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "sync_log table (LSYNC-008)", INITIAL),
    Migration(101, "sync_log outbox origin and leader fence", OUTBOX_ORIGIN),
)
