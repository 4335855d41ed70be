"""TransactionManager: atomic logged writes, events, the drainer, followers, wiring."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from conduitd.config import load_config
from conduitd.config.enums import SyncMode
from conduitd.errors import StorageError
from conduitd.storage.conduits import ConduitManager, ConduitSettings, GenerationStatus
from conduitd.storage.conflicts import (
    ConflictRepository,
    ConflictSide,
    ConflictStatus,
    Resolution,
)
from conduitd.storage.leadership import LeadershipManager
from conduitd.storage.library import Library, open_library
from conduitd.storage.locations import LocationRecord, ensure_location, list_locations
from conduitd.storage.log_view import log_entries, log_lines
from conduitd.storage.models import EntryKind
from conduitd.storage.reconcile import reconcile_conduits
from conduitd.storage.replay import replay_log
from conduitd.storage.syncable import ChangeType
from conduitd.storage.transactions import (
    LoggedChange,
    TransactionManager,
    open_transaction_manager,
)
from helpers.cli import write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await open_library(tmp_path / "state")
    try:
        yield lib
    finally:
        await lib.close()


@pytest.fixture
async def tm(library: Library) -> AsyncIterator[TransactionManager]:
    manager = await open_transaction_manager(library)
    yield manager
    manager.close()


async def add_location(tm: TransactionManager, path: str) -> LocationRecord:
    async with tm.transaction() as tx:
        record, _ = await ensure_location(tx, str(tm.library.device_id), Path(path))
    return record


def settings(
    name: str, source: LocationRecord, target: LocationRecord
) -> ConduitSettings:
    return ConduitSettings(
        name=name,
        source_entry_id=source.entry_id,
        target_entry_id=target.entry_id,
        sync_mode=SyncMode.MIRROR,
        enabled=True,
        schedule="manual",
        use_index_rules=True,
        parallel_transfers=3,
        bandwidth_limit_mbps=None,
    )


async def outbox_ids(library: Library) -> list[int]:
    rows = await library.db.fetch_all("SELECT id FROM sync_outbox ORDER BY id")
    return [int(r["id"]) for r in rows]


async def test_domain_write_and_its_log_row_roll_back_together(
    tm: TransactionManager, library: Library
) -> None:
    async def write_then_fail() -> None:
        async with tm.transaction() as tx:
            await ensure_location(tx, str(library.device_id), Path("/data/a"))
            await tx.write_log()
            assert await tx.fetch_all("SELECT id FROM sync_outbox")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    assert await list_locations(library.db) == []
    assert await outbox_ids(library) == []


async def test_logged_write_commits_its_outbox_row_and_announces_it(
    tm: TransactionManager, library: Library
) -> None:
    events = tm.subscribe()
    source = await add_location(tm, "/data/src")
    target = await add_location(tm, "/data/dst")
    async with tm.transaction() as tx:
        conduit = await ConduitManager(library.db).create(
            tx, settings("photos", source, target)
        )
        assert events.statistics().current_buffer_used == 2  # only after commit
    got = [events.receive_nowait() for _ in range(3)]
    assert got == [
        LoggedChange("location", str(source.uuid), ChangeType.INSERT, 1),
        LoggedChange("location", str(target.uuid), ChangeType.INSERT, 1),
        LoggedChange("conduit", str(conduit.uuid), ChangeType.INSERT, 1),
    ]
    rows = await library.db.fetch_all("SELECT * FROM sync_outbox ORDER BY id")
    assert [r["model_type"] for r in rows] == ["location", "location", "conduit"]
    assert rows[2]["data"] == conduit.to_sync_json()
    assert rows[0]["device_id"] == str(library.device_id)
    events.close()


async def test_a_slow_subscriber_never_blocks_the_writer(
    tm: TransactionManager, library: Library
) -> None:
    slow = tm.subscribe(max_buffer=2)
    closed = tm.subscribe()
    closed.close()
    with capture_logs() as logs, anyio.fail_after(5):
        for i in range(10):
            await add_location(tm, f"/data/{i}")
    assert slow.statistics().current_buffer_used == 2
    dropped = [e for e in logs if e["event"] == "sync_event_dropped"]
    assert dropped
    assert dropped[0]["dropped"] == 1
    assert len(await list_locations(library.db)) == 10
    tm.close()
    with slow:
        assert len([e async for e in slow]) == 2  # buffered events, then the end


async def test_drain_appends_in_order_and_empties_the_outbox(
    tm: TransactionManager, library: Library
) -> None:
    records = [await add_location(tm, f"/data/{i}") for i in range(5)]
    assert await tm.pending_count() == 5
    await tm.flushed()
    assert await tm.pending_count() == 0
    entries = await tm.log.fetch_since(0)
    assert [e.sequence for e in entries] == [1, 2, 3, 4, 5]
    assert [e.record_id for e in entries] == [str(r.uuid) for r in records]
    assert {e.device_id for e in entries} == {str(library.device_id)}
    assert await tm.drain_once() == 0


async def test_a_drain_repeated_after_a_crash_duplicates_nothing(
    tm: TransactionManager, library: Library
) -> None:
    for i in range(3):
        await add_location(tm, f"/data/{i}")
    rows = await library.db.fetch_all("SELECT * FROM sync_outbox ORDER BY id")
    assert await tm.drain_once() == 3
    # As if the process died after the append and before the outbox delete.
    async with library.db.transaction() as tx:
        await tx.execute_many(
            "INSERT INTO sync_outbox (id, device_id, created_at, model_type,"
            " record_id, change_type, version, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [tuple(r) for r in rows],
        )
    await add_location(tm, "/data/new")
    assert await tm.drain_once() == 4
    entries = await tm.log.fetch_since(0)
    assert [e.sequence for e in entries] == [1, 2, 3, 4]
    assert len({e.record_id for e in entries}) == 4


async def test_a_followers_rows_wait_in_the_outbox_until_it_leads(
    library: Library,
) -> None:
    clock = FakeClock()
    leader = LeadershipManager(library, clock=clock)
    await leader.start()
    follower_lm = LeadershipManager(library, clock=clock, device_id=uuid.uuid4())
    await follower_lm.start()
    follower = TransactionManager(library, follower_lm)
    await add_location(follower, "/data/a")
    await follower.flushed()  # committed locally is all a follower promises
    assert await follower.drain_once() == 0
    assert await follower.pending_count() == 1
    assert await follower.log.latest_sequence() == 0
    clock.now += timedelta(seconds=61)
    await follower_lm.tick()
    await follower.flushed()
    assert await follower.pending_count() == 0
    assert await follower.log.latest_sequence() == 1


async def test_a_stale_leader_stops_draining_and_the_new_one_drains(
    library: Library,
) -> None:
    clock = FakeClock()
    old_lm = LeadershipManager(library, clock=clock)
    await old_lm.start()
    old = TransactionManager(library, old_lm)
    await add_location(old, "/data/a")
    await old.flushed()
    new_lm = LeadershipManager(library, clock=clock, device_id=uuid.uuid4())
    await new_lm.start()
    clock.now += timedelta(seconds=61)
    await new_lm.tick()
    await add_location(old, "/data/b")
    assert await old.drain_once() == 0
    assert not old_lm.is_leader()
    new = TransactionManager(library, new_lm)
    assert await new.drain_once() == 1
    assert [e.sequence for e in await new.log.fetch_since(0)] == [1, 2]


async def test_bulk_changes_are_one_entry_that_asks_followers_to_index(
    tm: TransactionManager, library: Library
) -> None:
    location = await add_location(tm, "/data/big")
    events = tm.subscribe()
    async with tm.transaction() as tx:
        await tx.log_bulk(
            "entry", 5000, {"location": str(location.uuid), "added": 5000}
        )
    await tm.log_bulk("entry", 10, {"location": str(location.uuid), "removed": 10})
    await tm.flushed()
    entries = await tm.log.fetch_since(1)
    assert [(e.change_type, e.record_id) for e in entries] == [
        (ChangeType.BULK_INSERT, str(location.uuid))
    ] * 2
    assert entries[0].payload() == {
        "model_type": "entry",
        "count": 5000,
        "summary": {"location": str(location.uuid), "added": 5000},
    }
    assert events.receive_nowait().count == 5000
    other = await open_library(library.directory.parent.parent.parent / "other")
    try:
        report = await replay_log(tm.log, other.db)
        assert report.reindex == [str(location.uuid)] * 2
    finally:
        await other.close()
    events.close()
    with pytest.raises(StorageError):
        await tm.log_change(location, ChangeType.BULK_INSERT)


async def test_log_batch_writes_one_row_per_record(
    tm: TransactionManager, library: Library
) -> None:
    records = [await add_location(tm, f"/data/{i}") for i in range(50)]
    await tm.flushed()
    await tm.log_batch(records, ChangeType.UPDATE)
    await tm.flushed()
    entries = await tm.log.fetch_since(50)
    assert [e.record_id for e in entries] == [str(r.uuid) for r in records]
    assert {e.change_type for e in entries} == {ChangeType.UPDATE}


async def test_the_drainer_task_drains_after_each_commit(
    tm: TransactionManager,
) -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(tm.leadership.run_heartbeat)
            await tg.start(partial(tm.run_drainer, poll_s=60))
            await add_location(tm, "/data/a")
            # The drainer is another task; the log is what it changes.
            while await tm.log.latest_sequence() < 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert await tm.pending_count() == 0


async def test_conduit_writes_outside_the_transaction_manager_are_refused(
    tm: TransactionManager, library: Library
) -> None:
    source = await add_location(tm, "/data/src")
    target = await add_location(tm, "/data/dst")
    with pytest.raises(StorageError, match="TransactionManager"):
        async with library.db.transaction() as tx:
            await ConduitManager(library.db).create(tx, settings("x", source, target))  # type: ignore[arg-type]
    assert await ConduitManager(library.db).list_all() == []


async def test_generation_lifecycle_is_logged(
    tm: TransactionManager, library: Library
) -> None:
    source = await add_location(tm, "/data/src")
    target = await add_location(tm, "/data/dst")
    manager = ConduitManager(library.db)
    async with tm.transaction() as tx:
        conduit = await manager.create(tx, settings("photos", source, target))
        generation = await manager.create_generation(tx, conduit.id)
        await manager.complete_generation(tx, generation.id, GenerationStatus.COMPLETED)
        await manager.set_error(tx, conduit.id, "disk on fire")
        await manager.set_error(tx, conduit.id, "disk on fire")  # unchanged: no entry
    await tm.flushed()
    kinds = [(e.model_type, e.change_type.value) for e in await tm.log.fetch_since(2)]
    assert kinds == [
        ("conduit", "insert"),
        ("conduit", "update"),
        ("generation", "insert"),
        ("generation", "update"),
        ("conduit", "update"),
        ("conduit", "update"),
    ]
    last = (await tm.log.fetch_since(7))[0].payload()
    assert last["last_sync_error"] == "disk on fire"
    assert last["version"] == (await manager.get(conduit.id)).version  # type: ignore[union-attr]


async def test_conflicts_are_created_listed_and_resolved_with_log_entries(
    tm: TransactionManager, library: Library
) -> None:
    source = await add_location(tm, "/data/src")
    target = await add_location(tm, "/data/dst")
    repo = ConflictRepository(library.db)
    async with tm.transaction() as tx:
        conduit = await ConduitManager(library.db).create(
            tx, settings("notes", source, target)
        )
        conflict = await repo.create(
            tx,
            conduit_id=conduit.id,
            relative_path=b"a/\xffb.txt",
            detected_generation=1,
            source=ConflictSide(EntryKind.FILE, 3, 10, "a" * 64),
            target=ConflictSide(EntryKind.FILE, 4, 11, "b" * 64),
        )
    assert [c.uuid for c in await repo.list(status=ConflictStatus.PENDING)] == [
        conflict.uuid
    ]
    async with tm.transaction() as tx:
        resolved = await repo.resolve(tx, conflict.id, Resolution.BOTH)
    assert resolved.status is ConflictStatus.RESOLVED
    assert resolved.version == 2
    assert await repo.list(conduit_id=conduit.id, status=ConflictStatus.PENDING) == []
    with pytest.raises(StorageError, match="not pending"):
        async with tm.transaction() as tx:
            await repo.resolve(tx, conflict.id, Resolution.SOURCE)
    await tm.flushed()
    last = (await tm.log.fetch_since(0))[-1]
    assert (last.model_type, last.change_type) == ("conflict", ChangeType.UPDATE)
    assert last.payload()["relative_path_b64"] == "YS//Yi50eHQ="


async def test_reconciliation_logs_locations_and_conduits(tmp_path: Path) -> None:
    for name in ("src", "dst", "other"):
        (tmp_path / name).mkdir()
    state = tmp_path / "state"
    conduit = {"name": "photos", "source": "src", "target": "dst"}
    config = load_config(write_config(tmp_path / "c.toml", state, [conduit]))
    library = await open_library(state)
    try:
        await reconcile_conduits(library, config)
        entries = await log_entries(library)
        assert [(e["model_type"], e["change_type"]) for e in entries] == [
            ("location", "insert"),
            ("location", "insert"),
            ("conduit", "insert"),
        ]
        await reconcile_conduits(library, config)
        assert len(await log_entries(library)) == 3
        moved = {**conduit, "target": "other"}
        config = load_config(write_config(tmp_path / "c.toml", state, [moved]))
        await reconcile_conduits(library, config)
        entries = await log_entries(library, since=3)
        assert [(e["model_type"], e["change_type"]) for e in entries] == [
            ("location", "insert"),
            ("conduit", "update"),
        ]
        data = entries[1]["data"]
        assert isinstance(data, dict)
        assert data["target_location_uuid"] == entries[0]["record_id"]
        assert (
            await log_entries(library, since=0, limit=2)
            == (await log_entries(library))[:2]
        )
        lines = log_lines(await log_entries(library))
        assert len(lines) == 5
        assert "photos" in lines[2]
        assert "insert" in lines[2]
        json.dumps(await log_entries(library))
    finally:
        await library.close()
