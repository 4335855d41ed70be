"""Trash retention (issue 9): the trash is a safety net with a stated horizon.

A conduit's trashed versions older than `trash_retention` are pruned, then the
oldest ones while the conduit's trash is over `trash_max_bytes`. One version
is never pruned: the newest trashed copy of a path that exists on neither
side any more (the last copy of a vanished file), whatever its age or size.
Pruning removes the file first and then its `sync_trash` row; a version
already gone from the trash loses its row too.

`select_prunable` is pure; `prune_conduit_trash` reads the rows and the
index, removes files in a worker thread and deletes rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import anyio
import structlog

from conduitd.config import ConduitConfig, SyncMode
from conduitd.jobs.trash_prune import prune_trashed
from conduitd.storage.conduits import ConduitManager, ConduitRecord
from conduitd.storage.library import Library
from conduitd.storage.transactions import TransactionManager
from conduitd.storage.trash_rows import (
    TrashRow,
    TrashTotals,
    delete_trashed,
    existing_paths,
    expired_unprotected_exists,
    list_trashed,
    oldest_trashed_at,
    trash_totals,
)
from conduitd.timeutil import format_utc, parse_utc, utc_now

logger = structlog.get_logger()

RETENTION_INTERVAL_S: Final = 3600.0
RETENTION_FIRST_DELAY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long and how much trash a conduit keeps (None: no limit)."""

    max_age_s: float | None
    max_bytes: int | None

    @classmethod
    def of(
        cls, conduit: ConduitConfig, older_than_s: float | None = None
    ) -> RetentionPolicy:
        """The conduit's policy; `older_than_s` (trash purge) replaces the age."""
        age = conduit.trash_retention_s if older_than_s is None else older_than_s
        return cls(max_age_s=age, max_bytes=conduit.trash_max_bytes)

    def over_cap(self, totals: TrashTotals) -> bool:
        return self.max_bytes is not None and totals.size > self.max_bytes

    def may_prune(self, totals: TrashTotals, now: datetime) -> bool:
        """False when no version is old enough and the total fits the cap:
        `select_prunable` would then choose nothing."""
        if totals.count == 0:
            return False
        if self.over_cap(totals):
            return True
        return self.expired(totals.oldest_trashed_at, now)

    def expired(self, trashed_at: str | None, now: datetime) -> bool:
        """Whether a version trashed at `trashed_at` is past the age limit."""
        if self.max_age_s is None or trashed_at is None:
            return False
        return (now - parse_utc(trashed_at)).total_seconds() > self.max_age_s

    def cutoff(self, now: datetime) -> str | None:
        """Versions trashed before this are past the age limit (with a second
        of slack: one at the boundary is looked at, never missed)."""
        if self.max_age_s is None:
            return None
        return format_utc(now - timedelta(seconds=self.max_age_s - 1))


@dataclass(frozen=True, slots=True)
class PruneSummary:
    """What one pruning pass did for one conduit."""

    conduit: str
    pruned: int = 0
    pruned_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    failed: int = 0

    def document(self) -> dict[str, object]:
        return {
            "conduit": self.conduit,
            "pruned": self.pruned,
            "pruned_bytes": self.pruned_bytes,
            "kept": self.kept,
            "kept_bytes": self.kept_bytes,
            "failed": self.failed,
        }


def _oldest_first(row: TrashRow) -> tuple[int, str, int]:
    return (row.generation, row.trashed_at, row.id)


def last_copies(rows: Sequence[TrashRow], live_paths: Collection[bytes]) -> set[int]:
    """Ids of the newest version of each path that exists on neither side."""
    newest: dict[bytes, TrashRow] = {}
    for row in sorted(rows, key=_oldest_first):
        if row.relative_path not in live_paths:
            newest[row.relative_path] = row
    return {row.id for row in newest.values()}


def select_prunable(
    rows: Sequence[TrashRow],
    policy: RetentionPolicy,
    now: datetime,
    live_paths: Collection[bytes],
) -> list[TrashRow]:
    """The versions to prune, oldest first: by age, then by size over the cap."""
    protected = last_copies(rows, live_paths)
    prunable: list[TrashRow] = []
    kept: list[TrashRow] = []
    for row in sorted(rows, key=_oldest_first):
        too_old = policy.max_age_s is not None and (
            (now - parse_utc(row.trashed_at)).total_seconds() > policy.max_age_s
        )
        (prunable if too_old and row.id not in protected else kept).append(row)
    if policy.max_bytes is not None:
        total = sum(row.size for row in kept)
        for row in kept:
            if total <= policy.max_bytes:
                break
            if row.id not in protected:
                prunable.append(row)
                total -= row.size
    return sorted(prunable, key=_oldest_first)


