"""`sync_conflict`: conflicts left for the user, a syncable record (issue 3).

Only the repository lives here (create, list, resolve); deciding what is a
conflict and acting on a resolution belong to the sync engine.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import ClassVar, Final
from uuid import UUID

from conduitd.errors import StorageError
from conduitd.storage.database import Database, Row, SqlParams
from conduitd.storage.models import EntryKind
from conduitd.storage.syncable import (
    ChangeType,
    JsonValue,
    canonical_json,
    path_fields,
    uuid_text,
)
from conduitd.storage.transactions import LoggedTransaction
from conduitd.timeutil import utc_now_text


class ConflictStatus(enum.StrEnum):
    PENDING = "pending"
    RESOLVED = "resolved"


class Resolution(enum.StrEnum):
    """Which version was kept (`conduitd resolve --keep`)."""

    SOURCE = "source"
    TARGET = "target"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class ConflictSide:
    """One side of a conflict as the index saw it at detection (None: absent)."""

    kind: EntryKind | None = None
    size: int | None = None
    mtime_ns: int | None = None
    content_id: str | None = None

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "kind": None if self.kind is None else int(self.kind),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "content_id": self.content_id,
        }


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """A `sync_conflict` row, with its conduit's uuid for the sync log."""

    model_type: ClassVar[str] = "conflict"
    SYNC_EXCLUDED: ClassVar[frozenset[str]] = frozenset({"id", "conduit_id"})

    id: int
    uuid: uuid.UUID
    conduit_id: int
    conduit_uuid: UUID | None
    relative_path: bytes
    detected_generation: int
    detected_at: str
    status: ConflictStatus
    source: ConflictSide
    target: ConflictSide
    resolution: Resolution | None
    resolved_at: str | None
    version: int

    @property
    def record_uuid(self) -> UUID:
        return self.uuid

    @classmethod
    def from_row(cls, row: Row) -> ConflictRecord:
        conduit_uuid = row["conduit_uuid"] if "conduit_uuid" in row.keys() else None  # noqa: SIM118 (sqlite3.Row: `in` tests values)
        return cls(
            id=row["id"],
            uuid=uuid.UUID(bytes=row["uuid"]),
            conduit_id=row["conduit_id"],
            conduit_uuid=uuid.UUID(bytes=conduit_uuid) if conduit_uuid else None,
            relative_path=bytes(row["relative_path"]),
            detected_generation=row["detected_generation"],
            detected_at=row["detected_at"],
            status=ConflictStatus(row["status"]),
            source=_side(row, "source"),
            target=_side(row, "target"),
            resolution=Resolution(row["resolution"]) if row["resolution"] else None,
            resolved_at=row["resolved_at"],
            version=row["version"],
        )

    def sync_fields(self) -> dict[str, JsonValue]:
        return {
            "uuid": str(self.uuid),
            "conduit_uuid": uuid_text(self.conduit_uuid, "conflict's conduit"),
            **path_fields("relative_path", self.relative_path),
            "detected_generation": self.detected_generation,
            "detected_at": self.detected_at,
            "status": self.status.value,
            "source": self.source.to_json(),
            "target": self.target.to_json(),
            "resolution": None if self.resolution is None else self.resolution.value,
            "resolved_at": self.resolved_at,
            "version": self.version,
        }

    def to_sync_json(self) -> str:
        return canonical_json(self.sync_fields())


def _side(row: Row, prefix: str) -> ConflictSide:
    kind = row[f"{prefix}_kind"]
    return ConflictSide(
        kind=None if kind is None else EntryKind(kind),
        size=row[f"{prefix}_size"],
        mtime_ns=row[f"{prefix}_mtime_ns"],
        content_id=row[f"{prefix}_content_id"],
    )


_SELECT: Final = (
    "SELECT f.*, c.uuid AS conduit_uuid FROM sync_conflict f"
    " JOIN sync_conduit c ON c.id = f.conduit_id"
)


