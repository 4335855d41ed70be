"""TransactionManager (seed LSYNC-006): logged writes, the outbox and its drainer.

A domain write and its log record commit together: `tm.transaction()` is one
`BEGIN IMMEDIATE` on library.db, and `tx.log_change` writes a `sync_outbox`
row in it. The drainer then appends outbox rows to sync.db and deletes them;
the append is idempotent by outbox id (see `SyncLogDb.append_many`), so a
crash at any point loses nothing and duplicates nothing. Every process writes
outbox rows; only the leader drains them.

The one way to do a logged write::

    async with tm.transaction() as tx:
        record = await manager.create(tx, settings)   # logs its own change
        await tx.log_change(other_record, ChangeType.UPDATE)
    await tm.flushed()                                 # when the caller must know
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from conduitd.crashpoints import crash_point
from conduitd.errors import NotLeader, StorageError
from conduitd.storage.database import Row, Transaction
from conduitd.storage.leadership import Clock, LeadershipManager
from conduitd.storage.library import Library
from conduitd.storage.syncable import ChangeType, Syncable, canonical_json
from conduitd.storage.synclog import NewLogEntry, SyncLogDb
from conduitd.timeutil import utc_now, utc_now_text

logger = structlog.get_logger()

DRAIN_BATCH = 1000
ORIGIN_KEY = "outbox_origin"
_OUTBOX_INSERT = (
    "INSERT INTO sync_outbox (device_id, created_at, model_type, record_id,"
    " change_type, version, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """A change that committed with its outbox row; `count` > 1 for bulk entries."""

    model_type: str
    record_id: str
    change_type: ChangeType
    version: int
    count: int = 1


class LoggedTransaction(Transaction):
    """A library.db transaction that also writes outbox rows (`log_*`).

    Log rows are buffered and written with one statement just before the
    commit (`TransactionManager.transaction` calls `write_log`): logging costs
    no database round trip per record, and the rows still commit or roll back
    with the domain writes.
    """

    def __init__(self, inner: Transaction, device_id: str) -> None:
        # The same connection inside the same BEGIN IMMEDIATE: every statement
        # of Transaction works unchanged, and outbox rows join the domain write.
        super().__init__(inner._conn)
        self._device_id = device_id
        self._rows: list[tuple[str, str, str, str, str, int, str]] = []
        self._timestamp: str | None = None
        self.changes: list[LoggedChange] = []

    def _now(self) -> str:
        # One timestamp per transaction: its changes happen together.
        if self._timestamp is None:
            self._timestamp = utc_now_text()
        return self._timestamp

    async def log_change(self, record: Syncable, change_type: ChangeType) -> None:
        """Log one record's full state (for a delete: its last state)."""
        await self.log_batch((record,), change_type)

    async def log_batch(
        self, records: Iterable[Syncable], change_type: ChangeType
    ) -> None:
        """Log each record (meant for 10 to 1,000 of them): one entry each."""
        if change_type is ChangeType.BULK_INSERT:
            raise StorageError("bulk_insert entries are written by log_bulk")
        now = self._now()
        change = change_type.value
        for record in records:
            record_id = str(record.record_uuid)
            model, version = record.model_type, record.version
            self._rows.append(
                (
                    self._device_id,
                    now,
                    model,
                    record_id,
                    change,
                    version,
                    record.to_sync_json(),
                )
            )
            self.changes.append(LoggedChange(model, record_id, change_type, version))

    async def log_bulk(
        self,
        model_type: str,
        count: int,
        summary: Mapping[str, object],
        *,
        record_id: str | uuid.UUID | None = None,
    ) -> None:
        """Log 1,000+ items as one `bulk_insert` entry instead of one per item.

        For index entries, `summary["location"]` names the location (uuid
        text); it becomes the record id (unless `record_id` is given), and tells
        a follower to index that location itself.
        """
        if record_id is None:
            location = summary.get("location")
            record_id = str(location) if location is not None else uuid.uuid4()
        data = canonical_json(
            {"model_type": model_type, "count": count, "summary": dict(summary)}
        )
        bulk = ChangeType.BULK_INSERT
        self._rows.append(
            (
                self._device_id,
                self._now(),
                model_type,
                str(record_id),
                bulk.value,
                1,
                data,
            )
        )
        self.changes.append(LoggedChange(model_type, str(record_id), bulk, 1, count))

    async def write_log(self) -> None:
        """Write the buffered outbox rows (the TransactionManager calls this)."""
        rows, self._rows = self._rows, []
        if rows:  # executemany: one round trip to the connection's thread
            await self.execute_many(_OUTBOX_INSERT, rows)