async def prune_conduit_trash(
    library: Library,
    tm: TransactionManager,
    conduit: ConduitConfig,
    *,
    older_than_s: float | None = None,
    now: datetime | None = None,
    summarize: bool = True,
) -> PruneSummary:
    """Apply the conduit's retention (or `older_than_s`) to its trash now.

    Args:
        summarize: count what is kept even when nothing is pruned. Without,
            and without a size cap, a pass that prunes nothing reads two
            index ranges, not every row (the pass after every run).
    """
    record = await ConduitManager(library.db).get_by_name(conduit.name)
    if record is None:
        return PruneSummary(conduit.name)
    policy = RetentionPolicy.of(conduit, older_than_s)
    now = now or utc_now()
    # Runs prune after every generation: the rows are loaded only when one may
    # go (loading 20k of them cost 80 ms of every 1 %-changed run). Without a
    # size cap and a summary to give, the trash is not even counted: the
    # oldest version's age is one seek in an index (counting 118k versions
    # cost 23 ms a run, growing with them). Issue 5 bench.
    if summarize or policy.max_bytes is not None:
        totals = await trash_totals(library.db, record.id)
        kept = PruneSummary(conduit.name, kept=totals.count, kept_bytes=totals.size)
        if not policy.may_prune(totals, now):
            return kept
        over_cap = policy.over_cap(totals)
    else:
        kept = PruneSummary(conduit.name)
        if not policy.expired(await oldest_trashed_at(library.db, record.id), now):
            return kept
        over_cap = False
    locations = await _location_ids(library, record)
    if not over_cap and not await _expired_unprotected(
        library, record.id, locations, policy, now
    ):
        return kept
    rows = await list_trashed(library.db, record.id)
    live = await existing_paths(
        library.db, locations, {row.relative_path for row in rows}
    )
    chosen = select_prunable(rows, policy, now, live)
    removed = await _remove_files(conduit, chosen)
    gone = [row for row in chosen if (row.root, row.trash_path) in removed]
    if gone:
        async with tm.transaction() as tx:
            await delete_trashed(tx, (row.id for row in gone))
    gone_ids = {row.id for row in gone}
    left = [row for row in rows if row.id not in gone_ids]
    summary = PruneSummary(
        conduit.name,
        pruned=len(gone),
        pruned_bytes=sum(row.size for row in gone),
        kept=len(left),
        kept_bytes=sum(row.size for row in left),
        failed=len(chosen) - len(gone),
    )
    if chosen:
        logger.info("trash_pruned", **summary.document())
    return summary


async def prune_all(
    library: Library, tm: TransactionManager, conduits: Sequence[ConduitConfig]
) -> list[PruneSummary]:
    """Prune every conduit's trash (the pass after a run, and the hourly one);
    one conduit's failure is logged, not raised."""
    summaries = []
    for conduit in conduits:
        try:
            summaries.append(
                await prune_conduit_trash(library, tm, conduit, summarize=False)
            )
        except Exception:  # pruning must never stop the daemon or fail a run
            logger.exception("trash_prune_failed", conduit=conduit.name)
    return summaries


def root_path(conduit: ConduitConfig, root: str) -> Path:
    """The endpoint a `sync_trash.root` value names."""
    return conduit.source if root == "source" else conduit.target


def restore_side(conduit: ConduitConfig, removed_from: str) -> str:
    """Where a version goes back by default (issue 9).

    Mirror and selective: the source, so the next run propagates it to the
    target (restoring on the target would be undone by that run).
    Bidirectional: the side it was removed from.
    """
    if conduit.mode is SyncMode.BIDIRECTIONAL:
        return removed_from
    return "source"


async def _expired_unprotected(
    library: Library,
    conduit_id: int,
    locations: Sequence[int],
    policy: RetentionPolicy,
    now: datetime,
) -> bool:
    """A version too old that is not a kept last copy exists. Once a month has
    gone by, an old last copy nearly always exists: the age of the oldest
    version alone then loaded every row after every run."""
    cutoff = policy.cutoff(now)
    return cutoff is not None and await expired_unprotected_exists(
        library.db, conduit_id, locations, cutoff
    )


async def _location_ids(library: Library, record: ConduitRecord) -> list[int]:
    rows = await library.db.fetch_all(
        "SELECT location_id FROM entry WHERE id IN (?, ?)",
        (record.source_entry_id, record.target_entry_id),
    )
    return [int(r["location_id"]) for r in rows]


async def _remove_files(
    conduit: ConduitConfig, rows: Sequence[TrashRow]
) -> set[tuple[str, bytes]]:
    """Remove the rows' files per root; the (root, trash_path) pairs now gone."""
    by_root: dict[str, list[bytes]] = {}
    for row in rows:
        by_root.setdefault(row.root, []).append(row.trash_path)
    removed: set[tuple[str, bytes]] = set()
    for root, paths in by_root.items():
        path = bytes(root_path(conduit, root))
        report = await anyio.to_thread.run_sync(prune_trashed, path, paths)
        removed.update((root, rel) for rel in report.removed)
        for rel, error in report.failed:
            logger.warning(
                "trash_prune_path_failed",
                conduit=conduit.name,
                root=root,
                trash_path=rel.decode("utf-8", "surrogateescape"),
                error=error,
            )
    return removed


async def run_retention(
    library: Library,
    tm: TransactionManager,
    conduits: Callable[[], Sequence[ConduitConfig]],
    *,
    interval_s: float = RETENTION_INTERVAL_S,
    first_delay_s: float = RETENTION_FIRST_DELAY_S,
) -> None:
    """The daemon's hourly pass over every conduit's trash, until cancelled.

    The first pass waits a little, so start-up scans fill the index first
    (a path the index does not know yet counts as vanished: kept).
    """
    await anyio.sleep(first_delay_s)
    while True:
        await prune_all(library, tm, conduits())
        await anyio.sleep(interval_s)
