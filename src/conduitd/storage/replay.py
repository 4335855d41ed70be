"""Replay: apply sync log entries to another library's database, idempotently.

Every insert/update entry carries its record's full synced state, so applying
one is an upsert by uuid; a delete removes the row by uuid (the schema's
cascades follow). The last applied sequence is kept in `library_info` in the
same transaction, so applying the same entries twice changes nothing.
`bulk_insert` entries change no row: they tell this device to index the
location they name itself (`ReplayReport.reindex`).

Applied rows are not logged again (they come from the log). Locations of
other devices get a placeholder path starting with a NUL byte: no such path
exists, so nothing can ever scan or write "there".
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from conduitd.errors import StorageError
from conduitd.storage.database import Database, SqlParam, Transaction
from conduitd.storage.locations import upsert_root_entry
from conduitd.storage.syncable import ChangeType, relative_path_from_fields
from conduitd.storage.synclog import SyncLogDb, SyncLogEntry
from conduitd.timeutil import utc_now_text

APPLIED_KEY: Final = "sync_applied_sequence"
REPLICA_PATH_PREFIX: Final = b"\x00replica/"

Data = Mapping[str, object]


class ReplayError(StorageError):
    """An entry cannot be applied (unknown model, missing parent, bad data)."""


@dataclass(slots=True)
class ReplayReport:
    """What one replay did; `reindex` lists locations named by bulk entries."""

    applied: int = 0
    skipped: int = 0
    reindex: list[str] = field(default_factory=list)
    last_sequence: int = 0


async def applied_sequence(db: Database) -> int:
    """The last sequence applied to `db` (0: none)."""
    row = await db.fetch_one(
        "SELECT value FROM library_info WHERE key = ?", (APPLIED_KEY,)
    )
    return int(row["value"]) if row is not None else 0


async def apply_entries(db: Database, entries: Iterable[SyncLogEntry]) -> ReplayReport:
    """Apply entries (in increasing sequence order) in one transaction.

    Entries at or below the last applied sequence are skipped.

    Raises:
        ReplayError: an entry cannot be applied; nothing of this call is kept.
    """
    report = ReplayReport()
    async with db.transaction() as tx:
        row = await tx.fetch_one(
            "SELECT value FROM library_info WHERE key = ?", (APPLIED_KEY,)
        )
        last = int(row["value"]) if row is not None else 0
        for entry in entries:
            if entry.sequence <= last:
                report.skipped += 1
                continue
            await _apply_one(tx, entry, report)
            last = entry.sequence
            report.applied += 1
        await tx.execute(
            "INSERT INTO library_info (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (APPLIED_KEY, str(last)),
        )
    report.last_sequence = last
    return report


async def replay_log(
    log: SyncLogDb, db: Database, *, batch: int = 1000
) -> ReplayReport:
    """Apply every entry of `log` not yet applied to `db`, `batch` per transaction."""
    total = ReplayReport(last_sequence=await applied_sequence(db))
    while True:
        entries = await log.fetch_since(total.last_sequence, batch)
        if not entries:
            return total
        report = await apply_entries(db, entries)
        total.applied += report.applied
        total.skipped += report.skipped
        total.reindex.extend(report.reindex)
        total.last_sequence = report.last_sequence


async def _apply_one(
    tx: Transaction, entry: SyncLogEntry, report: ReplayReport
) -> None:
    if entry.change_type is ChangeType.BULK_INSERT:
        report.reindex.append(entry.record_id)
        return
    table_and_upsert = _MODELS.get(entry.model_type)
    if table_and_upsert is None:
        raise ReplayError(f"entry {entry.sequence}: unknown model {entry.model_type!r}")
    table, upsert = table_and_upsert
    try:
        if entry.change_type is ChangeType.DELETE:
            await tx.execute(
                f"DELETE FROM {table} WHERE uuid = ?", (_uuid_bytes(entry.record_id),)
            )
        else:
            await upsert(tx, entry.payload())
    except StorageError as exc:
        if isinstance(exc, ReplayError) or not isinstance(
            exc.__cause__, sqlite3.IntegrityError
        ):
            raise
        raise ReplayError(f"entry {entry.sequence}: {exc}") from exc


async def _upsert_location(tx: Transaction, data: Data) -> None:
    record = _uuid_bytes(_text(data, "uuid"))
    await tx.execute(
        "INSERT INTO location (uuid, device_id, name, path, index_mode, version,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (uuid) DO UPDATE SET device_id = excluded.device_id,"
        " name = excluded.name, index_mode = excluded.index_mode,"
        " version = excluded.version, created_at = excluded.created_at,"
        " updated_at = excluded.updated_at",
        (
            record,
            _text(data, "device_id"),
            _text(data, "name"),
            REPLICA_PATH_PREFIX + _text(data, "uuid").encode(),
            _text(data, "index_mode"),
            _int(data, "version"),
            _text(data, "created_at"),
            utc_now_text(),
        ),
    )
    row = await tx.fetch_one("SELECT id FROM location WHERE uuid = ?", (record,))
    assert row is not None  # upserted just above
    entry_id = await upsert_root_entry(tx, int(row["id"]))
    await tx.execute(
        "UPDATE location SET entry_id = ? WHERE id = ? AND entry_id IS NOT ?",
        (entry_id, row["id"], entry_id),
    )


_CONDUIT_COLUMNS: Final = (
    "name",
    "source_entry_id",
    "target_entry_id",
    "sync_mode",
    "enabled",
    "paused",
    "schedule",
    "use_index_rules",
    "parallel_transfers",
    "bandwidth_limit_mbps",
    "last_sync_completed_at",
    "sync_generation",
    "last_sync_error",
    "total_syncs",
    "files_synced",
    "bytes_transferred",
    "created_at",
    "version",
    "updated_at",
)


async def _upsert_conduit(tx: Transaction, data: Data) -> None:
    values: tuple[SqlParam, ...] = (
        _text(data, "name"),
        await _root_entry_of(tx, _text(data, "source_location_uuid")),
        await _root_entry_of(tx, _text(data, "target_location_uuid")),
        _text(data, "sync_mode"),
        _bool(data, "enabled"),
        _bool(data, "paused"),
        _text(data, "schedule"),
        _bool(data, "use_index_rules"),
        _int(data, "parallel_transfers"),
        _opt_int(data, "bandwidth_limit_mbps"),
        _opt_text(data, "last_sync_completed_at"),
        _int(data, "sync_generation"),
        _opt_text(data, "last_sync_error"),
        _int(data, "total_syncs"),
        _int(data, "files_synced"),
        _int(data, "bytes_transferred"),
        _text(data, "created_at"),
        _int(data, "version"),
        utc_now_text(),
    )
    columns = ", ".join(_CONDUIT_COLUMNS)
    marks = ", ".join("?" for _ in _CONDUIT_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _CONDUIT_COLUMNS)
    await tx.execute(
        f"INSERT INTO sync_conduit (uuid, {columns}) VALUES (?, {marks})"
        f" ON CONFLICT (uuid) DO UPDATE SET {updates}",
        (_uuid_bytes(_text(data, "uuid")), *values),
    )


_COUNT_COLUMNS: Final = (
    "files_copied",
    "metadata_updated",
    "files_deleted",
    "conflicts_resolved",
    "conflicts_pending",
    "files_skipped",
    "bytes_transferred",
    "errors_encountered",
)


async def _upsert_generation(tx: Transaction, data: Data) -> None:
    counts = data.get("counts")
    if not isinstance(counts, Mapping):
        raise ReplayError("generation data has no counts")
    columns = (
        "conduit_id",
        "generation",
        "started_at",
        "completed_at",
        "verified_at",
        "verification_status",
        "status",
        "version",
        *_COUNT_COLUMNS,
    )
    values: tuple[SqlParam, ...] = (
        await _conduit_id_of(tx, _text(data, "conduit_uuid")),
        _int(data, "generation"),
        _text(data, "started_at"),
        _opt_text(data, "completed_at"),
        _opt_text(data, "verified_at"),
        _text(data, "verification_status"),
        _text(data, "status"),
        _int(data, "version"),
        *(_int(counts, c) for c in _COUNT_COLUMNS),
    )
    record = _uuid_bytes(_text(data, "uuid"))
    row = await tx.fetch_one("SELECT id FROM sync_generation WHERE uuid = ?", (record,))
    if row is None:
        marks = ", ".join("?" for _ in columns)
        await tx.execute(
            f"INSERT INTO sync_generation (uuid, {', '.join(columns)}) VALUES (?, {marks})",
            (record, *values),
        )
    else:
        updates = ", ".join(f"{c} = ?" for c in columns)
        await tx.execute(
            f"UPDATE sync_generation SET {updates} WHERE id = ?", (*values, row["id"])
        )


async def _upsert_conflict(tx: Transaction, data: Data) -> None:
    sides: list[SqlParam] = []
    for side in ("source", "target"):
        value = data.get(side)
        if not isinstance(value, Mapping):
            raise ReplayError(f"conflict data has no {side}")
        sides.extend(_opt_int(value, k) for k in ("kind", "size", "mtime_ns"))
        sides.append(_opt_text(value, "content_id"))
    columns = (
        "conduit_id",
        "relative_path",
        "detected_generation",
        "detected_at",
        "status",
        "resolution",
        "resolved_at",
        "version",
        "source_kind",
        "source_size",
        "source_mtime_ns",
        "source_content_id",
        "target_kind",
        "target_size",
        "target_mtime_ns",
        "target_content_id",
    )
    values: tuple[SqlParam, ...] = (
        await _conduit_id_of(tx, _text(data, "conduit_uuid")),
        relative_path_from_fields("relative_path", data),
        _int(data, "detected_generation"),
        _text(data, "detected_at"),
        _text(data, "status"),
        _opt_text(data, "resolution"),
        _opt_text(data, "resolved_at"),
        _int(data, "version"),
        *sides,
    )
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    await tx.execute(
        f"INSERT INTO sync_conflict (uuid, {', '.join(columns)}) VALUES (?, {marks})"
        f" ON CONFLICT (uuid) DO UPDATE SET {updates}",
        (_uuid_bytes(_text(data, "uuid")), *values),
    )


_Upsert = Callable[[Transaction, Data], Awaitable[None]]
_MODELS: Final[Mapping[str, tuple[str, _Upsert]]] = {
    "location": ("location", _upsert_location),
    "conduit": ("sync_conduit", _upsert_conduit),
    "generation": ("sync_generation", _upsert_generation),
    "conflict": ("sync_conflict", _upsert_conflict),
}


async def _root_entry_of(tx: Transaction, location_uuid: str) -> int:
    row = await tx.fetch_one(
        "SELECT entry_id FROM location WHERE uuid = ?", (_uuid_bytes(location_uuid),)
    )
    if row is None or row["entry_id"] is None:
        raise ReplayError(f"location {location_uuid} is not known (log out of order?)")
    return int(row["entry_id"])


async def _conduit_id_of(tx: Transaction, conduit_uuid: str) -> int:
    row = await tx.fetch_one(
        "SELECT id FROM sync_conduit WHERE uuid = ?", (_uuid_bytes(conduit_uuid),)
    )
    if row is None:
        raise ReplayError(f"conduit {conduit_uuid} is not known (log out of order?)")
    return int(row["id"])


def _uuid_bytes(text: str) -> bytes:
    try:
        return uuid.UUID(text).bytes
    except ValueError as exc:
        raise ReplayError(f"{text!r} is not a uuid") from exc


def _text(data: Data, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ReplayError(f"sync data {key!r} is not text: {value!r}")
    return value


def _opt_text(data: Data, key: str) -> str | None:
    return None if data.get(key) is None else _text(data, key)


def _int(data: Data, key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ReplayError(f"sync data {key!r} is not an integer: {value!r}")
    return value


def _opt_int(data: Data, key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _bool(data: Data, key: str) -> int:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ReplayError(f"sync data {key!r} is not a boolean: {value!r}")
    return int(value)
