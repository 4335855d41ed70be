"""Watchers keep the index true: events, failures, restarts, barriers."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import blake3
import pytest
from structlog.testing import capture_logs

from conduitd.index import Indexer, LocationState
from conduitd.index.watcher import (
    EventBatch,
    WatcherOverflow,
    WatchPace,
    watch_batches,
)
from conduitd.storage.entries import load_entry_map
from conduitd.storage.library import Library, open_library
from conduitd.storage.locations import LocationRecord, ensure_location
from conduitd.storage.models import EntryRow

pytestmark = pytest.mark.anyio

DEADLINE_S = 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await open_library(tmp_path / "state")
    try:
        yield lib
    finally:
        await lib.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


async def add_location(library: Library, path: Path) -> LocationRecord:
    async with library.db.transaction() as tx:
        record, _created = await ensure_location(tx, str(library.device_id), path)
    return record


@asynccontextmanager
async def watching(indexer: Indexer, *records: LocationRecord) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(DEADLINE_S):
            await tg.start(indexer.run_watchers, list(records))
        yield
        tg.cancel_scope.cancel()


async def wait_for(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds, within the deadline."""
    with anyio.fail_after(DEADLINE_S):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)


async def entries_of(library: Library, record: LocationRecord) -> dict[bytes, EntryRow]:
    return await load_entry_map(library.db, record.id)


def write_raw(path: bytes, data: bytes) -> None:
    """Create a file whose name is not valid UTF-8."""
    with open(path, "wb") as handle:
        handle.write(data)


