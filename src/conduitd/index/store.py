"""Where the index writes: entry rows in batches, and the location's own columns.

`IndexStore._commit_batch` is the one seam for logging (issue 4, point 8): with
a TransactionManager, every batch of entry writes commits together with one
`bulk_insert` summary entry (`log_bulk("entry", count, {location, added,
updated, removed})`), never one entry per file; without one (tests, tools), it
writes through `Database.transaction()` and logs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final

import anyio

from conduitd.index.scanner import ChangeSet
from conduitd.index.walk import child_term, digest_with
from conduitd.storage.agreement import bump_index_version
from conduitd.storage.database import Database
from conduitd.storage.entries import (
    KIND,
    SIZE,
    EntryValues,
    Totals,
    Writer,
    add_to_totals,
    clear_listing_digests,
    delete_entries,
    delete_subtree,
    fetch_entry_values,
    fetch_listing_digests,
    parent_path,
    set_listing_digests,
    upsert_entries,
)
from conduitd.storage.locations import (
    LocationRecord,
    LocationState,
    get_location,
    record_scan,
    set_has_marker,
    set_index_lost,
    set_location_identity,
    set_location_state,
)
from conduitd.storage.transactions import TransactionManager

# Rows per transaction for a scan's writes: big enough for executemany to be
# fast, small enough that readers are never held up for long.
SCAN_BATCH_ROWS: Final = 10_000


@dataclass(frozen=True, slots=True)
class WriteCounts:
    added: int = 0
    updated: int = 0
    removed: int = 0

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(
            self.added + other.added,
            self.updated + other.updated,
            self.removed + other.removed,
        )

    @property
    def total(self) -> int:
        return self.added + self.updated + self.removed


@dataclass(slots=True)
class _Batch:
    upserts: list[tuple[bytes, EntryValues]]
    removed: list[bytes]
    removed_subtrees: list[bytes]
    added: int
    # listing digests, written by the last batch once every row they vouch
    # for is in (the batches before it committed)
    digests: dict[bytes, bytes | None] = field(default_factory=dict)


class IndexStore:
    """Entry and location writes of the indexer."""

    def __init__(self, db: Database, tm: TransactionManager | None = None) -> None:
        self.db = db
        self.tm = tm

    async def write_changes(
        self,
        location: LocationRecord,
        changes: ChangeSet,
        *,
        batch_rows: int | None = SCAN_BATCH_ROWS,
    ) -> tuple[WriteCounts, list[bytes]]:
        """Write a change set; return the counts and every path deleted.

        Deletes go first, then upserts in path order (parents before children)
        in transactions of at most `batch_rows` rows (None: one transaction),
        then the listing digests, in the last one.
        """
        # Sorting 100k paths takes tens of milliseconds: not on the event loop.
        ordered = await anyio.to_thread.run_sync(sorted, changes.upserts.items())
        size = batch_rows or max(1, len(ordered))
        first = _Batch(
            upserts=ordered[:size],
            removed=sorted(changes.removed),
            removed_subtrees=sorted(changes.removed_subtrees),
            added=0,
        )
        batches = [first] + [
            _Batch(ordered[i : i + size], [], [], 0)
            for i in range(size, len(ordered), size)
        ]
        batches[-1].digests = changes.final_digests()
        fresh = batches[-1].digests.keys()
        total = WriteCounts()
        deleted: list[bytes] = []
        for batch in batches:
            batch.added = sum(1 for path, _ in batch.upserts if path in changes.added)
            if not (
                batch.upserts
                or batch.removed
                or batch.removed_subtrees
                or batch.digests
            ):
                continue
            counts, gone = await self._commit_batch(location, batch, fresh)
            total += counts
            deleted += gone
        return total, deleted

    async def _commit_batch(
        self, location: LocationRecord, batch: _Batch, fresh: AbstractSet[bytes]
    ) -> tuple[WriteCounts, list[bytes]]:
        """The logging seam: one transaction, and with a TransactionManager one
        `bulk_insert` summary for it."""
        if self.tm is None:
            async with self.db.transaction() as tx:
                return await _apply_batch(tx, location.id, batch, fresh)
        async with self.tm.transaction() as ltx:
            counts, deleted = await _apply_batch(ltx, location.id, batch, fresh)
            if counts.total:
                await ltx.log_bulk(
                    "entry",
                    counts.total,
                    {
                        "location": str(location.uuid),
                        "added": counts.added,
                        "updated": counts.updated,
                        "removed": counts.removed,
                    },
                )
            return counts, deleted

    async def set_state(self, location_id: int, state: LocationState) -> None:
        async with self.db.transaction() as tx:
            await set_location_state(tx, location_id, state)

    async def set_identity(
        self, location_id: int, st_dev: int, root_inode: int
    ) -> None:
        async with self.db.transaction() as tx:
            await set_location_identity(tx, location_id, st_dev, root_inode)

    async def set_index_lost(self, location_id: int, lost: bool) -> None:
        async with self.db.transaction() as tx:
            await set_index_lost(tx, location_id, lost)

    async def set_has_marker(self, location_id: int, has_marker: bool) -> None:
        async with self.db.transaction() as tx:
            await set_has_marker(tx, location_id, has_marker)

    async def finish_scan(
        self, location_id: int, scanned_at: str, state: LocationState
    ) -> tuple[int, int]:
        """Record the scan time and state; return the location's totals
        (files, bytes), which every write keeps (`_apply_batch`)."""
        async with self.db.transaction() as tx:
            await record_scan(tx, location_id, scanned_at=scanned_at)
            await set_location_state(tx, location_id, state)
            record = await get_location(tx, location_id)
        assert record is not None  # we wrote it
        return record.total_file_count, record.total_byte_size


async def _apply_batch(
    tx: Writer, location_id: int, batch: _Batch, fresh: AbstractSet[bytes]
) -> tuple[WriteCounts, list[bytes]]:
    """One batch of a write; `fresh` are the directories whose listing digests
    the write's last batch stores."""
    # Once each: a directory that became a file is deleted and written.
    touched = [
        path
        for path in dict.fromkeys(
            (*(p for p, _ in batch.upserts), *batch.removed, *batch.removed_subtrees)
        )
        if path
    ]
    # The other parents of written children keep a true digest: their terms
    # of the children's old rows out, of the new rows in (rows read first).
    # Not a parent that goes itself (a directory that became a file keeps no
    # digest of the children it lost).
    parents = {parent_path(p) for p in touched}
    gone = {*batch.removed, *batch.removed_subtrees}
    kept = await fetch_listing_digests(tx, location_id, parents - fresh - gone)
    children = [p for p in touched if parent_path(p) in kept]
    written = [*dict.fromkeys((*(p for p, _ in batch.upserts), *batch.removed))]
    # The old rows of the written paths (the location's totals move by them)
    # and of the children whose parents keep their digests.
    wanted = [*written, *children]
    old = await fetch_entry_values(tx, location_id, wanted) if wanted else {}
    deleted: list[bytes] = []
    delta = Totals()
    for prefix in batch.removed_subtrees:
        paths, lost = await delete_subtree(tx, location_id, prefix)
        deleted += paths
        delta -= lost
    counted = set(deleted)  # their old rows are out of the totals already
    replaced = [old[p] for p in written if p in old and p not in counted]
    delta -= Totals.over((values[KIND], values[SIZE]) for values in replaced)
    delta += Totals.over((values[KIND], values[SIZE]) for _, values in batch.upserts)
    await delete_entries(tx, location_id, batch.removed)
    deleted += batch.removed
    await upsert_entries(tx, location_id, batch.upserts)
    await add_to_totals(tx, location_id, delta)
    await set_listing_digests(
        tx,
        location_id,
        updated_digests(kept, children, old, dict(batch.upserts)).items(),
    )
    # Until the last batch stores fresh ones, the digests of the directories
    # this write lists vouch for nothing; nor does the root's, when all its
    # children went at once (a subtree delete of b"").
    stale = parents & fresh
    if b"" in batch.removed_subtrees:
        stale.add(b"")
    await clear_listing_digests(tx, location_id, stale - batch.digests.keys())
    await set_listing_digests(tx, location_id, batch.digests.items())
    # A path deleted with its subtree and written again (a directory that became
    # a file) counts as updated, not as removed and added.
    rewritten = {p for p, _ in batch.upserts}
    removed = sum(1 for p in deleted if p not in rewritten)
    counts = WriteCounts(
        added=batch.added, updated=len(batch.upserts) - batch.added, removed=removed
    )
    if batch.upserts or deleted:
        await bump_index_version(tx, location_id)
    return counts, deleted


def updated_digests(
    digests: Mapping[bytes, bytes],
    children: Iterable[bytes],
    old: Mapping[bytes, EntryValues],
    new: Mapping[bytes, EntryValues],
) -> dict[bytes, bytes | None]:
    """The listing digests of directories after their `children` went from
    their `old` rows (absent: none) to their `new` ones (absent: deleted).

    None where a row is one no listing vouches for: the next walk compares
    that directory's children one by one and stores a fresh digest.
    """
    out: dict[bytes, list[int]] = {}
    into: dict[bytes, list[int]] = {}
    broken: set[bytes] = set()
    for child in children:
        parent = parent_path(child)
        for rows, terms in ((old, out), (new, into)):
            values = rows.get(child)
            if values is None:
                continue
            term = child_term(child, values)
            if term is None:
                broken.add(parent)
            else:
                terms.setdefault(parent, []).append(term)
    return {
        parent: None
        if parent in broken
        else digest_with(digest, out.get(parent, ()), into.get(parent, ()))
        for parent, digest in digests.items()
    }
