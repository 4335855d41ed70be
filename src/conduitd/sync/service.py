"""FileSyncService (seed FSYNC-003): resolve, run the jobs, record, verify.

One call of `sync_now` is one generation (plus at most one automatic retry
when verification fails). Everything it decides comes from the index; the
jobs re-check the disk before every destructive step; the rows that say
"synced" are written only after the batch they describe is durable.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from conduitd.config import ConduitConfig, Config, DeleteStrategy, SyncMode
from conduitd.crashpoints import crash_point
from conduitd.errors import SafetyRefusal, UsageError
from conduitd.index.indexer import Indexer, ScanReport
from conduitd.index.probes import FsTraits, probe_traits
from conduitd.jobs.commit import Durability
from conduitd.jobs.copy import TempFile
from conduitd.jobs.outcomes import CopyJob, JobOutcome, Progress
from conduitd.jobs.ratelimit import RateLimiter
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.runner import TransferRunner
from conduitd.storage.agreement import (
    Agreement,
    current_agreement,
    forget_agreement,
    record_agreement,
    recorded_agreement,
)
from conduitd.storage.baselines import (
    has_any_baseline,
    load_baseline,
    load_baseline_subset,
    record_agreed_paths,
    replace_baseline_paths,
)
from conduitd.storage.conduits import (
    ConduitManager,
    ConduitRecord,
    GenerationCounts,
    GenerationRecord,
    GenerationStatus,
)
from conduitd.storage.conflicts import (
    ConflictRepository,
    ConflictSide,
    ConflictStatus,
)
from conduitd.storage.entries import (
    entry_kinds_after,
    load_entry_map,
    load_entry_subset,
    parent_path,
)
from conduitd.storage.library import Library
from conduitd.storage.models import EntryKind, EntryRow
from conduitd.storage.transactions import LoggedTransaction, TransactionManager
from conduitd.storage.trash_rows import TrashReason as TrashRowReason
from conduitd.storage.trash_rows import TrashRow, record_trashed
from conduitd.sync.brakes import (
    check_delete_ratio,
    check_empty_sides,
    check_empty_source,
    holds_entries,
)
from conduitd.sync.collisions import HELD_REASON as NAME_COLLISION
from conduitd.sync.collisions import FoldName, name_folder, refuse_collisions
from conduitd.sync.conflicts import (
    ConflictResolver,
    Settlement,
    apply_settlements,
    taken_in,
)
from conduitd.sync.differ import differing_paths
from conduitd.sync.endpoints import (
    Endpoints,
    check_identity,
    ensure_roots,
    exists_in,
    is_two_way,
    wait_ready,
)
from conduitd.sync.landed import copied_files
from conduitd.sync.operations import (
    Conflict,
    Direction,
    DirectionalOps,
    Side,
    SyncOperations,
    to_baseline,
)
from conduitd.sync.pending import refresh_pending
from conduitd.sync.planning import (
    Roots,
    build_jobs,
    plan_document,
    touched_paths,
    written_paths,
)
from conduitd.sync.resolver import (
    resolve_bidirectional,
    resolve_mirror,
    resolve_selective,
)
from conduitd.sync.rules import IndexRules
from conduitd.sync.space import StatVfs, check_free_space
from conduitd.sync.verification import Step, Verification, advance
from conduitd.timeutil import utc_now

logger = structlog.get_logger()

# Above this many touched paths, verification rescans and reloads both sides
# whole instead of probing each path.
VERIFY_PATHS_MAX = 2_000
# A one-shot run resolves only the paths its two indexes disagree on, up to
# this many; beyond, it loads and resolves both trees whole.
DIFFERING_PATHS_MAX = 10_000

ExpectWrites = Callable[[str, Side, Collection[bytes]], None]
ReportProgress = Callable[[str, "ActiveRun"], None]
OnComplete = Callable[[LoggedTransaction, GenerationRecord], Awaitable[None]]


class Disabled(SafetyRefusal):
    kind = "disabled"


class Paused(SafetyRefusal):
    kind = "paused"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Both sides' index maps and the baseline, as one resolution saw them."""

    source: dict[bytes, EntryRow]
    target: dict[bytes, EntryRow]
    baseline: Mapping[bytes, Any]
    # Whether the conduit has any baseline at all (a subset may be empty).
    has_baseline: bool = False


@dataclass(slots=True)
class ActiveRun:
    """Progress of a running generation, for `status`."""

    generation: int
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0

    def document(self) -> dict[str, int]:
        return {
            "generation": self.generation,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
        }