def cid(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


async def wait_entries(
    library: Library,
    record: LocationRecord,
    predicate: Callable[[dict[bytes, EntryRow]], bool],
) -> dict[bytes, EntryRow]:
    found: dict[bytes, EntryRow] = {}

    async def check() -> bool:
        nonlocal found
        found = await entries_of(library, record)
        return predicate(found)

    await wait_for(check)
    return found


async def test_watcher_picks_up_create_modify_rename_and_delete(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        assert await indexer.state(record.id) is LocationState.READY
        (root / "f").write_bytes(b"one")
        await wait_entries(
            library, record, lambda e: b"f" in e and e[b"f"].content_id == cid(b"one")
        )

        (root / "f").write_bytes(b"two, longer")
        await wait_entries(
            library, record, lambda e: e[b"f"].content_id == cid(b"two, longer")
        )

        st = (root / "f").stat()
        (root / "f").write_bytes(b"TWO, LONGER")  # same size
        os.utime(root / "f", ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
        await wait_entries(
            library, record, lambda e: e[b"f"].content_id == cid(b"TWO, LONGER")
        )

        os.rename(root / "f", root / "g")
        entries = await wait_entries(
            library, record, lambda e: b"g" in e and b"f" not in e
        )
        assert entries[b"g"].content_id == cid(b"TWO, LONGER")

        (root / "g").unlink()
        await wait_entries(library, record, lambda e: set(e) == {b""})


async def test_touch_updates_mtime_and_keeps_content_id(
    library: Library, root: Path
) -> None:
    (root / "f").write_bytes(b"same")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        before = (await entries_of(library, record))[b"f"]
        os.utime(root / "f", ns=(0, before.mtime_ns + 7_000_000_000))
        after = await wait_entries(
            library, record, lambda e: e[b"f"].mtime_ns != before.mtime_ns
        )
    assert after[b"f"].content_id == before.content_id


async def test_directory_moved_in_is_scanned_whole_and_removed_whole(
    library: Library, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside" / "album"
    (outside / "a" / "b").mkdir(parents=True)
    for i in range(20):
        (outside / "a" / "b" / f"{i}.jpg").write_bytes(b"photo %d" % i)
    (outside / "top.txt").write_bytes(b"top")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        os.rename(outside, root / "album")  # one event for a full tree
        entries = await wait_entries(library, record, lambda e: len(e) == 1 + 3 + 21)
        assert entries[b"album/a/b/7.jpg"].content_id == cid(b"photo 7")

        shutil.rmtree(root / "album")
        await wait_entries(library, record, lambda e: set(e) == {b""})


async def test_files_under_git_and_node_modules_are_indexed(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        (root / ".git").mkdir()
        (root / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main")
        (root / "node_modules" / "pkg").mkdir(parents=True)
        (root / "node_modules" / "pkg" / "index.js").write_bytes(b"x")
        (root / ".notes.txt.swp").write_bytes(b"swap")
        await wait_entries(
            library,
            record,
            lambda e: (
                {b".git/HEAD", b"node_modules/pkg/index.js", b".notes.txt.swp"}
                <= set(e)
            ),
        )


async def test_conduitd_temp_area_does_not_leak(library: Library, root: Path) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        with indexer.subscribe() as feed:
            (root / ".conduitd" / "tmp").mkdir()
            (root / ".conduitd" / "tmp" / "x.part").write_bytes(b"in flight")
            (root / "real").write_bytes(b"real")
            await indexer.barrier(record.id)
            change = await feed.receive()
            assert change.paths == {b"", b"real"}  # the root's row: its mtime
            assert not feed.pending()
    assert set(await entries_of(library, record)) == {b"", b"real"}


async def test_subscription_reports_changed_paths(library: Library, root: Path) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        with indexer.subscribe() as feed:
            (root / "d").mkdir()
            (root / "d" / "x").write_bytes(b"x")
            seen: set[bytes] = set()
            with anyio.fail_after(DEADLINE_S):
                while not {b"d", b"d/x"} <= seen:
                    change = await feed.receive()
                    assert change.location_id == record.id
                    seen |= change.paths


async def test_non_utf8_name_makes_location_stale_and_rescan_records_it(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    with capture_logs() as logs:
        async with watching(indexer, record):
            write_raw(os.fsencode(root) + b"/caf\xe9.txt", b"latin-1")
            entries = await wait_entries(library, record, lambda e: b"caf\xe9.txt" in e)
            assert entries[b"caf\xe9.txt"].content_id == cid(b"latin-1")
            await wait_for(lambda: _is(indexer, record, LocationState.READY))
    events = [e["event"] for e in logs]
    assert "watcher_failed" in events
    assert any(
        e["event"] == "location_state_changed" and e["new"] == "stale" for e in logs
    )


async def _is(indexer: Indexer, record: LocationRecord, state: LocationState) -> bool:
    return await indexer.state(record.id) is state


async def test_root_removed_while_watched_leaves_other_locations_working(
    library: Library, tmp_path: Path
) -> None:
    doomed, healthy = tmp_path / "doomed", tmp_path / "healthy"
    doomed.mkdir()
    healthy.mkdir()
    (doomed / "keep-me").write_bytes(b"rows stay")
    records = [await add_location(library, p) for p in (doomed, healthy)]
    indexer = Indexer.for_library(library)
    async with watching(indexer, *records):
        shutil.rmtree(doomed)
        await wait_for(lambda: _is(indexer, records[0], LocationState.UNMOUNTED))
        (healthy / "new").write_bytes(b"new")
        await wait_entries(library, records[1], lambda e: b"new" in e)
        assert await indexer.state(records[1].id) is LocationState.READY
    assert b"keep-me" in await entries_of(library, records[0])
    assert not doomed.exists()


async def test_barrier_returns_once_earlier_changes_are_indexed(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        for i in range(100):
            (root / f"f{i}").write_bytes(b"%d" % i)
        with anyio.fail_after(DEADLINE_S):
            state = await indexer.barrier(record.id)
        entries = await entries_of(library, record)
    assert state is LocationState.READY
    assert len(entries) == 101


async def test_a_hurried_watch_delivers_at_once_and_an_idle_one_waits_its_step(
    root: Path,
) -> None:
    # A step of two minutes: only hurrying can deliver within the deadline.
    pace = WatchPace(step_ms=120_000)
    stop = anyio.Event()
    live, done = anyio.Event(), anyio.Event()
    seen: set[bytes] = set()

    async def consume() -> None:
        try:
            async for batch in watch_batches(os.fsencode(root), stop, pace=pace):
                live.set()
                if batch is not None:
                    seen.update(batch.paths)
        finally:
            done.set()

    async def both_seen() -> bool:
        return {b"idle", b"hurried"} <= seen

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        try:
            with pace.hurried(), anyio.fail_after(DEADLINE_S):
                await live.wait()
            (root / "idle").write_bytes(b"waits out the step")
            await anyio.sleep(1)
            assert not seen
            with pace.hurried():
                (root / "hurried").write_bytes(b"delivered at once")
                await wait_for(both_seen)
        finally:
            stop.set()
            pace.nudge()  # or the watch thread ends only after its step
        with anyio.fail_after(DEADLINE_S):
            await done.wait()


async def test_barrier_without_watcher_rescans(library: Library, root: Path) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    (root / "a").write_bytes(b"a")
    (root / "b").write_bytes(b"b")

    await indexer.barrier(record.id, [b"a"])
    assert set(await entries_of(library, record)) == {b"", b"a"}

    await indexer.barrier(record.id)
    assert set(await entries_of(library, record)) == {b"", b"a", b"b"}


def _dropping(predicate: Callable[[EventBatch], bool], *, fail: bool = False) -> object:
    """An event source that loses the batches matching `predicate`, like an
    overflowed kernel queue, then (if `fail`) reports the overflow once."""
    failed = False

    async def source(
        root: bytes, stop_event: anyio.Event, *, pace: WatchPace
    ) -> AsyncGenerator[EventBatch | None, None]:
        nonlocal failed
        async for batch in watch_batches(root, stop_event, pace=pace):
            if batch is not None and predicate(batch):
                if fail and not failed:
                    failed = True
                    raise WatcherOverflow("event queue overflowed")
                yield None
                continue
            yield batch

    return source


async def test_rescan_after_simulated_overflow(library: Library, root: Path) -> None:
    record = await add_location(library, root)
    lost = _dropping(lambda b: b"lost" in b.paths, fail=True)
    indexer = Indexer(
        library.db,
        library_uuid=library.uuid,
        device_id=library.device_id,
        event_source=lost,  # type: ignore[arg-type]
    )
    with capture_logs() as logs:
        async with watching(indexer, record):
            (root / "lost").write_bytes(b"its event never arrives")
            await wait_entries(library, record, lambda e: b"lost" in e)
            await wait_for(lambda: _is(indexer, record, LocationState.READY))
    assert any(e["event"] == "watcher_failed" for e in logs)


async def test_barrier_falls_back_to_a_rescan_when_its_event_is_lost(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    deaf = _dropping(lambda b: True)
    indexer = Indexer(
        library.db,
        library_uuid=library.uuid,
        device_id=library.device_id,
        event_source=deaf,  # type: ignore[arg-type]
    )
    async with watching(indexer, record):
        (root / "unseen").write_bytes(b"x")
        with capture_logs() as logs, anyio.fail_after(DEADLINE_S):
            await indexer.barrier(record.id, timeout_s=0.3)
        assert b"unseen" in await entries_of(library, record)
    assert any(e["event"] == "barrier_timeout" for e in logs)


async def test_periodic_rescan_catches_what_the_watcher_missed(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    deaf = _dropping(lambda b: True)
    indexer = Indexer(
        library.db,
        library_uuid=library.uuid,
        device_id=library.device_id,
        event_source=deaf,  # type: ignore[arg-type]
        rescan_interval_s=0.5,
    )
    async with watching(indexer, record):
        (root / "missed").write_bytes(b"x")
        await wait_entries(library, record, lambda e: b"missed" in e)
        assert await indexer.state(record.id) is LocationState.READY


async def test_watcher_stops_promptly_when_cancelled(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    with anyio.fail_after(3):  # awatch's thread must not linger to its timeout
        async with watching(indexer, record):
            pass
    assert not indexer.watching(record.id)


async def test_setting_the_watches_up_never_blocks_the_event_loop(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding the recursive watches of a big tree takes a while (0.5 s for
    100k files): it happens in a worker thread, never on the loop's."""
    import time

    import watchfiles._rust_notify
    import watchfiles.main

    real = watchfiles._rust_notify.RustNotify

    def slow_setup(*args: object) -> object:
        time.sleep(0.6)  # as a big tree would
        return real(*args)

    monkeypatch.setattr(watchfiles._rust_notify, "RustNotify", slow_setup)
    monkeypatch.setattr(watchfiles.main, "RustNotify", slow_setup)  # awatch's
    gaps: list[float] = []
    stop = anyio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await anyio.sleep(0.05)  # ticking before the setup starts
            batches = watch_batches(os.fsencode(root), stop, timeout_ms=100)
            try:
                await batches.__anext__()  # live: the setup is done
            finally:
                stop.set()
                await batches.aclose()
    assert sum(gaps) >= 0.6
    assert max(gaps) < 0.3  # the loop kept turning through the setup


async def test_index_of_a_library_opened_again_is_ready_after_watch_start(
    tmp_path: Path, root: Path
) -> None:
    (root / "a").write_bytes(b"a")
    lib = await open_library(tmp_path / "state")
    try:
        record = await add_location(lib, root)
        await Indexer.for_library(lib).scan(record)
    finally:
        await lib.close()
    (root / "b").write_bytes(b"b")  # while nothing watched
    lib = await open_library(tmp_path / "state")
    try:
        indexer = Indexer.for_library(lib)
        async with watching(indexer, record):
            assert set(await entries_of(lib, record)) == {b"", b"a", b"b"}
    finally:
        await lib.close()


async def test_index_kept_by_the_watcher_equals_a_fresh_scan(
    library: Library, root: Path, tmp_path: Path
) -> None:
    (root / "keep" / "deep").mkdir(parents=True)
    (root / "keep" / "deep" / "a").write_bytes(b"a")
    (root / "edit").write_bytes(b"before")
    (root / "gone").mkdir()
    (root / "gone" / "x").write_bytes(b"x")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    async with watching(indexer, record):
        (root / "edit").write_bytes(b"after")
        shutil.rmtree(root / "gone")
        (root / "keep" / "deep" / "b").write_bytes(b"b")
        os.symlink("keep", root / "link")
        (root / "new" / "sub").mkdir(parents=True)
        (root / "new" / "sub" / "n").write_bytes(b"n")
        await indexer.barrier(record.id)
    watched = await entries_of(library, record)

    report = await indexer.scan(record)  # no watcher: a real rescan

    assert (report.added, report.updated, report.removed) == (0, 0, 0)
    fresh = await open_library(tmp_path / "fresh-state")
    try:
        other = await add_location(fresh, root)
        await Indexer.for_library(fresh).scan(other)
        assert await entries_of(fresh, other) == watched
    finally:
        await fresh.close()
