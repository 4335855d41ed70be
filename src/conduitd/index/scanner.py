"""Walk a tree (or refresh watched paths) and compute the index changes.

The scanner never writes: it compares what is on disk with the rows it is
given and returns a `ChangeSet`. Disk work runs in worker threads, one call per
batch of directories or files, under the indexer's shared `CapacityLimiter`;
listing and hashing overlap (hash batches start while deeper levels are
listed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup

from conduitd.index.hashing import (
    PARALLEL_HASH_BYTES,
    HashOutcome,
    HashStatus,
    hash_files,
)
from conduitd.index.planner import ListingResult, Planner
from conduitd.index.walk import (
    DIRECTORY,
    FILE,
    DirTask,
    Probe,
    ScanWarning,
    absolute,
    flagged,
    is_conduitd_path,
    list_directories,
    needs_hash,
    probe_paths,
    same_metadata,
)
from conduitd.storage.database import Reader
from conduitd.storage.entries import (
    CONTENT_ID,
    INODE,
    KIND,
    MODE,
    MTIME_NS,
    SIZE,
    UNREADABLE,
    EntryValues,
    fetch_entry_values,
    is_within,
    parent_path,
)

logger = structlog.get_logger()

DIRS_PER_CALL: Final = 64
FILES_PER_HASH_CALL: Final = 256
BYTES_PER_HASH_CALL: Final = 32 << 20
WARNINGS_LOGGED: Final = 20


@dataclass(slots=True)
class ChangeSet:
    """Rows to write for one location: upserts, single deletes, subtree deletes,
    and the listing digests of the directories walked."""

    upserts: dict[bytes, EntryValues] = field(default_factory=dict)
    added: set[bytes] = field(default_factory=set)
    removed: set[bytes] = field(default_factory=set)
    removed_subtrees: set[bytes] = field(default_factory=set)
    digests: dict[bytes, bytes | None] = field(default_factory=dict)
    dirty: set[bytes] = field(default_factory=set)
    unchanged: int = 0
    unreadable: int = 0
    skipped: int = 0
    hashed_files: int = 0
    hashed_bytes: int = 0
    warnings: list[ScanWarning] = field(default_factory=list)

    def upsert(self, path: bytes, values: EntryValues, old: EntryValues | None) -> None:
        """Plan a row; a later plan for the same path replaces an earlier one,
        and a row equal to the old one is not written."""
        if values == old:
            self.upserts.pop(path, None)
            self.added.discard(path)
            return
        if old is None:
            self.added.add(path)
        self.upserts[path] = values
        self.removed.discard(path)

    def remove(self, path: bytes) -> None:
        self.upserts.pop(path, None)
        self.added.discard(path)
        self.removed.add(path)

    def remove_subtree(self, path: bytes) -> None:
        self.remove(path)
        self.removed.discard(path)
        self.removed_subtrees.add(path)

    def forget(self, path: bytes) -> None:
        """Drop what was planned for a path that vanished before any write."""
        self.upserts.pop(path, None)
        self.added.discard(path)

    def hand_over(self, starts: Iterable[DirTask]) -> ChangeSet:
        """Move what is planned for `starts` into a new set, which a walk of
        their subtrees (`TreeScanner.collect_subtrees`) then continues: there
        a start that vanished must drop the row its parent's listing planned."""
        seed = ChangeSet()
        for task in starts:
            path = task.relative_path
            if path in self.upserts:
                seed.upserts[path] = self.upserts.pop(path)
            if path in self.added:
                self.added.discard(path)
                seed.added.add(path)
        return seed

    def absorb(self, other: ChangeSet) -> None:
        """Add the changes of a walk of other paths (disjoint subtrees)."""
        self.upserts.update(other.upserts)
        self.added |= other.added
        self.removed |= other.removed
        self.removed_subtrees |= other.removed_subtrees
        self.digests.update(other.digests)
        self.dirty |= other.dirty
        self.unchanged += other.unchanged
        self.unreadable += other.unreadable
        self.skipped += other.skipped
        self.hashed_files += other.hashed_files
        self.hashed_bytes += other.hashed_bytes
        self.warnings += other.warnings

    def final_digests(self) -> dict[bytes, bytes | None]:
        """Digests to store: none for directories with an unclean child."""
        return {
            path: None if path in self.dirty else digest
            for path, digest in self.digests.items()
        }

    @property
    def empty(self) -> bool:
        return not (self.upserts or self.removed or self.removed_subtrees)

    def log_warnings(self, location_id: int) -> None:
        for warning in self.warnings[:WARNINGS_LOGGED]:
            logger.warning(
                warning.event,
                location_id=location_id,
                path=warning.relative_path.decode("utf-8", "surrogateescape"),
                detail=warning.detail,
            )
        if len(self.warnings) > WARNINGS_LOGGED:
            logger.warning(
                "scan_warnings_truncated",
                location_id=location_id,
                logged=WARNINGS_LOGGED,
                total=len(self.warnings),
            )