class ConflictRepository:
    """Create, list and resolve conflicts; every write is logged."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        tx: LoggedTransaction,
        *,
        conduit_id: int,
        relative_path: bytes,
        detected_generation: int,
        source: ConflictSide,
        target: ConflictSide,
    ) -> ConflictRecord:
        conflict_id = await tx.insert(
            "INSERT INTO sync_conflict (uuid, conduit_id, relative_path,"
            " detected_generation, detected_at, source_kind, source_size,"
            " source_mtime_ns, source_content_id, target_kind, target_size,"
            " target_mtime_ns, target_content_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                uuid.uuid4().bytes,
                conduit_id,
                relative_path,
                detected_generation,
                utc_now_text(),
                *_side_params(source),
                *_side_params(target),
            ),
        )
        record = await self._get_in(tx, conflict_id)
        await tx.log_change(record, ChangeType.INSERT)
        return record

    async def resolve(
        self, tx: LoggedTransaction, conflict_id: int, resolution: Resolution | None
    ) -> ConflictRecord:
        """Mark a pending conflict resolved (None: it resolved itself, e.g. the
        user made both sides agree, so there is no choice to record).

        Raises:
            StorageError: no such conflict, or it is already resolved.
        """
        changed = await tx.execute(
            "UPDATE sync_conflict SET status = ?, resolution = ?, resolved_at = ?,"
            " version = version + 1 WHERE id = ? AND status = ?",
            (
                ConflictStatus.RESOLVED.value,
                None if resolution is None else resolution.value,
                utc_now_text(),
                conflict_id,
                ConflictStatus.PENDING.value,
            ),
        )
        if not changed:
            raise StorageError(f"conflict {conflict_id} is not pending")
        record = await self._get_in(tx, conflict_id)
        await tx.log_change(record, ChangeType.UPDATE)
        return record

    async def update_sides(
        self,
        tx: LoggedTransaction,
        conflict_id: int,
        source: ConflictSide,
        target: ConflictSide,
    ) -> ConflictRecord:
        """A pending conflict seen again with other versions on its sides.

        Raises:
            StorageError: no such conflict, or it is no longer pending.
        """
        changed = await tx.execute(
            "UPDATE sync_conflict SET source_kind = ?, source_size = ?,"
            " source_mtime_ns = ?, source_content_id = ?, target_kind = ?,"
            " target_size = ?, target_mtime_ns = ?, target_content_id = ?,"
            " version = version + 1 WHERE id = ? AND status = ?",
            (
                *_side_params(source),
                *_side_params(target),
                conflict_id,
                ConflictStatus.PENDING.value,
            ),
        )
        if not changed:
            raise StorageError(f"conflict {conflict_id} is not pending")
        record = await self._get_in(tx, conflict_id)
        await tx.log_change(record, ChangeType.UPDATE)
        return record

    async def get(self, conflict_id: int) -> ConflictRecord | None:
        row = await self.db.fetch_one(f"{_SELECT} WHERE f.id = ?", (conflict_id,))
        return None if row is None else ConflictRecord.from_row(row)

    async def list(
        self, conduit_id: int | None = None, status: ConflictStatus | None = None
    ) -> list[ConflictRecord]:
        """Conflicts, optionally of one conduit and one status, oldest first."""
        where: list[str] = []
        params: list[int | str] = []
        if conduit_id is not None:
            where.append("f.conduit_id = ?")
            params.append(conduit_id)
        if status is not None:
            where.append("f.status = ?")
            params.append(status.value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.fetch_all(f"{_SELECT}{clause} ORDER BY f.id", params)
        return [ConflictRecord.from_row(r) for r in rows]

    async def _get_in(self, tx: LoggedTransaction, conflict_id: int) -> ConflictRecord:
        row = await tx.fetch_one(f"{_SELECT} WHERE f.id = ?", (conflict_id,))
        assert row is not None  # callers pass ids they just wrote
        return ConflictRecord.from_row(row)


def _side_params(side: ConflictSide) -> SqlParams:
    kind = None if side.kind is None else int(side.kind)
    return (kind, side.size, side.mtime_ns, side.content_id)
