"""The indexer service: scans, watchers, barriers, location state, change feed.

One `Indexer` per library and process. The daemon starts
`run_watchers(locations)` in its task group; one-shot `sync` calls `scan()` on
both endpoints (in parallel) and `barrier()` falls back to a rescan.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, closing
from dataclasses import dataclass, field
from typing import Final

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from conduitd.forked_workers import ForkedWorkers
from conduitd.index.feed import ChangeFeed
from conduitd.index.identity import (
    Judgement,
    RootInspection,
    RootVerdict,
    inspect_root,
    judge_root,
)
from conduitd.index.marker import (
    READ_ONLY_ERRNOS,
    Marker,
    MarkerStatus,
    classify_marker,
    read_marker,
    rewrite_marker,
    write_marker,
)
from conduitd.index.scan_workers import ScanJob, ScanPart, SubtreeScanJob
from conduitd.index.scanner import ChangeSet, KnownContent, TreeScanner, Unlisted
from conduitd.index.state import IndexStep, advance
from conduitd.index.store import SCAN_BATCH_ROWS, IndexStore, WriteCounts
from conduitd.index.walk import DIRECTORY, DirTask, values_from_stat
from conduitd.index.watcher import (
    DEFAULT_STEP_MS,
    EventBatch,
    EventSource,
    WatchPace,
    watch_batches,
)
from conduitd.storage.database import Database
from conduitd.storage.entries import EntryReader, parent_path
from conduitd.storage.library import Library
from conduitd.storage.locations import LocationRecord, LocationState, get_location
from conduitd.storage.transactions import TransactionManager
from conduitd.timeutil import utc_now_text

logger = structlog.get_logger()

DEFAULT_RESCAN_INTERVAL_S: Final = 3600.0
BARRIER_TIMEOUT_S: Final = 10.0
BACKOFF_MIN_S: Final = 0.2
BACKOFF_MAX_S: Final = 30.0
# A watcher that ran this long before failing restarts after BACKOFF_MIN_S.
BACKOFF_RESET_S: Final = 60.0
# A whole-tree scan in workers walks its top levels in one job, down to the
# first level of this many directories, and that level in pieces, a few per
# worker: a worker done with the smaller tree takes pieces of the larger.
SCAN_SPLIT_DIRS: Final = 16
SCAN_PIECES_PER_WORKER: Final = 2


class RootUnavailable(Exception):
    """The root is unmounted (missing, marker vanished, device changed)."""


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What a scan or refresh did to one location's index."""

    location_id: int
    state: LocationState
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    unreadable: int = 0
    skipped: int = 0
    hashed_files: int = 0
    hashed_bytes: int = 0
    duration_s: float = 0.0
    # Every path whose row was written or deleted; None: not known.
    touched: frozenset[bytes] | None = None


@dataclass(slots=True)
class _Watch:
    location_id: int
    pace: WatchPace
    ready: bool = False
    scope: anyio.CancelScope | None = None
    stop: anyio.Event | None = None
    # set to cut the backoff before the next attempt short
    wake: anyio.Event = field(default_factory=anyio.Event)
    # set when an attempt has watched and scanned, or has given up
    attempted: anyio.Event = field(default_factory=anyio.Event)