@dataclass(slots=True)
class Unlisted:
    """Directories a split walk left unlisted (their own rows are planned),
    with the stored rows of the directories in their subtrees."""

    tasks: list[DirTask] = field(default_factory=list)
    directories: dict[bytes, tuple[EntryValues, bytes | None]] = field(
        default_factory=dict
    )

    def pieces(self, count: int) -> list[Unlisted]:
        """At most `count` pieces of about as many directories (every
        `count`-th: neighbours' sizes tend to be alike)."""
        count = min(count, len(self.tasks))
        pieces = [Unlisted(self.tasks[i::count]) for i in range(count)]
        piece_of = {
            task.relative_path: piece for piece in pieces for task in piece.tasks
        }
        for path, row in self.directories.items():
            ancestor = path
            while ancestor and ancestor not in piece_of:
                ancestor = parent_path(ancestor)
            if ancestor:
                piece_of[ancestor].directories[path] = row
        return pieces


class RowSource(Protocol):
    """Where a walk finds the index rows to compare with (blocking calls)."""

    def directories(
        self, prefix: bytes | None = None
    ) -> dict[bytes, tuple[EntryValues, bytes | None]]: ...

    def row(self, path: bytes) -> EntryValues | None: ...

    def children(self, directories: Iterable[bytes]) -> dict[bytes, EntryValues]: ...

    def named(self, paths: Sequence[bytes]) -> dict[bytes, EntryValues]: ...


class MemoryRows:
    """Rows held in memory (a dry run's scan): no listing digests."""

    def __init__(self, rows: dict[bytes, EntryValues]) -> None:
        self._rows = rows
        self._by_parent: dict[bytes, list[bytes]] | None = None

    def directories(
        self, prefix: bytes | None = None
    ) -> dict[bytes, tuple[EntryValues, bytes | None]]:
        return {
            path: (values, None)
            for path, values in self._rows.items()
            if values[KIND] == DIRECTORY and is_within(path, prefix or b"")
        }

    def row(self, path: bytes) -> EntryValues | None:
        return self._rows.get(path)

    def named(self, paths: Sequence[bytes]) -> dict[bytes, EntryValues]:
        return {p: self._rows[p] for p in paths if p in self._rows}

    def children(self, directories: Iterable[bytes]) -> dict[bytes, EntryValues]:
        if self._by_parent is None:
            self._by_parent = {}
            for path in self._rows:
                if path:
                    self._by_parent.setdefault(parent_path(path), []).append(path)
        found: dict[bytes, EntryValues] = {}
        for directory in directories:
            for path in self._by_parent.get(directory, ()):
                found[path] = self._rows[path]
        return found


class KnownContent(NamedTuple):
    """What conduitd itself just put under a name: a file it wrote, hashed as
    the bytes passed, and gave this inode, size and mtime."""

    inode: int
    size: int
    mtime_ns: int
    content_id: str


