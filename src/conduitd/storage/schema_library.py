"""Migrations of library.db. Forward-only: never edit a released entry, add one.

`sync_conduit` and `sync_generation` carry the seed SQL (FSYNC-002) column for
column; extra columns follow the seed's, as DESIGN.md allows.
"""

from __future__ import annotations

from typing import Final

from conduitd.storage.migrations import Migration

INITIAL: Final = """
CREATE TABLE library_info (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE location (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    entry_id INTEGER,
    name TEXT NOT NULL,
    path BLOB NOT NULL,
    st_dev INTEGER,
    root_inode INTEGER,
    index_mode TEXT NOT NULL DEFAULT 'deep',
    state TEXT NOT NULL DEFAULT 'scanning',
    index_lost INTEGER NOT NULL DEFAULT 0,
    last_scan_at TEXT,
    total_file_count INTEGER NOT NULL DEFAULT 0,
    total_byte_size INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (device_id, path)
);

CREATE TABLE entry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    location_id INTEGER NOT NULL,
    parent_id INTEGER,
    name BLOB NOT NULL,
    relative_path BLOB NOT NULL,
    kind INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    ctime_ns INTEGER NOT NULL DEFAULT 0,
    inode INTEGER NOT NULL DEFAULT 0,
    mode INTEGER NOT NULL DEFAULT 0,
    content_id TEXT,
    symlink_target BLOB,
    unreadable INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (location_id) REFERENCES location(id) ON DELETE CASCADE,
    UNIQUE (location_id, relative_path)
);
CREATE INDEX idx_entry_parent ON entry(location_id, parent_id);

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
    name TEXT NOT NULL UNIQUE,
    paused INTEGER NOT NULL DEFAULT 0,
    last_checked_at TEXT,
    version INTEGER NOT NULL DEFAULT 1,
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
    metadata_updated INTEGER NOT NULL DEFAULT 0,
    files_skipped INTEGER NOT NULL DEFAULT 0,
    conflicts_pending INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'running',
    uuid BLOB,
    version INTEGER NOT NULL DEFAULT 1,
    FOREIGN KEY (conduit_id) REFERENCES sync_conduit(id) ON DELETE CASCADE
);
CREATE INDEX idx_sync_generation_conduit ON sync_generation(conduit_id, generation);

CREATE TABLE sync_baseline (
    conduit_id INTEGER NOT NULL,
    relative_path BLOB NOT NULL,
    kind INTEGER NOT NULL,
    content_id TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    mode INTEGER NOT NULL DEFAULT 0,
    symlink_target BLOB,
    generation INTEGER NOT NULL,
    PRIMARY KEY (conduit_id, relative_path),
    FOREIGN KEY (conduit_id) REFERENCES sync_conduit(id) ON DELETE CASCADE
);

CREATE TABLE sync_conflict (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid BLOB NOT NULL UNIQUE,
    conduit_id INTEGER NOT NULL,
    relative_path BLOB NOT NULL,
    detected_generation INTEGER NOT NULL,
    detected_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    source_kind INTEGER,
    source_size INTEGER,
    source_mtime_ns INTEGER,
    source_content_id TEXT,
    target_kind INTEGER,
    target_size INTEGER,
    target_mtime_ns INTEGER,
    target_content_id TEXT,
    resolution TEXT,
    resolved_at TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    FOREIGN KEY (conduit_id) REFERENCES sync_conduit(id) ON DELETE CASCADE
);
CREATE INDEX idx_sync_conflict_conduit ON sync_conflict(conduit_id, status);

CREATE TABLE sync_leadership (
    library BLOB PRIMARY KEY,
    holder_device_id TEXT NOT NULL,
    term INTEGER NOT NULL,
    lease_expires_at TEXT NOT NULL
);

CREATE TABLE sync_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    model_type TEXT NOT NULL,
    record_id TEXT NOT NULL,
    change_type TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    data TEXT NOT NULL
);

CREATE TABLE sync_trash (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conduit_id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    root TEXT NOT NULL,
    relative_path BLOB NOT NULL,
    trash_path BLOB NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    content_id TEXT,
    trashed_at TEXT NOT NULL,
    FOREIGN KEY (conduit_id) REFERENCES sync_conduit(id) ON DELETE CASCADE
);
CREATE INDEX idx_sync_trash_conduit ON sync_trash(conduit_id, generation);
"""

# Index (issue 4): whether conduitd ever wrote this root's `.conduitd/marker`.
# A root that had a marker and lost it is unmounted, not emptied (DESIGN Data).
LOCATION_MARKER_FLAG: Final = """
ALTER TABLE location ADD COLUMN has_marker INTEGER NOT NULL DEFAULT 0;
"""

