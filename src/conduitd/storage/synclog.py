"""SyncLogDb (seed LSYNC-008): the append-only sync log in a library's sync.db.

Sequences are allocated inside the appending `BEGIN IMMEDIATE` transaction as
`max(sequence) + 1`, so they are monotonic, unique and gap-free whoever
appends (tasks sharing a connection, or processes sharing the file).

Appending is the leader's job: it asks a `LeaderGuard` for the current term
first (NotLeader on a follower), and the term is fenced in `sync_log_meta`,
so a stale leader whose check raced a takeover is refused once the new leader
has appended.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from conduitd.errors import NotLeader, StorageError
from conduitd.storage.database import Database, Row, Transaction
from conduitd.storage.syncable import ChangeType
from conduitd.timeutil import format_utc

FENCE_KEY: Final = "fence_term"
_COLUMNS: Final = (
    "sequence, device_id, timestamp, model_type, record_id, change_type, version, data"
)


class LeaderGuard(Protocol):
    """Who may append: returns the current leader term, or raises NotLeader."""

    async def ensure_leader(self) -> int: ...


@dataclass(frozen=True, slots=True)
class NewLogEntry:
    """An entry to append; the log gives it its sequence.

    `origin` and `origin_outbox_id` name the outbox row it was drained from
    (see `TransactionManager`); an entry already appended from the same row is
    not appended twice.
    """

    device_id: str
    timestamp: str
    model_type: str
    record_id: str
    change_type: ChangeType
    version: int
    data: str
    origin: str | None = None
    origin_outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class SyncLogEntry:
    """One row of `sync_log`; `data` is the JSON text it was logged with."""

    sequence: int
    device_id: str
    timestamp: str
    model_type: str
    record_id: str
    change_type: ChangeType
    version: int
    data: str

    @classmethod
    def from_row(cls, row: Row) -> SyncLogEntry:
        return cls(
            sequence=row["sequence"],
            device_id=row["device_id"],
            timestamp=row["timestamp"],
            model_type=row["model_type"],
            record_id=row["record_id"],
            change_type=ChangeType(row["change_type"]),
            version=row["version"],
            data=row["data"],
        )

    def payload(self) -> dict[str, object]:
        """`data` parsed; StorageError when it is not a JSON object."""
        try:
            value = json.loads(self.data)
        except ValueError as exc:
            raise StorageError(f"sync log entry {self.sequence}: bad data") from exc
        if not isinstance(value, dict):
            raise StorageError(f"sync log entry {self.sequence}: data is not an object")
        return value

    def to_document(self) -> dict[str, object]:
        """The `conduitd log --json` shape of DESIGN.md "Interfaces"."""
        return {
            "sequence": self.sequence,
            "device_id": self.device_id,
            "timestamp": self.timestamp,
            "model_type": self.model_type,
            "record_id": self.record_id,
            "change_type": self.change_type.value,
            "version": self.version,
            "data": self.payload(),
        }


class SyncLogDb:
    """The sync log of one library. `guard=None` opens it read-only."""

    def __init__(self, db: Database, guard: LeaderGuard | None = None) -> None:
        self.db = db
        self._guard = guard

    async def append(self, entry: NewLogEntry) -> int:
        """Append one entry; return its sequence (an existing one for a duplicate).

        Raises:
            NotLeader: this device does not hold the lease, or a newer leader
                term has appended since.
        """
        sequences = await self.append_many([entry])
        if sequences:
            return sequences[0]
        row = await self.db.fetch_one(
            "SELECT sequence FROM sync_log WHERE origin = ? AND origin_outbox_id = ?",
            (entry.origin, entry.origin_outbox_id),
        )
        assert row is not None  # append_many skipped it because it exists
        return int(row["sequence"])

    async def append_many(self, entries: Sequence[NewLogEntry]) -> list[int]:
        """Append entries in order, in one transaction; return the new sequences.

        Entries whose (origin, origin_outbox_id) is already in the log, or at or
        below that origin's drained mark, are skipped: the drainer may repeat
        itself after a crash without duplicating anything.
        """
        if self._guard is None:
            raise NotLeader("the sync log was opened read-only")
        term = await self._guard.ensure_leader()
        if not entries:
            return []
        async with self.db.transaction() as tx:
            await _check_fence(tx, term)
            fresh = await _without_duplicates(tx, entries)
            row = await tx.fetch_one("SELECT COALESCE(MAX(sequence), 0) FROM sync_log")
            start = int(row[0]) + 1 if row is not None else 1
            sequences = list(range(start, start + len(fresh)))
            await tx.execute_many(
                "INSERT INTO sync_log (sequence, device_id, timestamp, model_type,"
                " record_id, change_type, version, data, origin, origin_outbox_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        seq,
                        e.device_id,
                        e.timestamp,
                        e.model_type,
                        e.record_id,
                        e.change_type.value,
                        e.version,
                        e.data,
                        e.origin,
                        e.origin_outbox_id,
                    )
                    for seq, e in zip(sequences, fresh, strict=True)
                ],
            )
            await _raise_drained_marks(tx, entries)
        return sequences

    async def fetch_since(
        self, sequence: int, limit: int | None = None
    ) -> list[SyncLogEntry]:
        """Entries with a sequence greater than `sequence`, oldest first."""
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM sync_log WHERE sequence > ?"
            " ORDER BY sequence LIMIT ?",
            (sequence, -1 if limit is None else limit),
        )
        return [SyncLogEntry.from_row(r) for r in rows]

    async def fetch_range(self, start: int, end: int) -> list[SyncLogEntry]:
        """Entries with `start <= sequence <= end`, oldest first."""
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM sync_log WHERE sequence BETWEEN ? AND ?"
            " ORDER BY sequence",
            (start, end),
        )
        return [SyncLogEntry.from_row(r) for r in rows]

    async def latest_sequence(self) -> int:
        """The highest sequence appended, 0 for an empty log."""
        row = await self.db.fetch_one("SELECT COALESCE(MAX(sequence), 0) FROM sync_log")
        return int(row[0]) if row is not None else 0

    async def count(self) -> int:
        row = await self.db.fetch_one("SELECT COUNT(*) FROM sync_log")
        return int(row[0]) if row is not None else 0

    async def drained_mark(self, origin: str) -> int:
        """The highest outbox id of `origin` already appended (0: none)."""
        row = await self.db.fetch_one(
            "SELECT value FROM sync_log_meta WHERE key = ?", (_drained_key(origin),)
        )
        return int(row["value"]) if row is not None else 0

    async def vacuum_old_entries(self, before: datetime) -> int:
        """Delete entries older than `before`, except each record's first and last.

        The last entry carries the record's final state (every entry is a full
        snapshot); the first one precedes every entry that refers to the
        record, so replaying what is left, in order, still finds each parent
        before its children and reproduces the same records. Tombstones
        (deletes) are last entries and are kept. Returns the number deleted.
        """
        async with self.db.transaction() as tx:
            return await tx.execute(
                "DELETE FROM sync_log WHERE timestamp < ? AND sequence NOT IN ("
                " SELECT MIN(sequence) FROM sync_log GROUP BY model_type, record_id"
                " UNION ALL"
                " SELECT MAX(sequence) FROM sync_log GROUP BY model_type, record_id)",
                (format_utc(before),),
            )


async def _check_fence(tx: Transaction, term: int) -> None:
    row = await tx.fetch_one(
        "SELECT value FROM sync_log_meta WHERE key = ?", (FENCE_KEY,)
    )
    fenced = int(row["value"]) if row is not None else 0
    if term < fenced:
        raise NotLeader(f"leader term {term} was superseded by term {fenced}")
    if term > fenced:
        await tx.execute(
            "INSERT INTO sync_log_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (FENCE_KEY, term),
        )


async def _without_duplicates(
    tx: Transaction, entries: Sequence[NewLogEntry]
) -> list[NewLogEntry]:
    origins = {e.origin for e in entries if e.origin is not None}
    if not origins:
        return list(entries)
    seen: set[tuple[str, int]] = set()
    marks: dict[str, int] = {}
    for origin in origins:
        marks[origin] = await _mark_in(tx, origin)
        ids = [e.origin_outbox_id for e in entries if e.origin == origin]
        known = [i for i in ids if i is not None]
        if not known:
            continue
        rows = await tx.fetch_all(
            "SELECT origin_outbox_id FROM sync_log WHERE origin = ?"
            " AND origin_outbox_id BETWEEN ? AND ?",
            (origin, min(known), max(known)),
        )
        seen.update((origin, int(r[0])) for r in rows)
    fresh = []
    for e in entries:
        if e.origin is not None and e.origin_outbox_id is not None:
            key = (e.origin, e.origin_outbox_id)
            if key in seen or e.origin_outbox_id <= marks[e.origin]:
                continue
            seen.add(key)
        fresh.append(e)
    return fresh


async def _raise_drained_marks(tx: Transaction, entries: Sequence[NewLogEntry]) -> None:
    marks: dict[str, int] = {}
    for e in entries:
        if e.origin is not None and e.origin_outbox_id is not None:
            marks[e.origin] = max(marks.get(e.origin, 0), e.origin_outbox_id)
    for origin, mark in marks.items():
        await tx.execute(
            "INSERT INTO sync_log_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            (_drained_key(origin), mark),
        )


async def _mark_in(tx: Transaction, origin: str) -> int:
    row = await tx.fetch_one(
        "SELECT value FROM sync_log_meta WHERE key = ?", (_drained_key(origin),)
    )
    return int(row["value"]) if row is not None else 0


def _drained_key(origin: str) -> str:
    return f"drained:{origin}"