class TreeScanner:
    """Computes index changes for one root; shares the indexer's limiter.

    Files that a sync just landed are announced with `expect` (root → path →
    KnownContent): a walk that finds one of them with that very inode, size
    and mtime takes the announced content id instead of reading the file
    again. Verification after a first mirror of 10k files spent most of its
    time re-hashing what the copy had hashed a moment before (issue 5 bench).
    """

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._known: dict[bytes, dict[bytes, KnownContent]] = {}

    def expect(self, root: bytes, files: Mapping[bytes, KnownContent]) -> None:
        self._known.setdefault(root, {}).update(files)

    def known(self, root: bytes) -> dict[bytes, KnownContent]:
        """A copy of what is announced under `root`."""
        return dict(self._known.get(root, {}))

    def forget(self, root: bytes, paths: Iterable[bytes]) -> None:
        known = self._known.get(root)
        if known is None:
            return
        for path in paths:
            known.pop(path, None)
        if not known:
            del self._known[root]

    async def collect(
        self,
        root: bytes,
        root_dev: int,
        start: DirTask,
        rows: RowSource | dict[bytes, EntryValues],
        changes: ChangeSet,
        *,
        split_at: int | None = None,
    ) -> Unlisted:
        """Walk `start` and its subtree and compare with the index.

        Args:
            rows: where the subtree's rows are read (an `EntryReader`), or the
                rows themselves, in memory.
            split_at: stop at the first level of at least this many
                directories: pieces of it can then be walked at once
                (`collect_subtrees`).

        Returns:
            What was left unlisted (nothing without `split_at`).
        """
        source: RowSource = MemoryRows(rows) if isinstance(rows, dict) else rows
        prefix = start.relative_path
        directories = await anyio.to_thread.run_sync(
            source.directories, prefix, limiter=self._limiter
        )
        known = directories.get(prefix)
        if known is not None:
            start_row: EntryValues | None = known[0]
        else:
            start_row = await anyio.to_thread.run_sync(
                source.row, prefix, limiter=self._limiter
            )
        planner = Planner(root_dev, directories)
        _merge(planner.plan_start(start, start_row), changes)
        rest = await self._walk(root, [start], planner, source, changes, split_at)
        return Unlisted(rest, directories if rest else {})

    async def collect_subtrees(
        self,
        root: bytes,
        root_dev: int,
        piece: Unlisted,
        rows: RowSource,
        changes: ChangeSet,
    ) -> None:
        """Walk a piece of what `collect(split_at=...)` left unlisted;
        `changes` holds what was planned for its directories
        (`ChangeSet.hand_over`)."""
        planner = Planner(root_dev, piece.directories)
        await self._walk(root, list(piece.tasks), planner, rows, changes, None)

    async def _walk(
        self,
        root: bytes,
        frontier: list[DirTask],
        planner: Planner,
        source: RowSource,
        changes: ChangeSet,
        split_at: int | None,
    ) -> list[DirTask]:
        """List the frontier level by level, hashing what changed meanwhile;
        the unlisted rest when a level reaches `split_at` directories."""
        root_dev = planner.root_dev
        pending: list[tuple[bytes, EntryValues, EntryValues | None]] = []
        async with anyio.create_task_group() as tg:
            while frontier and (split_at is None or len(frontier) < split_at):
                subdirs: list[DirTask] = []
                for i in range(0, len(frontier), DIRS_PER_CALL):
                    chunk = frontier[i : i + DIRS_PER_CALL]
                    result, found = await anyio.to_thread.run_sync(
                        _step,
                        root,
                        root_dev,
                        chunk,
                        planner,
                        source,
                        limiter=self._limiter,
                    )
                    _merge(result, changes)
                    pending += result.to_hash
                    subdirs += found
                    self._start_hashing(
                        tg, root, root_dev, pending, changes, final=False
                    )
                frontier = subdirs
            self._start_hashing(tg, root, root_dev, pending, changes, final=True)
        return frontier

    async def refresh(
        self,
        db: Reader,
        location_id: int,
        root: bytes,
        root_dev: int,
        paths: Iterable[bytes],
        source: RowSource,
        *,
        reread: bool = True,
    ) -> ChangeSet:
        """Re-stat watched paths (and their parents); scan new directories.

        Args:
            db: the index, for the rows of the probed paths.
            source: the index again, for the walks of new directories.
            reread: hash every probed file, not only those whose metadata
                moved (see `Indexer.refresh`).
        """
        changes = ChangeSet()
        wanted = {p for p in paths if p and not is_conduitd_path(p)}
        wanted |= {parent_path(p) for p in wanted}
        probes, rows = await self._probe_with_ancestors(
            db, location_id, root, root_dev, wanted
        )
        plan = _plan_probes(probes, rows, changes, reread=reread)
        async with anyio.create_task_group() as tg:
            pending = [
                (p.relative_path, p.values, rows.get(p.relative_path))
                for p in plan.files
                if p.values
            ]
            self._start_hashing(tg, root, root_dev, pending, changes, final=True)
        # New directories one after the other: `source` serves one thread at a
        # time.
        for task in plan.subtrees:
            await self.collect(root, root_dev, task, source, changes)
        return changes

    async def _probe_with_ancestors(
        self,
        db: Reader,
        location_id: int,
        root: bytes,
        root_dev: int,
        wanted: set[bytes],
    ) -> tuple[dict[bytes, Probe], dict[bytes, EntryValues]]:
        # A directory without a row (created faster than its watch was added)
        # is scanned whole; walk up until an indexed ancestor is found.
        probes: dict[bytes, Probe] = {}
        rows: dict[bytes, EntryValues] = {}
        todo = wanted
        while todo:
            batch = sorted(todo)
            found = await anyio.to_thread.run_sync(
                probe_paths, root, batch, root_dev, limiter=self._limiter
            )
            probes.update((p.relative_path, p) for p in found)
            rows.update(await fetch_entry_values(db, location_id, batch))
            todo = set()
            for probe in found:
                parent = parent_path(probe.relative_path)
                if (
                    probe.state == "present"
                    and parent
                    and parent not in rows
                    and parent not in probes
                ):
                    todo.add(parent)
        return probes, rows

    def _start_hashing(
        self,
        tg: TaskGroup,
        root: bytes,
        root_dev: int,
        pending: list[tuple[bytes, EntryValues, EntryValues | None]],
        changes: ChangeSet,
        *,
        final: bool,
    ) -> None:
        """Start hash calls for full batches of `pending` (all of it if final)."""
        batch: list[tuple[bytes, EntryValues, EntryValues | None]] = []
        batch_bytes = 0
        rest: list[tuple[bytes, EntryValues, EntryValues | None]] = []
        known = self._known.get(root)
        for item in pending:
            if known is not None and _take_known(item, known, changes):
                continue
            size = item[1][SIZE]
            if size >= PARALLEL_HASH_BYTES:
                tg.start_soon(self._hash, root, root_dev, [item], changes)
                continue
            batch.append(item)
            batch_bytes += size
            if len(batch) >= FILES_PER_HASH_CALL or batch_bytes >= BYTES_PER_HASH_CALL:
                tg.start_soon(self._hash, root, root_dev, batch, changes)
                batch, batch_bytes = [], 0
        if batch:
            if final:
                tg.start_soon(self._hash, root, root_dev, batch, changes)
            else:
                rest = batch
        pending[:] = rest

    async def _hash(
        self,
        root: bytes,
        root_dev: int,
        items: list[tuple[bytes, EntryValues, EntryValues | None]],
        changes: ChangeSet,
    ) -> None:
        outcomes = await anyio.to_thread.run_sync(
            hash_files, root, [i[0] for i in items], root_dev, limiter=self._limiter
        )
        for (path, listed, old), outcome in zip(items, outcomes, strict=True):
            _merge_hash(path, listed, old, outcome, changes)