# Index (issue 4): a digest of a directory's listing as last indexed (names and
# lstat metadata of its children). An unchanged rescan compares it with the
# digest of the live listing and skips loading and comparing the children's
# rows. NULL when unknown (see LISTING_DIGEST_SUMS).
ENTRY_LISTING_DIGEST: Final = """
ALTER TABLE entry ADD COLUMN listing_digest BLOB;
"""

# Index (issue 4): serves a scan's first query, the directory rows of a location
# (`kind = 1` literally in the query, so that the partial index applies).
ENTRY_DIRECTORY_INDEX: Final = """
CREATE INDEX idx_entry_directories ON entry(location_id, relative_path)
    WHERE kind = 1;
"""

# One-shot runs (issue 5 bench): a location's index version moves with every
# batch of entry writes; a conduit's agreement records the versions at which
# verification found both sides agreeing. A one-shot run whose fresh scans
# left both versions there has nothing to compare (see sync/agreement.py).
INDEX_AGREEMENT: Final = """
CREATE TABLE index_version (
    location_id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    FOREIGN KEY (location_id) REFERENCES location(id) ON DELETE CASCADE
);
CREATE TABLE conduit_agreement (
    conduit_id INTEGER PRIMARY KEY,
    source_location_id INTEGER NOT NULL,
    source_version INTEGER NOT NULL,
    target_location_id INTEGER NOT NULL,
    target_version INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    generation INTEGER NOT NULL,
    FOREIGN KEY (conduit_id) REFERENCES sync_conduit(id) ON DELETE CASCADE
);
"""

# Trash retention (issue 9, seen at issue 5's bench): whether an old version
# has a newer trashed copy is an index lookup by path, not a scan.
TRASH_PATH_INDEX: Final = """
CREATE INDEX idx_sync_trash_path ON sync_trash(conduit_id, relative_path);
"""

# Listing digests became sums of one term per child (issue 5 bench), so that
# a write outside a scan keeps its parent's digest true instead of clearing it
# (which made the next scan compare every directory a run had written to):
# digests of the old kind are forgotten, the next scan stores new ones.
LISTING_DIGEST_SUMS: Final = """
UPDATE entry SET listing_digest = NULL WHERE listing_digest IS NOT NULL;
"""

# Listing digests became sums by bucket (issue 5 bench), so that a scan loads
# only the rows of the buckets where a directory changed: old digests are
# forgotten, the next scan stores new ones.
LISTING_DIGEST_BUCKETS: Final = LISTING_DIGEST_SUMS

# Trash retention (issue 9): the oldest version of a conduit's trash, and the
# versions older than the retention, are a range of an index, not a scan of
# every row after every run.
TRASH_AGE_INDEX: Final = """
CREATE INDEX idx_sync_trash_age ON sync_trash(conduit_id, trashed_at);
"""

# A location's totals (non-directory entries, bytes of regular files) move with
# every write of its rows instead of being counted again over every row after
# each scan that wrote (20-40 ms a 100k-file side, issue 5 bench). Writes
# outside scans (a watcher's refresh, a run's verification) used to leave them
# as the last scan counted: counted once more here.
LOCATION_TOTALS_KEPT: Final = """
UPDATE location SET
    total_file_count = (
        SELECT COUNT(*) FROM entry
        WHERE entry.location_id = location.id AND entry.kind != 1
    ),
    total_byte_size = (
        SELECT COALESCE(SUM(entry.size), 0) FROM entry
        WHERE entry.location_id = location.id AND entry.kind = 0
    );
"""

# Listing digests add up XXH3 terms instead of BLAKE3 ones (issue 5 bench: a
# scan computes one per child): old digests are forgotten, the next scan
# stores new ones.
LISTING_DIGEST_XXH3: Final = LISTING_DIGEST_SUMS

LIBRARY_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "initial library schema", INITIAL),
    Migration(201, "location marker flag", LOCATION_MARKER_FLAG),
    Migration(202, "entry listing digest", ENTRY_LISTING_DIGEST),
    Migration(203, "index of directory entries", ENTRY_DIRECTORY_INDEX),
    Migration(204, "index versions and conduit agreements", INDEX_AGREEMENT),
    Migration(205, "trash rows by path", TRASH_PATH_INDEX),
    Migration(206, "listing digests as sums", LISTING_DIGEST_SUMS),
    Migration(207, "listing digests by bucket", LISTING_DIGEST_BUCKETS),
    Migration(208, "trash rows by age", TRASH_AGE_INDEX),
    Migration(209, "location totals kept by every write", LOCATION_TOTALS_KEPT),
    Migration(210, "listing digests of XXH3 terms", LISTING_DIGEST_XXH3),
)
