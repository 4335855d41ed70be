"""Walk a tree (or refresh watched paths) and compute the index changes.

The scanner never writes: it compares what is on disk with the rows it is
given and returns a `ChangeSet`. Disk work runs in worker threads, one call per
batch of directories or files, under the indexer's shared `CapacityLimiter`;
listing and hashing overlap (hash batches start while deeper levels are
listed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import anyio
import structlog
from anyio.abc import TaskGroup

from conduitd.index.hashing import (
    PARALLEL_HASH_BYTES,
    HashOutcome,
    HashStatus,
    hash_files,
)
from conduitd.index.walk import (
    DIRECTORY,
    FILE,
    DirTask,
    ListingResult,
    Probe,
    ScanWarning,
    absolute,
    flagged,
    is_conduitd_path,
    list_directories,
    probe_paths,
    same_metadata,
)
from conduitd.storage.entries import (
    INODE,
    KIND,
    SIZE,
    UNREADABLE,
    EntryValues,
    Reader,
    fetch_entry_values,
    is_within,
    load_entry_values,
    parent_path,
)

logger = structlog.get_logger()

DIRS_PER_CALL: Final = 64
FILES_PER_HASH_CALL: Final = 256
BYTES_PER_HASH_CALL: Final = 32 << 20
WARNINGS_LOGGED: Final = 20


@dataclass(slots=True)
class ChangeSet:
    """Rows to write for one location: upserts, single deletes, subtree deletes."""

    upserts: dict[bytes, EntryValues] = field(default_factory=dict)
    added: set[bytes] = field(default_factory=set)
    removed: set[bytes] = field(default_factory=set)
    removed_subtrees: set[bytes] = field(default_factory=set)
    unchanged: int = 0
    unreadable: int = 0
    skipped: int = 0
    hashed_files: int = 0
    hashed_bytes: int = 0
    warnings: list[ScanWarning] = field(default_factory=list)

    def upsert(self, path: bytes, values: EntryValues, old: EntryValues | None) -> None:
        if old is None:
            self.added.add(path)
        self.upserts[path] = values
        self.removed.discard(path)

    def remove(self, path: bytes) -> None:
        self.upserts.pop(path, None)
        self.added.discard(path)
        self.removed.add(path)

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


class TreeScanner:
    """Computes index changes for one root; shares the indexer's limiter."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def collect(
        self,
        root: bytes,
        root_dev: int,
        start: DirTask,
        old: dict[bytes, EntryValues],
        changes: ChangeSet,
    ) -> None:
        """Walk `start` and its subtree, comparing with `old` (consumed).

        `old` holds the rows of that subtree (`start` included); what is left
        of it after the walk, outside unreadable subtrees, has vanished.
        """
        old.pop(start.relative_path, None)
        _plan_directory(start, changes)
        kept: list[bytes] = []
        pending: list[tuple[bytes, EntryValues, EntryValues | None]] = []
        async with anyio.create_task_group() as tg:
            frontier = [start]
            while frontier:
                results = await self._list_level(root, frontier, root_dev, old)
                frontier = []
                for result in results:
                    _merge_listing(result, changes, kept, frontier, pending)
                self._start_hashing(tg, root, root_dev, pending, changes, final=False)
            self._start_hashing(tg, root, root_dev, pending, changes, final=True)
        _remove_vanished(old, kept, start.relative_path, changes)

    async def refresh(
        self,
        db: Reader,
        location_id: int,
        root: bytes,
        root_dev: int,
        paths: Iterable[bytes],
    ) -> ChangeSet:
        """Re-stat watched paths (and their parents); scan new directories."""
        changes = ChangeSet()
        wanted = {p for p in paths if p and not is_conduitd_path(p)}
        wanted |= {parent_path(p) for p in wanted}
        wanted.discard(b"")  # the root row is refreshed by scans only
        probes, rows = await self._probe_with_ancestors(
            db, location_id, root, root_dev, wanted
        )
        plan = _plan_probes(probes, rows, changes)
        async with anyio.create_task_group() as tg:
            pending = [
                (p.relative_path, p.values, rows.get(p.relative_path))
                for p in plan.files
                if p.values
            ]
            self._start_hashing(tg, root, root_dev, pending, changes, final=True)
            for task in plan.subtrees:
                tg.start_soon(
                    self._collect_subtree,
                    db,
                    location_id,
                    root,
                    root_dev,
                    task,
                    changes,
                )
        return changes

    async def _collect_subtree(
        self,
        db: Reader,
        location_id: int,
        root: bytes,
        root_dev: int,
        task: DirTask,
        changes: ChangeSet,
    ) -> None:
        old = await load_entry_values(db, location_id, prefix=task.relative_path)
        await self.collect(root, root_dev, task, old, changes)

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

    async def _list_level(
        self,
        root: bytes,
        frontier: list[DirTask],
        root_dev: int,
        old: dict[bytes, EntryValues],
    ) -> list[ListingResult]:
        workers = max(1, int(self._limiter.total_tokens))
        size = max(1, min(DIRS_PER_CALL, -(-len(frontier) // (2 * workers))))
        chunks = [frontier[i : i + size] for i in range(0, len(frontier), size)]
        results: list[ListingResult] = []

        async def run(chunk: list[DirTask]) -> None:
            results.append(
                await anyio.to_thread.run_sync(
                    list_directories, root, chunk, root_dev, old, limiter=self._limiter
                )
            )

        if len(chunks) == 1:
            await run(chunks[0])
            return results
        async with anyio.create_task_group() as tg:
            for chunk in chunks:
                tg.start_soon(run, chunk)
        return results

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
        for item in pending:
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


def _plan_directory(task: DirTask, changes: ChangeSet) -> None:
    old = task.old
    if old is None or not same_metadata(old, task.values) or old[UNREADABLE]:
        changes.upsert(task.relative_path, task.values, old)
    else:
        changes.unchanged += 1


def _merge_listing(
    result: ListingResult,
    changes: ChangeSet,
    kept: list[bytes],
    frontier: list[DirTask],
    pending: list[tuple[bytes, EntryValues, EntryValues | None]],
) -> None:
    for path, (values, old) in result.upserts.items():
        changes.upsert(path, values, old)
    for path, had_row in result.vanished:
        if had_row:
            changes.remove(path)
        else:
            changes.upserts.pop(path, None)
            changes.added.discard(path)
    for task in result.subdirs:
        _plan_directory(task, changes)
        frontier.append(task)
    pending.extend(result.to_hash)
    kept.extend(result.kept_subtrees)
    changes.unchanged += result.unchanged
    changes.unreadable += result.unreadable
    changes.skipped += result.skipped
    changes.warnings.extend(result.warnings)


def _merge_hash(
    path: bytes,
    listed: EntryValues,
    old: EntryValues | None,
    outcome: HashOutcome,
    changes: ChangeSet,
) -> None:
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


def _remove_vanished(
    old: dict[bytes, EntryValues], kept: list[bytes], start: bytes, changes: ChangeSet
) -> None:
    for path in old:
        if path == b"" or path == start:
            continue
        if kept and any(is_within(path, k) for k in kept):
            continue
        changes.remove(path)


@dataclass(slots=True)
class _ProbePlan:
    files: list[Probe] = field(default_factory=list)
    subtrees: list[DirTask] = field(default_factory=list)


def _plan_probes(
    probes: dict[bytes, Probe], rows: dict[bytes, EntryValues], changes: ChangeSet
) -> _ProbePlan:
    """Decide what each probed path needs; shallow paths first, so that a path
    under a directory being scanned or removed whole is left to that."""
    plan = _ProbePlan()
    covered: list[bytes] = []
    for path in sorted(probes, key=lambda p: (p.count(b"/"), p)):
        if any(is_within(path, c) for c in covered):
            continue
        probe, old = probes[path], rows.get(path)
        if probe.state in ("gone", "special"):
            if old is not None and old[KIND] == DIRECTORY:
                changes.removed_subtrees.add(path)
                covered.append(path)
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
                covered.append(path)
            continue
        values = probe.values
        if probe.state == "mount":
            changes.skipped += 1
            changes.warnings.append(ScanWarning("mount_point_skipped", path, ""))
            if old is None or not old[UNREADABLE]:
                changes.upsert(path, flagged(old or values), old)
            covered.append(path)
            continue
        if old is not None and old[KIND] == DIRECTORY and values[KIND] != DIRECTORY:
            # A directory became a file or symlink: its subtree goes, the path
            # itself is written again below.
            changes.removed_subtrees.add(path)
            covered.append(path)
        if values[KIND] == FILE:
            plan.files.append(probe)
        elif values[KIND] == DIRECTORY:
            if old is None or old[INODE] != values[INODE] or old[UNREADABLE]:
                plan.subtrees.append(DirTask(path, values, old))
                covered.append(path)
            elif not same_metadata(old, values):
                changes.upsert(path, values, old)
        elif old is None or not same_metadata(old, values):
            changes.upsert(path, values, old)
    return plan


def describe(root: bytes, relative_path: bytes) -> str:
    """A path for logs (surrogateescape keeps undecodable bytes visible)."""
    return absolute(root, relative_path).decode("utf-8", "surrogateescape")