@dataclass(slots=True)
class _Subscriber:
    stream: MemoryObjectSendStream[LoggedChange]
    dropped: int = 0


class TransactionManager:
    """Logged writes for one library; drains the outbox while this device leads."""

    def __init__(self, library: Library, leadership: LeadershipManager) -> None:
        self.library = library
        self.leadership = leadership
        self.log = SyncLogDb(library.sync_db, leadership)
        self._device_id = str(library.device_id)
        self._subscribers: list[_Subscriber] = []
        self._drain_lock: anyio.Lock | None = None
        self._wake: anyio.Event | None = None
        self._origin: str | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[LoggedTransaction]:
        """One library.db transaction whose `log_*` rows commit with it."""
        async with self.library.db.transaction() as inner:
            tx = LoggedTransaction(inner, self._device_id)
            yield tx
            await tx.write_log()
            crash_point("tm.after_domain_write")
        crash_point("tm.after_outbox_commit")
        if tx.changes:
            self._announce(tx.changes)

    async def log_change(self, record: Syncable, change_type: ChangeType) -> None:
        """Log one record in a transaction of its own."""
        async with self.transaction() as tx:
            await tx.log_change(record, change_type)

    async def log_batch(
        self, records: Iterable[Syncable], change_type: ChangeType
    ) -> None:
        async with self.transaction() as tx:
            await tx.log_batch(records, change_type)

    async def log_bulk(
        self, model_type: str, count: int, summary: Mapping[str, object]
    ) -> None:
        async with self.transaction() as tx:
            await tx.log_bulk(model_type, count, summary)

    def subscribe(
        self, max_buffer: int = 1024
    ) -> MemoryObjectReceiveStream[LoggedChange]:
        """A stream of every change committed from now on.

        The writer never waits for a subscriber: when the stream's buffer is
        full, changes are dropped for that subscriber (with a warning).
        Closing the receive stream unsubscribes.
        """
        send, receive = anyio.create_memory_object_stream[LoggedChange](max_buffer)
        self._subscribers.append(_Subscriber(send))
        return receive

    def close(self) -> None:
        """End every subscriber's stream (their `async for` loops finish)."""
        for subscriber in self._subscribers:
            subscriber.stream.close()
        self._subscribers.clear()

    async def pending_count(self) -> int:
        """Outbox rows not yet in the sync log."""
        row = await self.library.db.fetch_one("SELECT COUNT(*) FROM sync_outbox")
        return int(row[0]) if row is not None else 0

    async def drain_once(self, limit: int = DRAIN_BATCH) -> int:
        """Append up to `limit` of the oldest outbox rows to the log, then drop them.

        Returns how many rows were drained: 0 when the outbox is empty or this
        device is not the leader (its rows wait).
        """
        async with self._lock():
            # A follower skips reading rows it may not append (append_many
            # re-checks the lease for a leader anyway).
            if not self.leadership.is_leader() and not await self.leadership.check():
                return 0
            rows = await self.library.db.fetch_all(
                "SELECT * FROM sync_outbox ORDER BY id LIMIT ?", (limit,)
            )
            if not rows:
                return 0
            origin = await self._outbox_origin()
            entries = [_entry_from_outbox(row, origin) for row in rows]
            try:
                await self.log.append_many(entries)
            except NotLeader as exc:
                logger.debug("outbox_waits_for_leadership", reason=str(exc))
                return 0
            crash_point("drain.after_append")
            last_id = int(rows[-1]["id"])
            async with self.library.db.transaction() as tx:
                crash_point("drain.before_outbox_delete")
                await tx.execute("DELETE FROM sync_outbox WHERE id <= ?", (last_id,))
            return len(rows)

    async def flushed(self) -> None:
        """Return once what was committed before the call is as logged as it gets.

        Leader: the outbox rows committed so far are appended to sync.db
        (synchronous=FULL: durable) and removed, drained inline. Follower:
        they are committed in library.db, which `transaction()` already did.
        """
        if not await self.leadership.check():
            return
        row = await self.library.db.fetch_one("SELECT MAX(id) FROM sync_outbox")
        mark = row[0] if row is not None else None
        while mark is not None:
            row = await self.library.db.fetch_one("SELECT MIN(id) FROM sync_outbox")
            oldest = row[0] if row is not None else None
            if oldest is None or oldest > mark or await self.drain_once() == 0:
                return

    async def run_drainer(
        self,
        *,
        poll_s: float = 1.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Drain after every commit, and every `poll_s` (other processes' rows,
        a leadership gained), until cancelled."""
        task_status.started()
        while True:
            try:
                while await self.drain_once():
                    pass
            except StorageError:
                logger.exception("outbox_drain_failed")
            with anyio.move_on_after(poll_s):
                await self._wake_event().wait()
            self._wake = anyio.Event()

    def _announce(self, changes: list[LoggedChange]) -> None:
        self._wake_event().set()
        for subscriber in list(self._subscribers):
            for change in changes:
                try:
                    subscriber.stream.send_nowait(change)
                except anyio.WouldBlock:
                    subscriber.dropped += 1
                    if subscriber.dropped == 1 or subscriber.dropped % 1000 == 0:
                        logger.warning("sync_event_dropped", dropped=subscriber.dropped)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    subscriber.stream.close()
                    self._subscribers.remove(subscriber)
                    break

    def _wake_event(self) -> anyio.Event:
        if self._wake is None:
            self._wake = anyio.Event()
        return self._wake

    def _lock(self) -> anyio.Lock:
        if self._drain_lock is None:
            self._drain_lock = anyio.Lock()
        return self._drain_lock

    async def _outbox_origin(self) -> str:
        """This library.db's outbox identity, created once (see schema_synclog)."""
        if self._origin is None:
            async with self.library.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO library_info (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO NOTHING",
                    (ORIGIN_KEY, str(uuid.uuid4())),
                )
                row = await tx.fetch_one(
                    "SELECT value FROM library_info WHERE key = ?", (ORIGIN_KEY,)
                )
            assert row is not None  # inserted just above
            self._origin = str(row["value"])
        return self._origin


def _entry_from_outbox(row: Row, origin: str) -> NewLogEntry:
    return NewLogEntry(
        device_id=row["device_id"],
        timestamp=row["created_at"],
        model_type=row["model_type"],
        record_id=row["record_id"],
        change_type=ChangeType(row["change_type"]),
        version=row["version"],
        data=row["data"],
        origin=origin,
        origin_outbox_id=row["id"],
    )


async def open_transaction_manager(
    library: Library,
    *,
    heartbeat_s: float = 30.0,
    lease_s: float = 60.0,
    clock: Clock = utc_now,
) -> TransactionManager:
    """A TransactionManager whose LeadershipManager has taken or followed the lease.

    One per process and library. The daemon then runs
    `tm.leadership.run_heartbeat` and `tm.run_drainer` in its task group; a
    one-shot command calls `await tm.flushed()` before it exits.
    """
    leadership = LeadershipManager(
        library, heartbeat_s=heartbeat_s, lease_s=lease_s, clock=clock
    )
    await leadership.start()
    return TransactionManager(library, leadership)
