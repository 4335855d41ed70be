"""SyncLogDb on a real sync.db: sequences, fetches, fencing, dedupe, vacuum."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import pytest

from conduitd.errors import NotLeader
from conduitd.storage.database import Database
from conduitd.storage.library import Library, open_library
from conduitd.storage.migrations import migrate_up
from conduitd.storage.schema_synclog import SYNCLOG_MIGRATIONS
from conduitd.storage.syncable import ChangeType
from conduitd.storage.synclog import NewLogEntry, SyncLogDb
from conduitd.timeutil import format_utc

pytestmark = pytest.mark.anyio

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StaticGuard:
    """A LeaderGuard that always answers with one term."""

    def __init__(self, term: int = 1) -> None:
        self.term = term

    async def ensure_leader(self) -> int:
        return self.term


class FollowerGuard:
    async def ensure_leader(self) -> int:
        raise NotLeader("follower")


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await open_library(tmp_path / "state")
    try:
        yield lib
    finally:
        await lib.close()


def entry(
    record: str = "r1",
    *,
    model: str = "conduit",
    change: ChangeType = ChangeType.UPDATE,
    timestamp: str = "2026-01-01T00:00:00.000000Z",
    origin: str | None = None,
    outbox_id: int | None = None,
) -> NewLogEntry:
    return NewLogEntry(
        device_id="dev",
        timestamp=timestamp,
        model_type=model,
        record_id=record,
        change_type=change,
        version=1,
        data='{"k":1}',
        origin=origin,
        origin_outbox_id=outbox_id,
    )


async def all_sequences(log: SyncLogDb) -> list[int]:
    return [e.sequence for e in await log.fetch_since(0)]


async def test_empty_log_has_latest_sequence_zero_and_no_entries(
    library: Library,
) -> None:
    log = SyncLogDb(library.sync_db, StaticGuard())
    assert await log.latest_sequence() == 0
    assert await log.fetch_since(0) == []
    assert await log.fetch_range(1, 10) == []


async def test_sequences_are_gap_free_under_concurrent_writers(
    library: Library,
) -> None:
    second = await Database.open(library.sync_db.path)
    try:
        logs = [
            SyncLogDb(library.sync_db, StaticGuard()),
            SyncLogDb(second, StaticGuard()),
        ]
        got: list[int] = []

        async def writer(n: int) -> None:
            log = logs[n % 2]
            for i in range(40):
                if i % 4 == 0:
                    got.extend(await log.append_many([entry(f"w{n}-{i}")] * 3))
                else:
                    got.append(await log.append(entry(f"w{n}-{i}")))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(6):
                    tg.start_soon(writer, n)
        assert sorted(got) == list(range(1, len(got) + 1))
        assert await all_sequences(logs[0]) == list(range(1, len(got) + 1))
    finally:
        await second.close()


async def test_sequences_are_gap_free_across_processes(library: Library) -> None:
    script = textwrap.dedent(
        """
        import sys, anyio
        from pathlib import Path
        from conduitd.storage.database import Database
        from conduitd.storage.syncable import ChangeType
        from conduitd.storage.synclog import NewLogEntry, SyncLogDb

        class Guard:
            async def ensure_leader(self):
                return 1

        async def main(path, name):
            db = await Database.open(Path(path))
            log = SyncLogDb(db, Guard())
            for i in range(100):
                await log.append(NewLogEntry("dev", "2026-01-01T00:00:00.000000Z",
                    "conduit", f"{name}-{i}", ChangeType.UPDATE, 1, "{}"))
            await db.close()

        anyio.run(main, sys.argv[1], sys.argv[2])
        """
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    log = SyncLogDb(library.sync_db, StaticGuard())

    async def in_process() -> None:
        for i in range(100):
            await log.append(entry(f"main-{i}"))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                command = [sys.executable, "-c", script, str(library.sync_db.path)]
                tg.start_soon(partial(anyio.run_process, [*command, f"p{n}"], env=env))
            tg.start_soon(in_process)
    assert await all_sequences(log) == list(range(1, 401))


async def test_fetch_since_and_range_edges(library: Library) -> None:
    log = SyncLogDb(library.sync_db, StaticGuard())
    await log.append_many([entry(f"r{i}") for i in range(10)])
    assert [e.sequence for e in await log.fetch_since(0, 3)] == [1, 2, 3]
    assert [e.sequence for e in await log.fetch_since(8)] == [9, 10]
    assert await log.fetch_since(10) == []
    assert await log.fetch_since(99) == []
    assert [e.sequence for e in await log.fetch_since(3, 0)] == []
    assert [e.sequence for e in await log.fetch_range(4, 6)] == [4, 5, 6]
    assert [e.sequence for e in await log.fetch_range(10, 10)] == [10]
    assert [e.sequence for e in await log.fetch_range(0, 2)] == [1, 2]
    assert await log.fetch_range(6, 4) == []
    assert [e.sequence for e in await log.fetch_range(9, 50)] == [9, 10]
    assert await log.latest_sequence() == 10
    first = (await log.fetch_range(1, 1))[0]
    assert first.to_document() == {
        "sequence": 1,
        "device_id": "dev",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "model_type": "conduit",
        "record_id": "r0",
        "change_type": "update",
        "version": 1,
        "data": {"k": 1},
    }


async def test_follower_append_is_refused_with_a_typed_error(library: Library) -> None:
    for log in (
        SyncLogDb(library.sync_db, FollowerGuard()),
        SyncLogDb(library.sync_db),
    ):
        with pytest.raises(NotLeader):
            await log.append(entry())
        with pytest.raises(NotLeader):
            await log.append_many([entry()])
    assert await SyncLogDb(library.sync_db).latest_sequence() == 0


async def test_stale_term_is_fenced_once_a_newer_leader_appended(
    library: Library,
) -> None:
    old = SyncLogDb(library.sync_db, StaticGuard(term=1))
    new = SyncLogDb(library.sync_db, StaticGuard(term=2))
    assert await old.append(entry("a")) == 1
    assert await new.append(entry("b")) == 2
    with pytest.raises(NotLeader, match="superseded"):
        await old.append(entry("c"))
    assert await new.latest_sequence() == 2


async def test_entries_from_the_same_outbox_row_are_appended_once(
    library: Library,
) -> None:
    log = SyncLogDb(library.sync_db, StaticGuard())
    batch = [entry(f"r{i}", origin="o1", outbox_id=i) for i in range(1, 6)]
    assert await log.append_many(batch) == [1, 2, 3, 4, 5]
    assert await log.append_many(batch) == []
    assert await log.append(batch[2]) == 3
    # A crash after a partial drain: old and new rows come again together.
    more = [*batch[3:], entry("r6", origin="o1", outbox_id=6)]
    assert await log.append_many(more) == [6]
    # Another library.db incarnation (new origin) starts its ids again.
    assert await log.append(entry("x", origin="o2", outbox_id=1)) == 7
    assert await log.drained_mark("o1") == 6
    assert await log.count() == 7


async def test_vacuum_keeps_first_and_last_entry_of_every_record(
    library: Library,
) -> None:
    log = SyncLogDb(library.sync_db, StaticGuard())
    old = format_utc(datetime(2020, 1, 1, tzinfo=UTC))
    for _ in range(5):
        await log.append(entry("a", timestamp=old))
        await log.append(entry("b", timestamp=old))
    await log.append(entry("c", timestamp=old, change=ChangeType.DELETE))
    recent = format_utc(datetime.now(UTC))
    await log.append(entry("a", timestamp=recent))
    deleted = await log.vacuum_old_entries(datetime.now(UTC) - timedelta(days=1))
    kept = [(e.record_id, e.sequence) for e in await log.fetch_since(0)]
    # a: first (1) and last (12); its old middles go. b: first (2) and last (10).
    assert kept == [("a", 1), ("b", 2), ("b", 10), ("c", 11), ("a", 12)]
    assert deleted == 7
    assert await log.latest_sequence() == 12
    assert await log.append(entry("d")) == 13


async def test_sync_db_migrations_are_recorded(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "sync.db")
    try:
        applied = await migrate_up(db, SYNCLOG_MIGRATIONS)
        assert [m.version for m in applied] == [1, 101]
        assert await migrate_up(db, SYNCLOG_MIGRATIONS) == []
    finally:
        await db.close()