@dataclass(slots=True)
class _Shared:
    """One run that several callers wait for (coalescing)."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: GenerationRecord | None = None
    error: BaseException | None = None

    async def wait(self) -> GenerationRecord | None:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(slots=True)
class _Slot:
    running: _Shared | None = None
    follow_up: _Shared | None = None


class FileSyncService:
    """Runs conduits; one instance per process, shared by every conduit.

    Args:
        one_shot: scan both endpoints before resolving (a CLI run cannot trust
            an index no watcher kept); the daemon trusts its watchers instead.
        transfer_limiter: the daemon-wide `max_parallel_transfers`.
        expect_writes: told which paths a run is about to write on which root,
            so the daemon can tell its own writes from a user's.
        report_progress: told of a running generation's progress.
    """

    def __init__(
        self,
        library: Library,
        tm: TransactionManager,
        indexer: Indexer,
        config: Config,
        *,
        one_shot: bool,
        transfer_limiter: anyio.CapacityLimiter | None = None,
        runner: TransferRunner | None = None,
        expect_writes: ExpectWrites | None = None,
        report_progress: ReportProgress | None = None,
    ) -> None:
        self.library = library
        self.tm = tm
        self.indexer = indexer
        self.config = config
        self.one_shot = one_shot
        self.transfer_limiter = transfer_limiter or anyio.CapacityLimiter(
            config.daemon.max_parallel_transfers
        )
        self.runner = runner or TransferRunner(durability=Durability.SYNCFS)
        self.expect_writes = expect_writes
        self.report_progress = report_progress
        self.statvfs: StatVfs | None = None  # tests inject a full disk here
        self.conduits = ConduitManager(library.db)
        self.conflict_rows = ConflictRepository(library.db)
        self._slots: dict[str, _Slot] = {}
        # One writer per conduit: a run and a `resolve` never overlap.
        self._run_locks: dict[str, anyio.Lock] = {}
        # Probed once per location root (issue 8): mtime granularity, folding.
        self.fs_traits: dict[bytes, FsTraits] = {}
        self.active: dict[str, ActiveRun] = {}

    # ---------------------------------------------------------------- entry

    async def sync_now(
        self,
        name: str,
        *,
        force: bool = False,
        explicit: bool = True,
        dirty: Collection[bytes] | None = None,
        conduit: ConduitConfig | None = None,
    ) -> GenerationRecord | None:
        """Run the conduit now; a call during a run waits for one follow-up run.

        `conduit` is the conduit's current config when the caller knows better
        than `self.config` (the daemon after a reload).

        Returns the generation (the retry when verification failed once), or
        None when an automatic run found nothing to do.

        Raises:
            SafetyRefusal: disabled, paused, an endpoint failed its checks, the
                index was not ready, or a brake held (exit 3).
        """
        slot = self._slots.setdefault(name, _Slot())
        if slot.follow_up is not None:
            return await slot.follow_up.wait()
        if slot.running is not None:
            shared = slot.follow_up = _Shared()
            try:
                await slot.running.done.wait()
            finally:
                slot.follow_up = None
            return await self._run_shared(
                slot,
                shared,
                conduit or self.config.conduit(name),
                force,
                explicit,
                None,
            )
        return await self._run_shared(
            slot,
            _Shared(),
            conduit or self.config.conduit(name),
            force,
            explicit,
            dirty,
        )

    async def _run_shared(
        self,
        slot: _Slot,
        shared: _Shared,
        conduit: ConduitConfig,
        force: bool,
        explicit: bool,
        dirty: Collection[bytes] | None,
    ) -> GenerationRecord | None:
        slot.running = shared
        try:
            async with self._run_lock(conduit.name):
                shared.result = await self._sync(
                    conduit, force=force, explicit=explicit, dirty=dirty
                )
            return shared.result
        except BaseException as exc:
            shared.error = exc
            raise
        finally:
            slot.running = None
            shared.done.set()

    def _run_lock(self, name: str) -> anyio.Lock:
        return self._run_locks.setdefault(name, anyio.Lock())

    def writer_slot(self, name: str) -> anyio.Lock:
        """What a run of conduit `name` holds: hold it (`async with`) to write
        its roots or trash outside a run (a restore, a trash purge)."""
        return self._run_lock(name)

    async def settle_now(
        self,
        name: str,
        paths: Collection[bytes],
        settle: Callable[[Snapshot], Sequence[Settlement]],
        *,
        on_complete: OnComplete | None = None,
        conduit: ConduitConfig | None = None,
    ) -> GenerationRecord:
        """A generation of its own for settlements decided outside a resolution.

        For `conduitd resolve` (issue 6): under the conduit's run lock, `paths`
        are re-read on both sides, `settle` decides from that snapshot (it
        refuses by raising, before anything is written), and the settlements'
        copies run through the jobs. `on_complete` runs in the transaction
        that completes the generation.
        """
        conduit = conduit or self.config.conduit(name)
        async with self._run_lock(name):
            record = await self._record(conduit)
            endpoints = await self._endpoints(record)
            for location in (endpoints.source, endpoints.target):
                await self.indexer.refresh(location.id, paths)
            snapshot = await self._snapshot(record, endpoints)
            settlements = tuple(settle(snapshot))
            operations = apply_settlements(
                SyncOperations(DirectionalOps(), DirectionalOps()), settlements
            )
            generation = await self._start_generation(record)
            log = logger.bind(conduit=name, generation=generation.generation)
            try:
                return await self._execute(
                    conduit,
                    record,
                    generation,
                    endpoints,
                    snapshot,
                    operations,
                    settlements,
                    (),
                    False,
                    log,
                    on_complete=on_complete,
                )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._interrupt(generation, log)
                raise

    async def plan(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """The dry-run document; writes nothing under any root."""
        conduit = self.config.conduit(name)
        record = await self._record(conduit)
        await ensure_roots(conduit, first_run=record.sync_generation == 0, dry_run=True)
        endpoints = await self._endpoints(record)
        snapshot = await self._snapshot(record, endpoints)
        operations, _ = self._resolve(conduit, snapshot, endpoints, paths=None)
        refused = self._brake(conduit, snapshot, operations, force, endpoints)
        return plan_document(name, operations, refused)

    # ----------------------------------------------------------------- a run

    async def _record(self, conduit: ConduitConfig) -> ConduitRecord:
        record = await self.conduits.get_by_name(conduit.name)
        if record is None:
            raise UsageError(f"conduit {conduit.name!r} is not reconciled yet")
        if not (record.enabled and conduit.enabled):
            raise Disabled(f"conduit {conduit.name!r} is disabled")
        if record.paused:
            raise Paused(f"conduit {conduit.name!r} is paused")
        return record

    async def _sync(
        self,
        conduit: ConduitConfig,
        *,
        force: bool,
        explicit: bool,
        dirty: Collection[bytes] | None,
        retry: bool = True,
    ) -> GenerationRecord | None:
        log = logger.bind(conduit=conduit.name)
        record = await self._record(conduit)
        created = await ensure_roots(
            conduit, first_run=record.sync_generation == 0, dry_run=False
        )
        if created and not self.one_shot:
            # The daemon's watcher found the target missing at start and waits
            # out a backoff before it looks again: have it look now.
            _source_id, target_id = await self._location_ids(record)
            await self.indexer.retry_now(target_id)
        endpoints = await self._endpoints(record, scan=self.one_shot)
        if dirty is not None and b"" in dirty:
            # The root itself changed: the resolver reads b"" as "everything",
            # so the whole trees must be loaded, not a subset of them.
            dirty = None
        if dirty is None and self._bulk_comparable(endpoints):
            # Both indexes are fresh (just rescanned, or kept by the daemon's
            # watchers, where everything is dirty after its start, for a retry
            # or after an overflow): compare them in SQL and resolve only the
            # paths that differ, as the daemon resolves its dirty paths.
            dirty = await self._bulk_dirty(conduit, record, endpoints)
        snapshot = await self._snapshot(record, endpoints, dirty)
        operations, union = self._resolve(conduit, snapshot, endpoints, paths=dirty)
        refused = None
        if dirty is None:
            refused = self._brake(conduit, snapshot, operations, force, endpoints)
        elif _destructive(operations):
            # The brakes weigh deletes against whole trees: load them whole.
            whole = await self._snapshot(record, endpoints)
            refused = self._brake(conduit, whole, operations, force, endpoints)
        else:
            # Nothing to delete, but an empty side facing a full one is still
            # refused (exit 3: a disk that is not mounted is news).
            refused = await self._empty_side_brake(
                conduit, endpoints, operations, snapshot
            )
        if refused is not None:
            await self._refuse(record, refused)
        settlements: tuple[Settlement, ...] = ()
        if operations.conflicts:  # a thread hop only when there is something to do
            settlements = await anyio.to_thread.run_sync(
                functools.partial(
                    self._settle, conduit, operations, snapshot, look_on_disk=True
                )
            )
        operations = apply_settlements(operations, settlements)
        pending = [s.conflict for s in settlements if s.pending]
        unrecorded = await refresh_pending(
            self.tm, self.conflict_rows, record.id, pending, dirty
        )
        # A conflict seen for the first time is work: it gets a generation.
        if (
            not explicit
            and operations.is_empty(count_conflicts=False)
            and not unrecorded
        ):
            await self._checked(record, operations, snapshot, conduit)
            return None
        roots = {"source": endpoints.source.path, "target": endpoints.target.path}
        short = await check_free_space(conduit, operations, roots, self.statvfs)
        if short is not None:  # issue 9: nothing written, refused (exit 3)
            log.warning("free_space_refused", reason=short)
            await self._refuse(record, short)
        crash_point("service.mid_resolution")  # resolved, no generation row yet
        generation = await self._start_generation(record)
        log = log.bind(generation=generation.generation)
        try:
            result = await self._execute(
                conduit,
                record,
                generation,
                endpoints,
                snapshot,
                operations,
                settlements,
                pending,
                union,
                log,
                # Fresh scans of both whole trees came before this plan.
                whole=self.one_shot,
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._interrupt(generation, log)
            raise
        if result.verification_status.startswith("failed:") and retry:
            log.warning("verification_retry", status=result.verification_status)
            retried = await self._sync(
                conduit, force=force, explicit=True, dirty=None, retry=False
            )
            return retried or result
        return result

    async def _bulk_dirty(
        self,
        conduit: ConduitConfig,
        record: ConduitRecord,
        endpoints: Endpoints,
    ) -> list[bytes] | None:
        """Every path where the indexes differ (None: the whole trees). Past
        a point one query per path costs more than the whole trees."""
        differing = await self._differing(conduit, record, endpoints)
        if is_two_way(conduit):  # open conflicts are kept current (pending.py)
            rows = await self.conflict_rows.list(record.id, ConflictStatus.PENDING)
            differing += [c.relative_path for c in rows]
        paths = sorted(set(differing))
        return paths if len(paths) <= DIFFERING_PATHS_MAX else None

    async def _differing(
        self, conduit: ConduitConfig, record: ConduitRecord, endpoints: Endpoints
    ) -> list[bytes]:
        """The paths where the fresh indexes (and a two-way baseline) may differ.

        Without a query when the conduit's last verified convergence under
        the same rules stands where this run's scans found both indexes: then
        only what the scans wrote can differ (nothing, after a no-op). The SQL
        comparison costs a tenth of a second per 100k files a side, as much
        as the rest of a no-op run after the walks (issue 5 bench).
        """
        db = self.library.db
        source_id, target_id = endpoints.source.id, endpoints.target.id
        # A `recent` window moves with the clock, not with the index.
        if conduit.recent_s is None:
            fingerprint = self._fingerprint(conduit, endpoints)
            agreed = await recorded_agreement(db, record.id, fingerprint)
            if agreed is not None:
                if agreed == await current_agreement(db, source_id, target_id):
                    return []
                if (
                    agreed == endpoints.versions_before_scans
                    and endpoints.scanned_paths is not None
                ):
                    return sorted(endpoints.scanned_paths)
        return await differing_paths(
            db,
            source_id,
            target_id,
            baseline_of=record.id if is_two_way(conduit) else None,
        )

    def _bulk_comparable(self, endpoints: Endpoints) -> bool:
        """Whether only the paths where the indexes differ need resolving.

        Outside a union run the paths that agree need nothing (two-way runs
        compare with the baseline too, see `differing_paths`; a union run
        keeps the brakes' look at the whole trees). A folding root checks
        new names against every name it holds: it resolves the whole trees.
        """
        if endpoints.index_lost:
            return False
        return not any(t.folds_names for t in self._traits(endpoints))

    def _fingerprint(self, conduit: ConduitConfig, endpoints: Endpoints) -> str:
        """Everything besides the indexes (and the clock) that decides what
        a run would do."""
        source, target = self._traits(endpoints)
        return json.dumps(
            [
                conduit.mode.value,
                list(conduit.ignore),
                list(conduit.include),
                conduit.use_index_rules,
                conduit.recent_s,
                [source.mtime_granularity_ns, source.folds_names],
                [target.mtime_granularity_ns, target.folds_names],
            ]
        )

    async def _endpoints(
        self, record: ConduitRecord, *, scan: bool = False
    ) -> Endpoints:
        source_id, target_id = await self._location_ids(record)
        before: Agreement | None = None
        scanned: frozenset[bytes] | None = None
        if scan:
            before = await current_agreement(self.library.db, source_id, target_id)
            reports: list[ScanReport] = []

            async def scan_one(location_id: int) -> None:
                reports.append(await self.indexer.scan(location_id))

            async with anyio.create_task_group() as tg:
                tg.start_soon(scan_one, source_id)
                tg.start_soon(scan_one, target_id)
            if all(r.touched is not None for r in reports):
                scanned = frozenset().union(*(r.touched or () for r in reports))
        if not self.one_shot:
            await wait_ready(self.indexer, source_id)
            await wait_ready(self.indexer, target_id)
        source = await self.indexer.location(source_id)
        target = await self.indexer.location(target_id)
        for location in (source, target):
            await check_identity(self.indexer, location)
            if location.root not in self.fs_traits:
                self.fs_traits[location.root] = await anyio.to_thread.run_sync(
                    probe_traits, location.root
                )
        return Endpoints(source, target, before, scanned)

    async def _location_ids(self, record: ConduitRecord) -> tuple[int, int]:
        rows = await self.library.db.fetch_all(
            "SELECT id, location_id FROM entry WHERE id IN (?, ?)",
            (record.source_entry_id, record.target_entry_id),
        )
        by_entry = {int(r["id"]): int(r["location_id"]) for r in rows}
        return by_entry[record.source_entry_id], by_entry[record.target_entry_id]

    async def _snapshot(
        self,
        record: ConduitRecord,
        endpoints: Endpoints,
        paths: Collection[bytes] | None = None,
    ) -> Snapshot:
        """Both index maps (and the baseline): whole, or only what `paths` need."""
        db = self.library.db
        if paths is None:
            source = await load_entry_map(db, endpoints.source.id)
            target = await load_entry_map(db, endpoints.target.id)
        else:
            source = await load_entry_subset(db, endpoints.source.id, paths)
            target = await load_entry_subset(db, endpoints.target.id, paths)
        if record.sync_mode is not SyncMode.BIDIRECTIONAL:
            return Snapshot(source, target, {})
        baseline = (
            await load_baseline(db, record.id)
            if paths is None
            else await load_baseline_subset(db, record.id, paths)
        )
        has_baseline = bool(baseline) or await has_any_baseline(db, record.id)
        return Snapshot(source, target, baseline, has_baseline)

    def _resolve(
        self,
        conduit: ConduitConfig,
        snapshot: Snapshot,
        endpoints: Endpoints,
        *,
        paths: Collection[bytes] | None,
    ) -> tuple[SyncOperations, bool]:
        rules = rules_for(conduit)
        union = endpoints.index_lost
        source_traits, target_traits = self._traits(endpoints)
        granularity_ns = target_traits.mtime_granularity_ns
        if conduit.mode is SyncMode.BIDIRECTIONAL:
            union = union or not snapshot.has_baseline
            granularity_ns = max(granularity_ns, source_traits.mtime_granularity_ns)
            ops = resolve_bidirectional(
                snapshot.source,
                snapshot.target,
                snapshot.baseline,
                rules,
                union=union,
                paths=paths,
                mtime_granularity_ns=granularity_ns,
            )
        elif conduit.mode is SyncMode.SELECTIVE:
            ops = resolve_selective(
                snapshot.source,
                snapshot.target,
                rules,
                now_ns=time.time_ns(),
                recent_s=conduit.recent_s,
                union=union,
                paths=paths,
                mtime_granularity_ns=granularity_ns,
            )
        else:
            ops = resolve_mirror(
                snapshot.source,
                snapshot.target,
                rules,
                union=union,
                paths=paths,
                mtime_granularity_ns=granularity_ns,
            )
        return self._refuse_collisions(ops, snapshot, endpoints), union

    def _traits(self, endpoints: Endpoints) -> tuple[FsTraits, FsTraits]:
        default = FsTraits()
        return (
            self.fs_traits.get(endpoints.source.root, default),
            self.fs_traits.get(endpoints.target.root, default),
        )

    def _refuse_collisions(
        self, ops: SyncOperations, snapshot: Snapshot, endpoints: Endpoints
    ) -> SyncOperations:
        """Hold copies whose names collide on a folding root (issue 8)."""
        source, target = self._traits(endpoints)
        folds: dict[Direction, FoldName] = {}
        existing: dict[Direction, Collection[bytes]] = {}
        for direction, traits, entries in (
            (Direction.SOURCE_TO_TARGET, target, snapshot.target),
            (Direction.TARGET_TO_SOURCE, source, snapshot.source),
        ):
            fold = name_folder(
                case_insensitive=traits.case_insensitive,
                normalising=traits.normalising,
            )
            if fold is not None:
                folds[direction] = fold
                existing[direction] = entries.keys()
        return refuse_collisions(ops, folds, existing) if folds else ops

    async def _empty_side_brake(
        self,
        conduit: ConduitConfig,
        endpoints: Endpoints,
        operations: SyncOperations,
        snapshot: Snapshot,
    ) -> str | None:
        """`check_empty_source` from the indexes, without loading them whole:
        each side is read only up to its first entry that is not ignored."""
        rules = rules_for(conduit)
        source_has = await self._holds_entries(endpoints.source.id, rules)
        target_has = await self._holds_entries(endpoints.target.id, rules)
        return check_empty_sides(
            source_has,
            target_has,
            bidirectional=conduit.mode is SyncMode.BIDIRECTIONAL,
            first_sync=_first_two_way_sync(conduit, operations, snapshot),
        )

    async def _holds_entries(self, location_id: int, rules: IndexRules) -> bool:
        after = b""
        db = self.library.db
        while page := await entry_kinds_after(db, location_id, after, 256):
            if holds_entries(page, rules):
                return True
            after = page[-1][0]
        return False

    def _brake(
        self,
        conduit: ConduitConfig,
        snapshot: Snapshot,
        operations: SyncOperations,
        force: bool,
        endpoints: Endpoints,
    ) -> str | None:
        rules = rules_for(conduit)
        reason = check_empty_source(
            snapshot.source,
            snapshot.target,
            rules,
            bidirectional=conduit.mode is SyncMode.BIDIRECTIONAL,
            first_sync=_first_two_way_sync(conduit, operations, snapshot),
        )
        if reason is not None:
            return reason
        return check_delete_ratio(
            operations,
            snapshot.target,
            rules,
            conduit.max_delete_percent,
            force,
            source=snapshot.source,
        )

    async def _refuse(self, record: ConduitRecord, reason: str) -> None:
        async with self.tm.transaction() as tx:
            await self.conduits.set_error(tx, record.id, f"refused: {reason}")
        raise SafetyRefusal(f"conduit {record.name!r} refused: {reason}")

    def _settle(
        self,
        conduit: ConduitConfig,
        operations: SyncOperations,
        snapshot: Snapshot,
        *,
        look_on_disk: bool = False,
    ) -> tuple[Settlement, ...]:
        """Settle the conflicts (blocking with `look_on_disk`: a worker thread).

        Args:
            look_on_disk: a conflict copy's name must also be free on disk.
                A snapshot of the dirty paths only (the daemon, a one-shot
                run's differing paths) does not hold the copies made before:
                a second conflict on a path in the same second chose the
                first one's name, its copy found the name taken, and the run
                failed verification (found by the bidirectional machine).
        """
        if not operations.conflicts:
            return ()
        resolver = ConflictResolver(conduit.conflict)
        known = taken_in(snapshot.source.keys(), snapshot.target.keys())
        taken = known
        if look_on_disk:
            on_disk = exists_in(conduit.source, conduit.target)

            def taken(relative_path: bytes) -> bool:
                return known(relative_path) or on_disk(relative_path)

        return resolver.settle_all(operations.conflicts, utc_now(), taken)

    async def _checked(
        self,
        record: ConduitRecord,
        operations: SyncOperations,
        snapshot: Snapshot,
        conduit: ConduitConfig,
    ) -> None:
        """An automatic run with nothing to do: no generation, just the check."""
        async with self.tm.transaction() as tx:
            await self.conduits.mark_checked(tx, record.id)
            if conduit.mode is SyncMode.BIDIRECTIONAL:
                await _write_resolved_baseline(
                    tx, record.id, operations, record.sync_generation
                )

    async def _start_generation(self, record: ConduitRecord) -> GenerationRecord:
        async with self.tm.transaction() as tx:
            await self.conduits.mark_checked(tx, record.id)
            return await self.conduits.create_generation(tx, record.id)

    async def _execute(
        self,
        conduit: ConduitConfig,
        record: ConduitRecord,
        generation: GenerationRecord,
        endpoints: Endpoints,
        snapshot: Snapshot,
        operations: SyncOperations,
        settlements: Sequence[Settlement],
        pending: Sequence[Conflict],
        union: bool,
        log: structlog.typing.FilteringBoundLogger,
        *,
        on_complete: OnComplete | None = None,
        whole: bool = False,
    ) -> GenerationRecord:
        """Run, count, verify and complete a generation.

        Args:
            whole: the operations were planned from fresh scans of both whole
                trees (a one-shot `_sync`): only then may a verified result be
                recorded as the conduit's agreement.
        """
        started = time.perf_counter()
        await self._record_pending(record, generation, pending)
        touched = touched_paths(operations)
        active = self.active[conduit.name] = ActiveRun(generation.generation)
        async with self._announcing() as announced:
            try:
                report = await self._transfer(
                    conduit,
                    record,
                    generation,
                    endpoints,
                    operations,
                    settlements,
                    active,
                    announced,
                )
            finally:
                self.active.pop(conduit.name, None)
            # Unreadable entries, paths held because of one, and directories that
            # cannot give way (something ignored stays inside) are per-path
            # failures: counted, so the run exits 1 (issue 5), never silent.
            not_synced = _paths_not_synced(snapshot, operations, rules_for(conduit))
            if not_synced:
                first = [p.decode("utf-8", "surrogateescape") for p in not_synced[:5]]
                log.warning("paths_not_synced", count=len(not_synced), first=first)
            counts = GenerationCounts(
                files_copied=report.files_copied,
                metadata_updated=report.metadata_updated,
                files_deleted=report.files_deleted,
                conflicts_resolved=sum(not s.pending for s in settlements),
                conflicts_pending=len(pending),
                files_skipped=report.files_skipped,
                bytes_transferred=report.bytes_transferred,
                errors_encountered=report.errors_encountered + len(not_synced),
            )
            async with self.tm.transaction() as tx:
                generation = await self.conduits.record_counts(
                    tx, generation.id, counts
                )
            status, agreed = await self._verify(
                conduit, record, generation, endpoints, touched, union, whole=whole
            )
        error = (
            None
            if counts.errors_encountered == 0
            else (
                f"{counts.errors_encountered} path(s) failed in generation"
                f" {generation.generation}"
            )
        )
        async with self.tm.transaction() as tx:
            if conduit.mode is SyncMode.BIDIRECTIONAL:
                await self._write_baseline(
                    tx, record, generation, endpoints, operations, touched
                )
            generation = await self.conduits.complete_generation(
                tx, generation.id, GenerationStatus.COMPLETED, error
            )
            if (
                agreed is not None
                and status is Verification.VERIFIED
                and not union
                and counts.errors_encountered == 0
                and counts.conflicts_pending == 0
            ):
                await record_agreement(
                    tx,
                    record.id,
                    agreed,
                    fingerprint=self._fingerprint(conduit, endpoints),
                    generation=generation.generation,
                )
            else:
                await forget_agreement(tx, record.id)
            if on_complete is not None:
                await on_complete(tx, generation)
        if union and counts.errors_encountered == 0 and status is Verification.VERIFIED:
            for location in (endpoints.source, endpoints.target):
                if location.index_lost:
                    await self.indexer.clear_index_lost(location.id)
        await self.tm.flushed()
        log.info(
            "generation_finished",
            verification=generation.verification_status,
            files_copied=counts.files_copied,
            metadata_updated=counts.metadata_updated,
            files_deleted=counts.files_deleted,
            conflicts_resolved=counts.conflicts_resolved,
            conflicts_pending=counts.conflicts_pending,
            files_skipped=counts.files_skipped,
            bytes_transferred=counts.bytes_transferred,
            errors=counts.errors_encountered,
            duration_s=round(time.perf_counter() - started, 3),
        )
        return generation

    @asynccontextmanager
    async def _announcing(self) -> AsyncIterator[dict[int, set[bytes]]]:
        """Location id → paths announced to its index by `_transfer`; the
        announcements are dropped when the block ends (after verification)."""
        announced: dict[int, set[bytes]] = {}
        try:
            yield announced
        finally:
            with anyio.CancelScope(shield=True):
                for location_id, paths in announced.items():
                    await self.indexer.forget_content(location_id, paths)

    async def _record_pending(
        self,
        record: ConduitRecord,
        generation: GenerationRecord,
        pending: Sequence[Conflict],
    ) -> None:
        if not pending:
            return
        open_paths = {
            c.relative_path
            for c in await self.conflict_rows.list(record.id, ConflictStatus.PENDING)
        }
        async with self.tm.transaction() as tx:
            for conflict in pending:
                if conflict.relative_path in open_paths:
                    continue
                await self.conflict_rows.create(
                    tx,
                    conduit_id=record.id,
                    relative_path=conflict.relative_path,
                    detected_generation=generation.generation,
                    source=_side(conflict.source),
                    target=_side(conflict.target),
                )

    async def _transfer(
        self,
        conduit: ConduitConfig,
        record: ConduitRecord,
        generation: GenerationRecord,
        endpoints: Endpoints,
        operations: SyncOperations,
        settlements: Sequence[Settlement],
        active: ActiveRun,
        announced: dict[int, set[bytes]],
    ) -> Any:
        source_fs = await anyio.to_thread.run_sync(RootFs, endpoints.source.path)
        try:
            target_fs = await anyio.to_thread.run_sync(RootFs, endpoints.target.path)
        except BaseException:
            source_fs.close()
            raise
        roots = Roots(source_fs, target_fs)
        try:
            jobs = build_jobs(operations, roots, settlements)
            if self.expect_writes is not None:
                for side, paths in written_paths(jobs, roots).items():
                    self.expect_writes(conduit.name, side, paths)

            async def committed(outcomes: Sequence[JobOutcome]) -> None:
                rows = _trash_rows(record.id, generation.generation, roots, outcomes)
                if rows:
                    async with self.tm.transaction() as tx:
                        await record_trashed(tx, rows)
                crash_point("service.after_batch_rows")

            async def copied(copies: Sequence[tuple[CopyJob, TempFile]]) -> None:
                for root, files in copied_files(copies).items():
                    location = endpoints.of(roots.side_of(root))
                    await self.indexer.expect_content(location.id, files)
                    announced.setdefault(location.id, set()).update(files)

            def progress(p: Progress) -> None:
                active.files_done, active.files_total = p.files_done, p.files_total
                active.bytes_done, active.bytes_total = p.bytes_done, p.bytes_total
                if self.report_progress is not None:
                    self.report_progress(conduit.name, active)

            limit = conduit.bandwidth_limit_bytes_per_s
            return await self.runner.run(
                jobs,
                generation=generation.generation,
                trash=conduit.delete is DeleteStrategy.TRASH,
                parallel=conduit.parallel_transfers,
                global_limiter=self.transfer_limiter,
                rate_limiter=RateLimiter(limit) if limit else None,
                on_batch_committed=committed,
                on_progress=progress,
                on_copied=copied,
            )
        finally:
            source_fs.close()
            target_fs.close()

    async def _verify(
        self,
        conduit: ConduitConfig,
        record: ConduitRecord,
        generation: GenerationRecord,
        endpoints: Endpoints,
        touched: set[bytes],
        union: bool,
        *,
        whole: bool = False,
    ) -> tuple[Verification, Agreement | None]:
        """Trust Watcher: barrier both sides, flush the log, re-resolve.

        Also returns both indexes' versions as read just before the state
        that verification judged was loaded (None when it judged nothing).
        """
        state = await self._advance(
            generation, Verification.UNVERIFIED, Step.RUN_FINISHED
        )
        paths = sorted(touched)
        # Many touched paths (a first run): one rescan per side and whole maps
        # cost less than a probe and a ranged query per path (issue 5 bench).
        scope = paths if len(paths) <= VERIFY_PATHS_MAX else None
        try:
            if paths:  # a run that touched nothing has nothing to wait for
                async with anyio.create_task_group() as tg:
                    for location in (endpoints.source, endpoints.target):
                        tg.start_soon(self.indexer.barrier, location.id, scope)
        except Exception:
            logger.exception("barrier_failed", conduit=conduit.name)
            return await self._advance(generation, state, Step.BARRIER_FAILED), None
        state = await self._advance(generation, state, Step.BARRIER_PASSED)
        try:
            await self.tm.flushed()
        except Exception:
            logger.exception("library_flush_failed", conduit=conduit.name)
            failed = await self._advance(generation, state, Step.LIBRARY_SYNC_FAILED)
            return failed, None
        # Read before the state it vouches for: a write from here on moves a
        # version past what is recorded (storage/agreement.py).
        agreed = await current_agreement(
            self.library.db, endpoints.source.id, endpoints.target.id
        )
        differing = await self._still_differing(endpoints, scope)
        check = None if differing is None else sorted(set(differing) & touched)
        load = scope if scope is not None else differing
        fresh = await self._snapshot(record, endpoints, load)
        again, _ = self._resolve(
            conduit, fresh, endpoints, paths=paths if check is None else check
        )
        # A copy held for its parent means the parent changed kind under the
        # run (e.g. a directory swapped for a symlink): outside the touched
        # paths, so only a full run can converge it (issue 5).
        parent_held = any(h.reason == "parent" for h in again.held)
        # A conflict the strategy would settle is work left; only prompt_user's
        # wait for the user (issue 6).
        settleable = any(not s.pending for s in self._settle(conduit, again, fresh))
        remains = not again.is_empty(count_conflicts=False) or parent_held or settleable
        step = Step.WORK_REMAINS if remains and paths else Step.NOTHING_REMAINS
        if step is Step.WORK_REMAINS:
            logger.warning(
                "verification_found_work",
                conduit=conduit.name,
                generation=generation.generation,
                copies=again.count_files_copied(),
                updates=again.count_updates(),
                deletes=again.count_files_deleted(),
            )
        settled = whole and self._settled(conduit, fresh, endpoints, scope, differing)
        return await self._advance(generation, state, step), (
            agreed if settled else None
        )

    def _settled(
        self,
        conduit: ConduitConfig,
        fresh: Snapshot,
        endpoints: Endpoints,
        scope: list[bytes] | None,
        differing: list[bytes] | None,
    ) -> bool:
        """True when a run at the verified state would do nothing at all, a
        conflict waiting for the user included: then it may be recorded as
        the conduit's agreement.

        Only a one-shot run planned from fresh scans of both whole trees
        (the caller checks) knows every path it did not touch, and while it
        holds the lock only its own verification writes the index: the
        touched paths and their parents (`scope`), or the whole trees again,
        whose differences (`differing`) are all resolved here. A daemon's
        watchers write any path at any time: it records nothing.
        """
        if not self.one_shot:
            return False
        if scope is not None:
            # b"" (the root) would mean every path to the resolver.
            paths = sorted({*scope, *(parent_path(p) for p in scope)} - {b""})
        elif differing is not None:
            paths = differing
        else:
            return False
        everything, _ = self._resolve(conduit, fresh, endpoints, paths=paths)
        return everything.is_empty(count_conflicts=True) and not everything.held

    async def _still_differing(
        self, endpoints: Endpoints, scope: list[bytes] | None
    ) -> list[bytes] | None:
        """Every path where the two fresh indexes differ, when verification
        judges whole trees and may compare them in bulk (else None).

        After a run that touched many paths, the barrier left both indexes
        current (a one-shot run rescanned them whole; a daemon's watchers
        applied every event before the barrier's): as before a one-shot
        run, SQL finds the paths where the sides still differ and only those
        are loaded and resolved (a path equal on both sides needs nothing,
        in every mode). Loading both trees whole took a quarter of
        verification after a one-shot first mirror of 10k files, and 1.9 of
        the 2.9 s of a daemon's after a first mirror of 100k (issue 5 bench).
        """
        if scope is not None:
            return None
        if not self._bulk_comparable(endpoints):
            return None
        differing = await differing_paths(
            self.library.db, endpoints.source.id, endpoints.target.id
        )
        if len(differing) > DIFFERING_PATHS_MAX:
            return None
        return differing

    async def _advance(
        self, generation: GenerationRecord, state: Verification, step: Step
    ) -> Verification:
        new = advance(state, step)
        async with self.tm.transaction() as tx:
            await self.conduits.set_verification(
                tx, generation.id, new.value, verified=new is Verification.VERIFIED
            )
        logger.info(
            "verification_advanced",
            generation=generation.generation,
            state=new.value,
            step=step.value,
        )
        return new

    async def _write_baseline(
        self,
        tx: Any,
        record: ConduitRecord,
        generation: GenerationRecord,
        endpoints: Endpoints,
        operations: SyncOperations,
        touched: set[bytes],
    ) -> None:
        await _write_resolved_baseline(tx, record.id, operations, generation.generation)
        # Then what the run left equal on both sides, over those rows.
        await record_agreed_paths(
            tx,
            record.id,
            endpoints.source.id,
            endpoints.target.id,
            touched,
            generation.generation,
        )

    async def _interrupt(
        self, generation: GenerationRecord, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        with anyio.move_on_after(10):
            async with self.tm.transaction() as tx:
                await self.conduits.set_verification(
                    tx,
                    generation.id,
                    Verification.FAILED_INTERRUPTED.value,
                    verified=False,
                )
                await self.conduits.complete_generation(
                    tx, generation.id, GenerationStatus.INTERRUPTED, "interrupted"
                )
            log.warning("generation_interrupted")


async def _write_resolved_baseline(
    tx: LoggedTransaction, conduit_id: int, operations: SyncOperations, generation: int
) -> None:
    """The baseline rows the resolution settled by itself: paths already equal
    on both sides, and rows that must go (`replace_baseline_paths` deletes
    before it upserts: a path in both ends with its update)."""
    await replace_baseline_paths(
        tx,
        conduit_id,
        (to_baseline(e, generation) for e in operations.baseline_updates),
        operations.baseline_deletes,
    )


def _destructive(operations: SyncOperations) -> bool:
    """True when a run would delete or replace a directory on either side."""
    return any(
        ops.to_delete or any(op.replaces_directory for op in ops.to_copy)
        for _, ops in operations.directions()
    )


def _first_two_way_sync(
    conduit: ConduitConfig, operations: SyncOperations, snapshot: Snapshot
) -> bool:
    """A bidirectional union run (first sync, reset baseline, lost index):
    the brakes let it fill an empty side."""
    return conduit.mode is SyncMode.BIDIRECTIONAL and (
        operations.union or not snapshot.has_baseline
    )


def rules_for(conduit: ConduitConfig) -> IndexRules:
    include = conduit.include if conduit.mode is SyncMode.SELECTIVE else ()
    return IndexRules(conduit.ignore, include, use_index_rules=conduit.use_index_rules)


def _paths_not_synced(
    snapshot: Snapshot, operations: SyncOperations, rules: IndexRules
) -> list[bytes]:
    """Paths flagged unreadable on either side, or held for one or because
    they are occupied, sorted."""
    found = {
        h.relative_path
        for h in operations.held
        if h.reason in ("unreadable", "occupied", NAME_COLLISION)
    }
    for entries in (snapshot.source, snapshot.target):
        found.update(
            path
            for path, entry in entries.items()
            if entry.unreadable
            and not rules.is_ignored(path, entry.kind is EntryKind.DIRECTORY)
        )
    return sorted(found)


def _side(entry: EntryRow | None) -> ConflictSide:
    if entry is None:
        return ConflictSide()
    return ConflictSide(entry.kind, entry.size, entry.mtime_ns, entry.content_id)


def _trash_rows(
    conduit_id: int, generation: int, roots: Roots, outcomes: Sequence[JobOutcome]
) -> list[TrashRow]:
    rows = []
    for outcome in outcomes:
        item = outcome.trashed
        if item is None:
            continue
        job = outcome.job
        root = job.dst_root if hasattr(job, "dst_root") else job.root
        rows.append(
            TrashRow(
                conduit_id=conduit_id,
                generation=generation,
                root=roots.side_of(root).value,
                relative_path=item.relative_path,
                trash_path=item.trash_rel,
                reason=TrashRowReason(item.reason.value),
                size=item.size,
                mtime_ns=item.mtime_ns,
                content_id=item.content_id,
            )
        )
    return rows
