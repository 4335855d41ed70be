"""Locations (conduit endpoints) and their root entries.

A location is syncable (issue 3): other devices learn its identity (uuid,
owning device, name, index mode), never this device's path, filesystem ids or
runtime state.
"""

from __future__ import annotations

import enum
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from uuid import UUID

from conduitd.storage.database import Database, Reader, Row, Transaction
from conduitd.storage.models import EntryKind
from conduitd.storage.syncable import ChangeType, JsonValue, canonical_json
from conduitd.storage.transactions import LoggedTransaction
from conduitd.timeutil import utc_now_text


class LocationState(enum.StrEnum):
    SCANNING = "scanning"
    READY = "ready"
    STALE = "stale"
    UNMOUNTED = "unmounted"


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A `location` row. `path` is this device's absolute root path."""

    model_type: ClassVar[str] = "location"
    # Local ids, this device's path and filesystem identity, and runtime state.
    # Scan statistics stay local too until the index logs its scans' location
    # updates (they are written outside the TransactionManager today).
    SYNC_EXCLUDED: ClassVar[frozenset[str]] = frozenset(
        {
            "id",
            "entry_id",
            "path",
            "st_dev",
            "root_inode",
            "state",
            "index_lost",
            "last_scan_at",
            "total_file_count",
            "total_byte_size",
            "has_marker",
        }
    )

    id: int
    uuid: uuid.UUID
    device_id: str
    entry_id: int
    name: str
    path: Path
    st_dev: int | None
    root_inode: int | None
    index_mode: str
    state: LocationState
    index_lost: bool
    last_scan_at: str | None
    total_file_count: int
    total_byte_size: int
    version: int
    has_marker: bool = False
    created_at: str = ""

    @property
    def root(self) -> bytes:
        """The root path as bytes (`os.fsencode`), as the index handles paths."""
        return os.fsencode(self.path)

    @property
    def record_uuid(self) -> UUID:
        return self.uuid

    def sync_fields(self) -> dict[str, JsonValue]:
        return {
            "uuid": str(self.uuid),
            "device_id": self.device_id,
            "name": self.name,
            "index_mode": self.index_mode,
            "created_at": self.created_at,
            "version": self.version,
        }

    def to_sync_json(self) -> str:
        return canonical_json(self.sync_fields())

    @classmethod
    def from_row(cls, row: Row) -> LocationRecord:
        return cls(
            id=row["id"],
            uuid=uuid.UUID(bytes=row["uuid"]),
            device_id=row["device_id"],
            entry_id=row["entry_id"],
            name=row["name"],
            path=Path(os.fsdecode(row["path"])),
            st_dev=row["st_dev"],
            root_inode=row["root_inode"],
            index_mode=row["index_mode"],
            state=LocationState(row["state"]),
            index_lost=bool(row["index_lost"]),
            last_scan_at=row["last_scan_at"],
            total_file_count=row["total_file_count"],
            total_byte_size=row["total_byte_size"],
            version=row["version"],
            has_marker=bool(row["has_marker"]),
            created_at=row["created_at"],
        )


async def ensure_location(
    tx: Transaction, device_id: str, path: Path
) -> tuple[LocationRecord, bool]:
    """The location for `path` on this device, created with its root entry.

    Returns (record, created). The root entry is upserted, never replaced: the
    conduits' ON DELETE CASCADE hangs off it. In a `LoggedTransaction` (the
    daemon's and the CLI's path) a new location is logged; a plain transaction
    (tests, tools) creates it unlogged.
    """
    raw = os.fsencode(path)
    row = await tx.fetch_one(
        "SELECT * FROM location WHERE device_id = ? AND path = ?", (device_id, raw)
    )
    created = row is None
    if row is None:
        now = utc_now_text()
        location_id = await tx.insert(
            "INSERT INTO location (uuid, device_id, name, path, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().bytes, device_id, path.name or str(path), raw, now, now),
        )
    else:
        location_id = int(row["id"])
    entry_id = await upsert_root_entry(tx, location_id)
    await tx.execute(
        "UPDATE location SET entry_id = ? WHERE id = ? AND entry_id IS NOT ?",
        (entry_id, location_id, entry_id),
    )
    fresh = await tx.fetch_one("SELECT * FROM location WHERE id = ?", (location_id,))
    assert fresh is not None  # we hold the write transaction
    record = LocationRecord.from_row(fresh)
    if created and isinstance(tx, LoggedTransaction):
        await tx.log_change(record, ChangeType.INSERT)
    return record, created


async def upsert_root_entry(tx: Transaction, location_id: int) -> int:
    row = await tx.fetch_one(
        "INSERT INTO entry (location_id, parent_id, name, relative_path, kind)"
        " VALUES (?, NULL, x'', x'', ?)"
        " ON CONFLICT (location_id, relative_path) DO UPDATE SET kind = excluded.kind"
        " RETURNING id",
        (location_id, int(EntryKind.DIRECTORY)),
    )
    assert row is not None  # RETURNING always yields the row it wrote
    return int(row["id"])


async def get_location(db: Reader, location_id: int) -> LocationRecord | None:
    """The location's row, from the database or inside a transaction."""
    rows = await db.fetch_all("SELECT * FROM location WHERE id = ?", (location_id,))
    return LocationRecord.from_row(rows[0]) if rows else None


async def list_locations(db: Database) -> list[LocationRecord]:
    rows = await db.fetch_all("SELECT * FROM location ORDER BY id")
    return [LocationRecord.from_row(r) for r in rows]


async def get_location_by_uuid(
    db: Database, location_uuid: uuid.UUID
) -> LocationRecord | None:
    row = await db.fetch_one(
        "SELECT * FROM location WHERE uuid = ?", (location_uuid.bytes,)
    )
    return None if row is None else LocationRecord.from_row(row)


async def set_location_state(
    tx: Transaction, location_id: int, state: LocationState
) -> None:
    """Persist the index state of a location (see `conduitd.index.state`)."""
    await tx.execute(
        "UPDATE location SET state = ?, updated_at = ? WHERE id = ? AND state != ?",
        (state.value, utc_now_text(), location_id, state.value),
    )


async def set_location_identity(
    tx: Transaction, location_id: int, st_dev: int, root_inode: int
) -> None:
    """Record the root's st_dev and inode (a read-only root's identity)."""
    await tx.execute(
        "UPDATE location SET st_dev = ?, root_inode = ?, updated_at = ?"
        " WHERE id = ? AND (st_dev IS NOT ? OR root_inode IS NOT ?)",
        (st_dev, root_inode, utc_now_text(), location_id, st_dev, root_inode),
    )


async def set_index_lost(tx: Transaction, location_id: int, lost: bool) -> None:
    """Set or clear `index_lost` (the next run of the root must be a union)."""
    await tx.execute(
        "UPDATE location SET index_lost = ?, updated_at = ? WHERE id = ?",
        (int(lost), utc_now_text(), location_id),
    )


async def set_has_marker(tx: Transaction, location_id: int, has_marker: bool) -> None:
    await tx.execute(
        "UPDATE location SET has_marker = ?, updated_at = ? WHERE id = ?",
        (int(has_marker), utc_now_text(), location_id),
    )


async def record_scan(tx: Transaction, location_id: int, *, scanned_at: str) -> None:
    """A completed scan: when. (The totals move with every write of rows.)"""
    await tx.execute(
        "UPDATE location SET last_scan_at = ?, updated_at = ? WHERE id = ?",
        (scanned_at, utc_now_text(), location_id),
    )