def _step(
    root: bytes,
    root_dev: int,
    tasks: list[DirTask],
    planner: Planner,
    rows: RowSource,
) -> tuple[ListingResult, list[DirTask]]:
    """One worker-thread call of a walk: list directories, load the rows of
    the children of those that changed, compare."""
    listings, subdirs = list_directories(root, tasks, root_dev, planner.stored)
    changed = [
        listing
        for listing in listings
        if not (listing.same or listing.vanished or listing.error is not None)
        and listing.task.relative_path in planner.directories
    ]
    # Where the stored digest tells which buckets changed, only the rows of
    # their listed children are loaded; every row of the others is unchanged.
    suspected = [c for listing in changed for c in listing.suspected()]
    old = rows.named(suspected) if suspected else {}
    whole = [
        listing.task.relative_path for listing in changed if not listing.narrow(old)
    ]
    if whole:
        old.update(rows.children(whole))
    return planner.plan(listings, old), subdirs


def _merge(result: ListingResult, changes: ChangeSet) -> None:
    # Subtree removals first: a vanished directory drops what its parent's
    # listing planned for it; a replaced one keeps its new row.
    for path in result.removed_subtrees:
        changes.remove_subtree(path)
    changes.removed_subtrees.update(result.replaced_subtrees)
    for path in result.forgotten:
        changes.forget(path)
    for path, (values, old) in result.upserts.items():
        changes.upsert(path, values, old)
    for path in result.removed:
        changes.remove(path)
    changes.digests.update(result.digests)
    changes.dirty |= result.dirty
    changes.unchanged += result.unchanged
    changes.unreadable += result.unreadable
    changes.skipped += result.skipped
    changes.warnings.extend(result.warnings)


def _take_known(
    item: tuple[bytes, EntryValues, EntryValues | None],
    known: Mapping[bytes, KnownContent],
    changes: ChangeSet,
) -> bool:
    """Index a file from what was announced for it, when it is that file."""
    path, listed, old = item
    announced = known.get(path)
    if (
        announced is None
        or listed[KIND] != FILE
        or listed[INODE] != announced.inode
        or listed[SIZE] != announced.size
        or listed[MTIME_NS] != announced.mtime_ns
    ):
        return False
    kind, size, mtime_ns, ctime_ns, inode, mode, _, target, unreadable = listed
    content_id = announced.content_id
    values: EntryValues = (
        kind,
        size,
        mtime_ns,
        ctime_ns,
        inode,
        mode,
        content_id,
        target,
        unreadable,
    )
    if old != values:
        changes.upsert(path, values, old)
    else:
        changes.unchanged += 1
    return True


