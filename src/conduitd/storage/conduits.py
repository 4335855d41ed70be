"""ConduitManager: the `sync_conduit` and `sync_generation` repository.

Both records are syncable (issue 3): every write that changes a synced field
bumps `version` and logs the record in the caller's `LoggedTransaction`, so
writes go through `TransactionManager.transaction()`. Records read here carry
the uuids they refer to (a conduit's locations, a generation's conduit), since
the sync log never names local ids.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import ClassVar, Final
from uuid import UUID

from conduitd.config.enums import SyncMode
from conduitd.errors import StorageError
from conduitd.storage.database import Database, Row, Transaction
from conduitd.storage.syncable import (
    ChangeType,
    JsonValue,
    Syncable,
    canonical_json,
    uuid_text,
)
from conduitd.storage.transactions import LoggedTransaction
from conduitd.timeutil import utc_now_text


class VerificationStatus(enum.StrEnum):
    """The seed's verification states; failures are `failed:<reason>`."""

    UNVERIFIED = "unverified"
    WAITING_WATCHER = "waiting_watcher"
    WAITING_LIBRARY_SYNC = "waiting_library_sync"
    VERIFIED = "verified"

    def as_str(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, text: str) -> VerificationStatus | str:
        """A known state, or the `failed:<reason>` text itself."""
        if text.startswith("failed:"):
            return text
        return cls(text)


class GenerationStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ConduitRecord:
    """A `sync_conduit` row, with its endpoints' location uuids."""

    model_type: ClassVar[str] = "conduit"
    # Local ids (entry ids stand for locations, synced by uuid instead);
    # last_checked_at and updated_at are this device's bookkeeping, unversioned.
    SYNC_EXCLUDED: ClassVar[frozenset[str]] = frozenset(
        {"id", "source_entry_id", "target_entry_id", "last_checked_at", "updated_at"}
    )

    id: int
    uuid: uuid.UUID
    name: str
    source_entry_id: int
    target_entry_id: int
    sync_mode: SyncMode
    enabled: bool
    paused: bool
    schedule: str
    use_index_rules: bool
    parallel_transfers: int
    bandwidth_limit_mbps: int | None
    last_sync_completed_at: str | None
    sync_generation: int
    last_sync_error: str | None
    last_checked_at: str | None
    total_syncs: int
    files_synced: int
    bytes_transferred: int
    created_at: str
    updated_at: str
    version: int
    source_location_uuid: UUID | None = None
    target_location_uuid: UUID | None = None

    @property
    def record_uuid(self) -> UUID:
        return self.uuid

    def sync_fields(self) -> dict[str, JsonValue]:
        return {
            "uuid": str(self.uuid),
            "name": self.name,
            "source_location_uuid": uuid_text(self.source_location_uuid, "source"),
            "target_location_uuid": uuid_text(self.target_location_uuid, "target"),
            "sync_mode": self.sync_mode.value,
            "enabled": self.enabled,
            "paused": self.paused,
            "schedule": self.schedule,
            "use_index_rules": self.use_index_rules,
            "parallel_transfers": self.parallel_transfers,
            "bandwidth_limit_mbps": self.bandwidth_limit_mbps,
            "last_sync_completed_at": self.last_sync_completed_at,
            "sync_generation": self.sync_generation,
            "last_sync_error": self.last_sync_error,
            "total_syncs": self.total_syncs,
            "files_synced": self.files_synced,
            "bytes_transferred": self.bytes_transferred,
            "created_at": self.created_at,
            "version": self.version,
        }

    def to_sync_json(self) -> str:
        return canonical_json(self.sync_fields())

    @classmethod
    def from_row(cls, row: Row) -> ConduitRecord:
        keys = row.keys()
        return cls(
            id=row["id"],
            uuid=uuid.UUID(bytes=row["uuid"]),
            name=row["name"],
            source_entry_id=row["source_entry_id"],
            target_entry_id=row["target_entry_id"],
            sync_mode=SyncMode(row["sync_mode"]),
            enabled=bool(row["enabled"]),
            paused=bool(row["paused"]),
            schedule=row["schedule"],
            use_index_rules=bool(row["use_index_rules"]),
            parallel_transfers=row["parallel_transfers"],
            bandwidth_limit_mbps=row["bandwidth_limit_mbps"],
            last_sync_completed_at=row["last_sync_completed_at"],
            sync_generation=row["sync_generation"],
            last_sync_error=row["last_sync_error"],
            last_checked_at=row["last_checked_at"],
            total_syncs=row["total_syncs"],
            files_synced=row["files_synced"],
            bytes_transferred=row["bytes_transferred"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            version=row["version"],
            source_location_uuid=_uuid_column(row, keys, "source_location_uuid"),
            target_location_uuid=_uuid_column(row, keys, "target_location_uuid"),
        )


def _uuid_column(row: Row, keys: list[str], name: str) -> UUID | None:
    raw = row[name] if name in keys else None
    return uuid.UUID(bytes=raw) if raw else None


@dataclass(frozen=True, slots=True)
class GenerationCounts:
    """What a run did, counted as DESIGN.md "Counting in a generation" says."""

    files_copied: int = 0
    metadata_updated: int = 0
    files_deleted: int = 0
    conflicts_resolved: int = 0
    conflicts_pending: int = 0
    files_skipped: int = 0
    bytes_transferred: int = 0
    errors_encountered: int = 0


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """A `sync_generation` row, with its conduit's uuid."""

    model_type: ClassVar[str] = "generation"
    SYNC_EXCLUDED: ClassVar[frozenset[str]] = frozenset({"id", "conduit_id"})

    id: int
    conduit_id: int
    generation: int
    started_at: str
    completed_at: str | None
    counts: GenerationCounts
    verified_at: str | None
    verification_status: str
    status: GenerationStatus
    uuid: uuid.UUID | None
    version: int
    conduit_uuid: UUID | None = None

    @property
    def record_uuid(self) -> UUID:
        """The row's uuid; rows without one are named by conduit and number."""
        if self.uuid is not None:
            return self.uuid
        conduit = uuid.UUID(uuid_text(self.conduit_uuid, "generation's conduit"))
        return uuid.uuid5(conduit, f"generation:{self.generation}")

    def sync_fields(self) -> dict[str, JsonValue]:
        counts = self.counts
        return {
            "uuid": str(self.record_uuid),
            "conduit_uuid": uuid_text(self.conduit_uuid, "generation's conduit"),
            "generation": self.generation,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "counts": {
                "files_copied": counts.files_copied,
                "metadata_updated": counts.metadata_updated,
                "files_deleted": counts.files_deleted,
                "conflicts_resolved": counts.conflicts_resolved,
                "conflicts_pending": counts.conflicts_pending,
                "files_skipped": counts.files_skipped,
                "bytes_transferred": counts.bytes_transferred,
                "errors_encountered": counts.errors_encountered,
            },
            "verified_at": self.verified_at,
            "verification_status": self.verification_status,
            "status": self.status.value,
            "version": self.version,
        }

    def to_sync_json(self) -> str:
        return canonical_json(self.sync_fields())

    @classmethod
    def from_row(cls, row: Row) -> GenerationRecord:
        return cls(
            id=row["id"],
            conduit_id=row["conduit_id"],
            generation=row["generation"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            counts=GenerationCounts(
                files_copied=row["files_copied"],
                metadata_updated=row["metadata_updated"],
                files_deleted=row["files_deleted"],
                conflicts_resolved=row["conflicts_resolved"],
                conflicts_pending=row["conflicts_pending"],
                files_skipped=row["files_skipped"],
                bytes_transferred=row["bytes_transferred"],
                errors_encountered=row["errors_encountered"],
            ),
            verified_at=row["verified_at"],
            verification_status=row["verification_status"],
            status=GenerationStatus(row["status"]),
            uuid=uuid.UUID(bytes=row["uuid"]) if row["uuid"] else None,
            version=row["version"],
            conduit_uuid=_uuid_column(row, row.keys(), "conduit_uuid"),
        )


@dataclass(frozen=True, slots=True)
class ConduitSettings:
    """The config-owned columns of a conduit, as reconciliation writes them."""

    name: str
    source_entry_id: int
    target_entry_id: int
    sync_mode: SyncMode
    enabled: bool
    schedule: str
    use_index_rules: bool
    parallel_transfers: int
    bandwidth_limit_mbps: int | None


# Reads join the uuids the sync log refers to records by.
CONDUIT_SELECT: Final = (
    "SELECT c.*, sl.uuid AS source_location_uuid, tl.uuid AS target_location_uuid"
    " FROM sync_conduit c"
    " JOIN entry se ON se.id = c.source_entry_id"
    " JOIN location sl ON sl.id = se.location_id"
    " JOIN entry te ON te.id = c.target_entry_id"
    " JOIN location tl ON tl.id = te.location_id"
)
GENERATION_SELECT: Final = (
    "SELECT g.*, c.uuid AS conduit_uuid FROM sync_generation g"
    " JOIN sync_conduit c ON c.id = g.conduit_id"
)


async def _log(tx: Transaction, record: Syncable, change: ChangeType) -> None:
    if not isinstance(tx, LoggedTransaction):
        raise StorageError(
            "conduit and generation writes must run in TransactionManager.transaction()"
        )
    await tx.log_change(record, change)


_SETTINGS_COLUMNS = (
    "source_entry_id, target_entry_id, sync_mode, enabled, schedule, "
    "use_index_rules, parallel_transfers, bandwidth_limit_mbps"
)


def _settings_params(s: ConduitSettings) -> tuple[int | str | None, ...]:
    return (
        s.source_entry_id,
        s.target_entry_id,
        s.sync_mode.as_str(),
        int(s.enabled),
        s.schedule,
        int(s.use_index_rules),
        s.parallel_transfers,
        s.bandwidth_limit_mbps,
    )


class ConduitManager:
    """CRUD for conduits and their generations (seed FSYNC-003)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, tx: LoggedTransaction, settings: ConduitSettings
    ) -> ConduitRecord:
        now = utc_now_text()
        conduit_id = await tx.insert(
            f"INSERT INTO sync_conduit (uuid, name, {_SETTINGS_COLUMNS}, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (uuid.uuid4().bytes, settings.name, *_settings_params(settings), now, now),
        )
        return await self._logged(tx, conduit_id, ChangeType.INSERT)

    async def update_settings(
        self, tx: LoggedTransaction, conduit_id: int, settings: ConduitSettings
    ) -> ConduitRecord:
        assignments = ", ".join(
            f"{c.strip()} = ?" for c in _SETTINGS_COLUMNS.split(",")
        )
        await tx.execute(
            f"UPDATE sync_conduit SET {assignments}, updated_at = ?,"
            " version = version + 1 WHERE id = ?",
            (*_settings_params(settings), utc_now_text(), conduit_id),
        )
        return await self._logged(tx, conduit_id)

    async def disable(self, tx: LoggedTransaction, conduit_id: int) -> ConduitRecord:
        changed = await tx.execute(
            "UPDATE sync_conduit SET enabled = 0, updated_at = ?, version = version + 1"
            " WHERE id = ? AND enabled = 1",
            (utc_now_text(), conduit_id),
        )
        if changed:
            return await self._logged(tx, conduit_id)
        return await self._get_in(tx, conduit_id)

    async def set_paused(
        self, tx: LoggedTransaction, conduit_id: int, paused: bool
    ) -> ConduitRecord:
        await tx.execute(
            "UPDATE sync_conduit SET paused = ?, updated_at = ?, version = version + 1"
            " WHERE id = ?",
            (int(paused), utc_now_text(), conduit_id),
        )
        return await self._logged(tx, conduit_id)

    async def get(self, conduit_id: int) -> ConduitRecord | None:
        row = await self.db.fetch_one(f"{CONDUIT_SELECT} WHERE c.id = ?", (conduit_id,))
        return None if row is None else ConduitRecord.from_row(row)

    async def get_by_name(self, name: str) -> ConduitRecord | None:
        row = await self.db.fetch_one(f"{CONDUIT_SELECT} WHERE c.name = ?", (name,))
        return None if row is None else ConduitRecord.from_row(row)

    async def list_all(self) -> list[ConduitRecord]:
        rows = await self.db.fetch_all(f"{CONDUIT_SELECT} ORDER BY c.name")
        return [ConduitRecord.from_row(r) for r in rows]

    async def list_enabled(self) -> list[ConduitRecord]:
        rows = await self.db.fetch_all(
            f"{CONDUIT_SELECT} WHERE c.enabled = 1 ORDER BY c.name"
        )
        return [ConduitRecord.from_row(r) for r in rows]

    async def mark_checked(self, tx: Transaction, conduit_id: int) -> None:
        await tx.execute(
            "UPDATE sync_conduit SET last_checked_at = ? WHERE id = ?",
            (utc_now_text(), conduit_id),
        )

    async def create_generation(
        self, tx: LoggedTransaction, conduit_id: int
    ) -> GenerationRecord:
        """Generation N+1: bumps `sync_conduit.sync_generation` in the same tx."""
        await tx.execute(
            "UPDATE sync_conduit SET sync_generation = sync_generation + 1,"
            " updated_at = ?, version = version + 1 WHERE id = ?",
            (utc_now_text(), conduit_id),
        )
        conduit = await self._logged(tx, conduit_id)
        generation_id = await tx.insert(
            "INSERT INTO sync_generation (conduit_id, generation, started_at, uuid)"
            " VALUES (?, ?, ?, ?)",
            (conduit_id, conduit.sync_generation, utc_now_text(), uuid.uuid4().bytes),
        )
        return await self._logged_generation(tx, generation_id, ChangeType.INSERT)

    async def record_counts(
        self, tx: LoggedTransaction, generation_id: int, counts: GenerationCounts
    ) -> GenerationRecord:
        await tx.execute(
            "UPDATE sync_generation SET files_copied = ?, metadata_updated = ?,"
            " files_deleted = ?, conflicts_resolved = ?, conflicts_pending = ?,"
            " files_skipped = ?, bytes_transferred = ?, errors_encountered = ?,"
            " version = version + 1 WHERE id = ?",
            (
                counts.files_copied,
                counts.metadata_updated,
                counts.files_deleted,
                counts.conflicts_resolved,
                counts.conflicts_pending,
                counts.files_skipped,
                counts.bytes_transferred,
                counts.errors_encountered,
                generation_id,
            ),
        )
        return await self._logged_generation(tx, generation_id)

    async def set_verification(
        self, tx: LoggedTransaction, generation_id: int, status: str, *, verified: bool
    ) -> GenerationRecord:
        await tx.execute(
            "UPDATE sync_generation SET verification_status = ?,"
            " verified_at = CASE WHEN ? THEN ? ELSE verified_at END,"
            " version = version + 1 WHERE id = ?",
            (status, int(verified), utc_now_text(), generation_id),
        )
        return await self._logged_generation(tx, generation_id)

    async def complete_generation(
        self,
        tx: LoggedTransaction,
        generation_id: int,
        status: GenerationStatus,
        error: str | None = None,
    ) -> GenerationRecord:
        """Set completed_at and the conduit's statistics in one transaction."""
        now = utc_now_text()
        await tx.execute(
            "UPDATE sync_generation SET completed_at = ?, status = ?,"
            " version = version + 1 WHERE id = ?",
            (now, status.value, generation_id),
        )
        generation = await self._logged_generation(tx, generation_id)
        await self.update_after_sync(tx, generation, error)
        return generation

    async def update_after_sync(
        self, tx: LoggedTransaction, generation: GenerationRecord, error: str | None
    ) -> None:
        counts = generation.counts
        await tx.execute(
            "UPDATE sync_conduit SET total_syncs = total_syncs + 1,"
            " files_synced = files_synced + ?, bytes_transferred = bytes_transferred"
            " + ?, last_sync_completed_at = ?, last_sync_error = ?, updated_at = ?,"
            " version = version + 1 WHERE id = ?",
            (
                counts.files_copied + counts.files_deleted + counts.metadata_updated,
                counts.bytes_transferred,
                generation.completed_at,
                error,
                utc_now_text(),
                generation.conduit_id,
            ),
        )
        await self._logged(tx, generation.conduit_id)

    async def set_error(
        self, tx: LoggedTransaction, conduit_id: int, error: str | None
    ) -> None:
        changed = await tx.execute(
            "UPDATE sync_conduit SET last_sync_error = ?, updated_at = ?,"
            " version = version + 1 WHERE id = ? AND last_sync_error IS NOT ?",
            (error, utc_now_text(), conduit_id, error),
        )
        if changed:
            await self._logged(tx, conduit_id)

    async def interrupt_unfinished(
        self, tx: LoggedTransaction
    ) -> list[GenerationRecord]:
        """Crash recovery: generations left running become failed:interrupted."""
        rows = await tx.fetch_all(
            "SELECT id FROM sync_generation WHERE completed_at IS NULL"
        )
        now = utc_now_text()
        done = []
        for row in rows:
            await tx.execute(
                "UPDATE sync_generation SET completed_at = ?, status = ?,"
                " verification_status = 'failed:interrupted', version = version + 1"
                " WHERE id = ?",
                (now, GenerationStatus.INTERRUPTED.value, row["id"]),
            )
            done.append(await self._get_generation_in(tx, int(row["id"])))
        if done:
            await tx.log_batch(done, ChangeType.UPDATE)
        return done

    async def generations(
        self, conduit_id: int, limit: int | None = None
    ) -> list[GenerationRecord]:
        rows = await self.db.fetch_all(
            f"{GENERATION_SELECT} WHERE g.conduit_id = ?"
            " ORDER BY g.generation DESC LIMIT ?",
            (conduit_id, -1 if limit is None else limit),
        )
        return [GenerationRecord.from_row(r) for r in rows]

    async def last_generation(self, conduit_id: int) -> GenerationRecord | None:
        found = await self.generations(conduit_id, limit=1)
        return found[0] if found else None

    async def _get_in(self, tx: Transaction, conduit_id: int) -> ConduitRecord:
        row = await tx.fetch_one(f"{CONDUIT_SELECT} WHERE c.id = ?", (conduit_id,))
        assert row is not None  # callers pass ids they just wrote
        return ConduitRecord.from_row(row)

    async def _get_generation_in(
        self, tx: Transaction, generation_id: int
    ) -> GenerationRecord:
        row = await tx.fetch_one(
            f"{GENERATION_SELECT} WHERE g.id = ?", (generation_id,)
        )
        assert row is not None  # callers pass ids they just wrote
        return GenerationRecord.from_row(row)

    async def _logged(
        self, tx: Transaction, conduit_id: int, change: ChangeType = ChangeType.UPDATE
    ) -> ConduitRecord:
        record = await self._get_in(tx, conduit_id)
        await _log(tx, record, change)
        return record

    async def _logged_generation(
        self,
        tx: Transaction,
        generation_id: int,
        change: ChangeType = ChangeType.UPDATE,
    ) -> GenerationRecord:
        record = await self._get_generation_in(tx, generation_id)
        await _log(tx, record, change)
        return record