class Indexer:
    """Keeps the `entry` rows of locations true to their roots."""

    def __init__(
        self,
        db: Database,
        *,
        library_uuid: uuid.UUID,
        device_id: uuid.UUID,
        tm: TransactionManager | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
        watch_step_ms: int = DEFAULT_STEP_MS,
        event_source: EventSource = watch_batches,
        scan_batch_rows: int = SCAN_BATCH_ROWS,
        workers: ForkedWorkers | None = None,
    ) -> None:
        self.db = db
        self.library_uuid = library_uuid
        self.device_id = device_id
        self.store = IndexStore(db, tm)
        self.limiter = limiter or anyio.CapacityLimiter(4)
        self.scanner = TreeScanner(self.limiter)
        self.rescan_interval_s = rescan_interval_s
        self.watch_step_ms = watch_step_ms
        self.event_source = event_source
        self.scan_batch_rows = scan_batch_rows
        self.workers = workers  # forked processes whole-tree scans may run in
        self._feeds: list[ChangeFeed] = []
        self._locks: dict[int, anyio.Lock] = {}
        self._watches: dict[int, _Watch] = {}
        self._barriers: dict[str, anyio.Event] = {}
        self._barrier_locations: dict[str, int] = {}
        self._task_group: TaskGroup | None = None

    @classmethod
    def for_library(
        cls,
        library: Library,
        *,
        tm: TransactionManager | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
        workers: ForkedWorkers | None = None,
    ) -> Indexer:
        return cls(
            library.db,
            library_uuid=library.uuid,
            device_id=library.device_id,
            tm=tm,
            limiter=limiter,
            rescan_interval_s=rescan_interval_s,
            workers=workers,
        )

    # ----------------------------------------------------------------- queries

    async def location(self, location_id: int) -> LocationRecord:
        record = await get_location(self.db, location_id)
        if record is None:
            raise KeyError(f"no location {location_id}")
        return record

    async def state(self, location_id: int) -> LocationState:
        """The persisted index state of a location."""
        return (await self.location(location_id)).state

    def watching(self, location_id: int) -> bool:
        """True while a live watcher keeps this location's index current."""
        watch = self._watches.get(location_id)
        return watch is not None and watch.ready

    async def marker_status(self, location_id: int) -> MarkerStatus:
        """What the root's marker says (for the sync engine's safety checks)."""
        record = await self.location(location_id)
        found = await anyio.to_thread.run_sync(
            read_marker, record.root, limiter=self.limiter
        )
        return classify_marker(found, self.library_uuid, record.uuid)

    def subscribe(self) -> ChangeFeed:
        """A feed of the paths whose rows change from now on."""
        feed = ChangeFeed(self._feeds.remove)
        self._feeds.append(feed)
        return feed

    # ------------------------------------------------------------------ scans

    async def scan(self, location: LocationRecord | int) -> ScanReport:
        """Scan a location whole (incremental: unchanged files are not hashed).

        A root that is unmounted is left alone: its state becomes `unmounted`
        and no row is touched.
        """
        location_id = location if isinstance(location, int) else location.id
        async with self._locked(location_id):
            return await self._scan_locked(location_id)

    async def refresh(
        self, location_id: int, paths: Iterable[bytes], *, reread: bool = True
    ) -> ScanReport:
        """Re-stat the given paths (and scan new directories among them).

        Args:
            reread: hash the files among `paths` even when their metadata
                matches their rows (a watcher saw them written: on a coarse
                mtime a rewrite may leave size and mtime alone). False reads
                only what a walk would.
        """
        async with self._locked(location_id):
            return await self._refresh_locked(location_id, set(paths), reread)

    async def expect_content(
        self, location_id: int, files: Mapping[bytes, KnownContent]
    ) -> None:
        """Announce files a sync just landed, so scans take their content ids
        instead of reading them again (see `TreeScanner`)."""
        record = await self.location(location_id)
        self.scanner.expect(record.root, files)

    async def forget_content(self, location_id: int, paths: Iterable[bytes]) -> None:
        """Drop announcements once the run that made them is verified."""
        record = await self.location(location_id)
        self.scanner.forget(record.root, paths)

    async def clear_index_lost(self, location_id: int) -> None:
        """After a union run of this root: claim it (rewrite the marker) and
        clear `index_lost`. A read-only root only has the flag cleared."""
        record = await self.location(location_id)
        try:
            await anyio.to_thread.run_sync(
                write_marker, record.root, self._marker(record), limiter=self.limiter
            )
            await self.store.set_has_marker(location_id, True)
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS:
                raise
        await self.store.set_index_lost(location_id, False)
        logger.info("index_lost_cleared", location_id=location_id)

    async def _scan_locked(self, location_id: int) -> ScanReport:
        started = time.perf_counter()
        record = await self.location(location_id)
        judgement, found = await self._judge(record)
        if judgement.verdict.unmounted or found.st is None:
            return await self._lose_root(record, judgement)
        if not (self.watching(location_id) and record.state is LocationState.READY):
            await self._advance(record, IndexStep.SCAN_STARTED)
        record, st = await self._claim_root(record, judgement, found.st)
        changes = await self._collect(record, st)
        counts, touched = await self._write(record, changes, self.scan_batch_rows)
        final = advance(await self.state(location_id), IndexStep.SCAN_COMPLETED)
        files, size = await self.store.finish_scan(location_id, utc_now_text(), final)
        report = _report(location_id, final, counts, changes, started, touched)
        logger.info(
            "scan_finished",
            location_id=location_id,
            state=final.value,
            added=report.added,
            updated=report.updated,
            removed=report.removed,
            unreadable=report.unreadable,
            skipped=report.skipped,
            hashed_files=report.hashed_files,
            files=files,
            bytes=size,
            duration_s=round(report.duration_s, 3),
        )
        return report

    async def _collect(self, record: LocationRecord, st: os.stat_result) -> ChangeSet:
        """The whole tree compared with its rows: in the worker processes when
        one is free (one-shot runs, the daemon), otherwise here."""
        start = DirTask(b"", values_from_stat(st, DIRECTORY, None))
        if self.workers is not None:
            found = await self._collect_in_workers(record, start, st.st_dev)
            if found is not None:
                return found
        changes = ChangeSet()
        with closing(EntryReader(self.db.path, record.id)) as reader:
            await self.scanner.collect(record.root, st.st_dev, start, reader, changes)
        return changes

    async def _collect_in_workers(
        self, record: LocationRecord, start: DirTask, root_dev: int
    ) -> ChangeSet | None:
        """The top levels in one job, then the level where the tree fans out
        in pieces, each in the next free worker (here when none is left).
        None when no worker took the first job."""
        assert self.workers is not None
        known = self.scanner.known(record.root)
        threads = int(self.limiter.total_tokens)
        first = await self.workers.run(
            ScanJob(
                root=record.root,
                root_dev=root_dev,
                db_path=self.db.path,
                location_id=record.id,
                known=known,
                threads=threads,
                start=start,
                split_at=SCAN_SPLIT_DIRS,
                pieces=len(self.workers.pids) * SCAN_PIECES_PER_WORKER,
            ),
            ScanPart,
        )
        if first is None:
            return None
        changes = first.changes

        async def walk(piece: Unlisted, seed: ChangeSet) -> None:
            job = SubtreeScanJob(
                root=record.root,
                root_dev=root_dev,
                db_path=self.db.path,
                location_id=record.id,
                known=_known_under(known, piece.tasks),
                threads=threads,
                piece=piece,
                changes=seed,
            )
            assert self.workers is not None
            found = await self.workers.run(job, ChangeSet, wait=True)
            if found is None:  # the job got a copy: `seed` is as it was
                found = seed
                with closing(EntryReader(self.db.path, record.id)) as reader:
                    await self.scanner.collect_subtrees(
                        record.root, root_dev, piece, reader, found
                    )
            changes.absorb(found)

        async with anyio.create_task_group() as tg:
            for piece in first.pieces:
                tg.start_soon(walk, piece, changes.hand_over(piece.tasks))
        return changes

    async def _refresh_locked(
        self, location_id: int, paths: set[bytes], reread: bool = True
    ) -> ScanReport:
        started = time.perf_counter()
        record = await self.location(location_id)
        judgement, found = await self._judge(record)
        if judgement.verdict.unmounted or found.st is None:
            return await self._lose_root(record, judgement)
        if record.st_dev is None or judgement.identity_changed:
            # Never scanned, or a re-plugged disk: compare everything.
            return await self._scan_locked(location_id)
        with closing(EntryReader(self.db.path, location_id)) as reader:
            changes = await self.scanner.refresh(
                self.db,
                location_id,
                record.root,
                found.st.st_dev,
                paths,
                reader,
                reread=reread,
            )
        counts, touched = await self._write(record, changes, None)
        state = await self.state(location_id)
        return _report(location_id, state, counts, changes, started, touched)

    async def _write(
        self, record: LocationRecord, changes: ChangeSet, batch_rows: int | None
    ) -> tuple[WriteCounts, frozenset[bytes]]:
        """Write the changes; their counts and every path written or deleted."""
        counts, deleted = await self.store.write_changes(
            record, changes, batch_rows=batch_rows
        )
        touched = frozenset(changes.upserts).union(deleted)
        self._publish(record.id, touched)
        changes.log_warnings(record.id)
        return counts, touched

    async def _judge(self, record: LocationRecord) -> tuple[Judgement, RootInspection]:
        found = await anyio.to_thread.run_sync(
            inspect_root, record.root, limiter=self.limiter
        )
        judgement = judge_root(record, found, self.library_uuid)
        if (
            found.st is not None
            and judgement.identity_changed
            and not judgement.verdict.unmounted
        ):
            logger.warning(
                "location_device_changed",
                location_id=record.id,
                st_dev=found.st.st_dev,
                root_inode=found.st.st_ino,
            )
        return judgement, found

    async def _claim_root(
        self, record: LocationRecord, judgement: Judgement, st: os.stat_result
    ) -> tuple[LocationRecord, os.stat_result]:
        """Record identity, `index_lost`, and write the marker on a first scan.

        Returns the fresh record and the root's stat (taken again after a
        marker was written: creating `.conduitd/` changes the root's mtime).
        """
        verdict = judgement.verdict
        if verdict is RootVerdict.INDEX_LOST and not record.index_lost:
            logger.warning(
                "location_index_lost",
                location_id=record.id,
                marker=judgement.marker_status.value,
            )
            await self.store.set_index_lost(record.id, True)
        if verdict is RootVerdict.FIRST_SEEN:
            try:
                await anyio.to_thread.run_sync(
                    write_marker,
                    record.root,
                    self._marker(record),
                    limiter=self.limiter,
                )
            except OSError as exc:
                if exc.errno not in READ_ONLY_ERRNOS:
                    raise
                logger.info("location_read_only", location_id=record.id, error=str(exc))
            else:
                await self.store.set_has_marker(record.id, True)
                st = await anyio.to_thread.run_sync(
                    os.stat, record.root, limiter=self.limiter
                )
        await self.store.set_identity(record.id, st.st_dev, st.st_ino)
        return await self.location(record.id), st

    async def _lose_root(
        self, record: LocationRecord, judgement: Judgement
    ) -> ScanReport:
        if record.state is not LocationState.UNMOUNTED:
            logger.warning(
                "location_unmounted",
                location_id=record.id,
                reason=judgement.verdict.value,
            )
        await self._advance(record, IndexStep.ROOT_LOST)
        return ScanReport(record.id, LocationState.UNMOUNTED)

    async def _advance(self, record: LocationRecord, step: IndexStep) -> LocationState:
        current = await self.state(record.id)
        new = advance(current, step)
        if new is not current:
            await self.store.set_state(record.id, new)
            logger.info(
                "location_state_changed",
                location_id=record.id,
                old=current.value,
                new=new.value,
                step=step.value,
            )
        return new

    def _marker(self, record: LocationRecord) -> Marker:
        return Marker(self.library_uuid, record.uuid, self.device_id)

    def _publish(self, location_id: int, paths: frozenset[bytes]) -> None:
        if not self._feeds or not paths:
            return
        for feed in list(self._feeds):
            feed.publish(location_id, paths)

    @asynccontextmanager
    async def _locked(self, location_id: int) -> AsyncIterator[None]:
        lock = self._locks.setdefault(location_id, anyio.Lock())
        async with lock:
            yield

    # --------------------------------------------------------------- barriers

    async def barrier(
        self,
        location_id: int,
        paths: Iterable[bytes] | None = None,
        *,
        timeout_s: float = BARRIER_TIMEOUT_S,
    ) -> LocationState:
        """Return once every change made before the call is in the index.

        With a running watcher: rewrite `.conduitd/marker` and wait until the
        watcher has processed that event. Without one (one-shot mode), on a
        read-only root, or if the event does not come within `timeout_s` (an
        overflowed kernel queue loses events): re-stat `paths`, or rescan the
        whole location when `paths` is None. Returns the location's state.
        """
        wanted = None if paths is None else set(paths)
        watch = self._watches.get(location_id)
        if watch is not None and await self._barrier_by_watcher(watch, timeout_s):
            return await self.state(location_id)
        if wanted is None:
            return (await self.scan(location_id)).state
        # A walk would not read a file whose metadata is unchanged: neither
        # does the barrier (verification probes every path a run touched).
        return (await self.refresh(location_id, wanted, reread=False)).state

    async def _barrier_by_watcher(self, watch: _Watch, timeout_s: float) -> bool:
        location_id = watch.location_id
        record = await self.location(location_id)
        token = uuid.uuid4().hex
        done = anyio.Event()
        self._barriers[token] = done
        self._barrier_locations[token] = location_id
        try:
            # The watch thread looks for the marker's event at once, not after
            # its step.
            with watch.pace.hurried():
                try:
                    wrote = await anyio.to_thread.run_sync(
                        rewrite_marker, record.root, token, limiter=self.limiter
                    )
                except OSError:
                    wrote = False
                if not wrote:
                    return False
                with anyio.move_on_after(timeout_s):
                    await done.wait()
                    return True
                logger.warning(
                    "barrier_timeout", location_id=location_id, timeout_s=timeout_s
                )
                return False
        finally:
            self._barriers.pop(token, None)
            self._barrier_locations.pop(token, None)

    def _pending_barriers(self, location_id: int) -> list[str]:
        return [t for t, loc in self._barrier_locations.items() if loc == location_id]

    def _release_barriers(self, tokens: Iterable[str]) -> None:
        """Wake barriers whose marker event was processed, or that were waiting
        before a scan that began once the watcher was live."""
        for token in tokens:
            event = self._barriers.get(token)
            if event is not None:
                event.set()

    # --------------------------------------------------------------- watchers

    async def run_watchers(
        self,
        locations: Sequence[LocationRecord],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch every location until cancelled (the daemon's task group).

        `task_status.started()` comes once every location has had its first
        attempt: watching and scanned, or found unmounted, or failed (then it
        retries with backoff). One bad location never blinds the others.
        """
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            async with anyio.create_task_group() as starting:
                for record in locations:
                    starting.start_soon(self._start_watch, tg, record.id)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._task_group = None

    async def add_watch(self, location_id: int) -> None:
        """Start watching one more location (config reload); needs run_watchers."""
        if self._task_group is None:
            raise RuntimeError("run_watchers is not running")
        if location_id not in self._watches:
            await self._start_watch(self._task_group, location_id)

    async def retry_now(self, location_id: int, timeout_s: float = 5.0) -> None:
        """Look at an unmounted location again at once, rather than after its
        backoff (a run just created its missing root), and wait up to
        `timeout_s` for that attempt to watch and scan it, or give up."""
        watch = self._watches.get(location_id)
        if watch is None:
            return
        attempted = watch.attempted = anyio.Event()
        watch.wake.set()
        with anyio.move_on_after(timeout_s):
            await attempted.wait()

    def remove_watch(self, location_id: int) -> None:
        """Stop watching a location (config reload)."""
        watch = self._watches.get(location_id)
        if watch is not None:
            if watch.stop is not None:
                watch.stop.set()  # before cancelling: the watch thread ends at once
            if watch.scope is not None:
                watch.scope.cancel()

    async def _start_watch(self, tg: TaskGroup, location_id: int) -> None:
        await tg.start(self._supervise, location_id)

    async def _supervise(
        self, location_id: int, *, task_status: TaskStatus[None]
    ) -> None:
        watch = _Watch(location_id, WatchPace(self.watch_step_ms))
        self._watches[location_id] = watch
        started = False

        def attempt_done() -> None:
            nonlocal started
            watch.attempted.set()
            if not started:
                started = True
                task_status.started()

        backoff = BACKOFF_MIN_S
        try:
            with anyio.CancelScope() as scope:
                watch.scope = scope
                while True:
                    began = time.monotonic()
                    try:
                        await self._watch_attempt(watch, attempt_done)
                    except Exception:
                        # Even marking the location failed (the database?):
                        # keep supervising, never take the other watchers down.
                        logger.exception(
                            "watcher_supervision_failed", location_id=location_id
                        )
                    attempt_done()
                    if time.monotonic() - began > BACKOFF_RESET_S:
                        backoff = BACKOFF_MIN_S
                    with anyio.move_on_after(backoff):
                        await watch.wake.wait()
                    if watch.wake.is_set():
                        watch.wake = anyio.Event()
                        backoff = BACKOFF_MIN_S
                    else:
                        backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            attempt_done()
            self._watches.pop(location_id, None)

    async def _watch_attempt(self, watch: _Watch, on_ready: Callable[[], None]) -> None:
        """One watcher lifetime: start watching, rescan, apply batches; returns
        (after marking the location) when the watcher fails or the root is lost."""
        record = await self.location(watch.location_id)
        try:
            judgement, _found = await self._judge(record)
            if judgement.verdict.unmounted:
                await self._lose_root(record, judgement)
                return
            await self._watch_loop(watch, record, on_ready)
        except RootUnavailable:
            return
        except Exception as exc:  # noqa: BLE001  # contained per location, see below
            # watchfiles errors arrive wrapped in an ExceptionGroup; any failure
            # of one location's watcher is contained here (others go on).
            logger.warning(
                "watcher_failed",
                location_id=watch.location_id,
                error=repr(exc),
            )
            await self._advance(record, IndexStep.WATCH_FAILED)
        finally:
            watch.ready = False

    async def _watch_loop(
        self, watch: _Watch, record: LocationRecord, on_ready: Callable[[], None]
    ) -> None:
        stop = anyio.Event()
        watch.stop = stop
        async with anyio.create_task_group() as tg:
            tg.start_soon(_set_when_cancelled, stop, watch.pace)
            try:
                batches = self.event_source(record.root, stop, pace=watch.pace)
                async with aclosing(batches):
                    await self._consume(watch, record, batches, on_ready)
            finally:
                stop.set()
                watch.pace.nudge()
                tg.cancel_scope.cancel()

    async def _consume(
        self,
        watch: _Watch,
        record: LocationRecord,
        batches: AsyncIterator[EventBatch | None],
        on_ready: Callable[[], None],
    ) -> None:
        last_scan = 0.0
        async for batch in batches:
            if (
                not watch.ready
                or time.monotonic() - last_scan >= self.rescan_interval_s
            ):
                # The watcher is live: whatever changes from now on is seen, so
                # a scan now leaves nothing behind, and every barrier waiting
                # before it is satisfied by it.
                waiting = self._pending_barriers(record.id)
                report = await self.scan(record.id)
                if report.state is LocationState.UNMOUNTED:
                    raise RootUnavailable
                last_scan = time.monotonic()
                self._release_barriers(waiting)
                if not watch.ready:
                    watch.ready = True
                    on_ready()
            if batch is not None:
                await self._apply_batch(record, batch)

    async def _apply_batch(self, record: LocationRecord, batch: EventBatch) -> None:
        paths = set(batch.paths)
        if batch.root_touched or batch.marker_touched:
            paths.add(b"")  # re-judge the root even when nothing else changed
        if paths:
            async with self._locked(record.id):
                report = await self._refresh_locked(record.id, paths)
            if report.state is LocationState.UNMOUNTED:
                raise RootUnavailable
        if batch.tokens:
            self._release_barriers(batch.tokens)


def _report(
    location_id: int,
    state: LocationState,
    counts: WriteCounts,
    changes: ChangeSet,
    started: float,
    touched: frozenset[bytes],
) -> ScanReport:
    return ScanReport(
        location_id,
        state,
        counts.added,
        counts.updated,
        counts.removed,
        changes.unchanged,
        changes.unreadable,
        changes.skipped,
        changes.hashed_files,
        changes.hashed_bytes,
        time.perf_counter() - started,
        touched,
    )


async def _set_when_cancelled(stop: anyio.Event, pace: WatchPace) -> None:
    """Set the watch's stop event as soon as it is cancelled from outside,
    and cut its step short, so that its worker thread ends at once."""
    try:
        await anyio.sleep_forever()
    finally:
        stop.set()
        pace.nudge()


def _known_under(
    known: Mapping[bytes, KnownContent], starts: Sequence[DirTask]
) -> dict[bytes, KnownContent]:
    """What is announced within the subtrees of `starts`."""
    prefixes = {task.relative_path for task in starts}
    found: dict[bytes, KnownContent] = {}
    for path, content in known.items():
        ancestor = parent_path(path)
        while ancestor:
            if ancestor in prefixes:
                found[path] = content
                break
            ancestor = parent_path(ancestor)
    return found