def _merge_hash(
    path: bytes,
    listed: EntryValues,
    old: EntryValues | None,
    outcome: HashOutcome,
    changes: ChangeSet,
) -> None:
    if outcome.status is not HashStatus.OK or (
        outcome.values is not None and outcome.values[:6] != listed[:6]
    ):
        # Not indexed as listed: the parent's listing digest must not be kept.
        changes.dirty.add(parent_path(path))
    if outcome.status is HashStatus.OK:
        assert outcome.values is not None  # set with OK
        changes.hashed_files += 1
        changes.hashed_bytes += outcome.values[SIZE]
        if old != outcome.values:
            changes.upsert(path, outcome.values, old)
        else:
            changes.unchanged += 1
    elif outcome.status is HashStatus.VANISHED:
        if old is not None:
            changes.remove(path)
        else:
            changes.forget(path)
    elif outcome.status is HashStatus.UNREADABLE:
        changes.unreadable += 1
        changes.warnings.append(
            ScanWarning("file_unreadable", path, outcome.error or "")
        )
        base = old if old is not None else listed
        if old is None or not old[UNREADABLE]:
            changes.upsert(path, flagged(base), old)
    # NOT_REGULAR: it changed kind while we looked; the old row stays and the
    # watcher (or the next scan) sees the new thing.


@dataclass(slots=True)
class _ProbePlan:
    files: list[Probe] = field(default_factory=list)
    subtrees: list[DirTask] = field(default_factory=list)


def _plan_probes(
    probes: dict[bytes, Probe],
    rows: dict[bytes, EntryValues],
    changes: ChangeSet,
    *,
    reread: bool,
) -> _ProbePlan:
    """Decide what each probed path needs; shallow paths first, so that a path
    under a directory being scanned or removed whole is left to that."""
    plan = _ProbePlan()
    # A set walked by ancestors, not a list scanned per path: after a run that
    # created many directories, that scan was quadratic (issue 5 benchmark).
    covered: set[bytes] = set()
    for path in sorted(probes, key=lambda p: (p.count(b"/"), p)):
        if _within_any(path, covered):
            continue
        probe, old = probes[path], rows.get(path)
        if probe.state in ("gone", "special"):
            if old is not None and old[KIND] == DIRECTORY:
                changes.removed_subtrees.add(path)
                covered.add(path)
            elif old is not None:
                changes.remove(path)
            if probe.state == "special":
                changes.skipped += 1
                changes.warnings.append(ScanWarning("special_file_skipped", path, ""))
            continue
        if probe.state == "unreadable" or probe.values is None:
            changes.unreadable += 1
            if old is not None and not old[UNREADABLE]:
                changes.upsert(path, flagged(old), old)
            if old is not None and old[KIND] == DIRECTORY:
                covered.add(path)
            continue
        values = probe.values
        if probe.state == "mount":
            changes.skipped += 1
            changes.warnings.append(ScanWarning("mount_point_skipped", path, ""))
            if old is None or not old[UNREADABLE]:
                changes.upsert(path, flagged(old or values), old)
            covered.add(path)
            continue
        if old is not None and old[KIND] == DIRECTORY and values[KIND] != DIRECTORY:
            # A directory became a file or symlink: its subtree goes, the path
            # itself is written again below.
            changes.removed_subtrees.add(path)
            covered.add(path)
        if values[KIND] == FILE:
            # Without `reread`, as a walk does: only a file whose size, mtime,
            # ctime or inode moved is read again (a verification probes every
            # path a run touched: it re-read each source file just copied).
            if reread or needs_hash(old, values):
                plan.files.append(probe)
            elif old is not None and old[MODE] != values[MODE]:
                new = (*old[:MODE], values[MODE], *old[CONTENT_ID:])
                changes.upsert(path, new, old)
            else:
                changes.unchanged += 1
        elif values[KIND] == DIRECTORY:
            if old is None or old[INODE] != values[INODE] or old[UNREADABLE]:
                plan.subtrees.append(DirTask(path, values))
                covered.add(path)
            elif not same_metadata(old, values):
                changes.upsert(path, values, old)
        elif old is None or not same_metadata(old, values):
            changes.upsert(path, values, old)
    return plan


def _within_any(path: bytes, prefixes: set[bytes]) -> bool:
    """True when `path` is one of `prefixes` or lies beneath one (`b""`, the
    root, covers every path)."""
    while path not in prefixes:
        if not path:
            return False
        path = parent_path(path)
    return True


def describe(root: bytes, relative_path: bytes) -> str:
    """A path for logs (surrogateescape keeps undecodable bytes visible)."""
    return absolute(root, relative_path).decode("utf-8", "surrogateescape")
