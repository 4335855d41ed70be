"""`sync_trash`: one row for every version conduitd moved into a trash."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from conduitd.storage.database import Database, Row, Transaction, fetch_in
from conduitd.timeutil import utc_now_text


class TrashReason(enum.StrEnum):
    DELETED = "deleted"
    OVERWRITTEN = "overwritten"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class TrashRow:
    """A trashed version; `root` is `source` or `target`."""

    conduit_id: int
    generation: int
    root: str
    relative_path: bytes
    trash_path: bytes
    reason: TrashReason
    size: int
    mtime_ns: int
    content_id: str | None
    trashed_at: str = ""
    id: int = 0

    @classmethod
    def from_row(cls, row: Row) -> TrashRow:
        return cls(
            id=row["id"],
            conduit_id=row["conduit_id"],
            generation=row["generation"],
            root=row["root"],
            relative_path=bytes(row["relative_path"]),
            trash_path=bytes(row["trash_path"]),
            reason=TrashReason(row["reason"]),
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            content_id=row["content_id"],
            trashed_at=row["trashed_at"],
        )


async def record_trashed(tx: Transaction, rows: Iterable[TrashRow]) -> None:
    now = utc_now_text()
    await tx.execute_many(
        "INSERT INTO sync_trash (conduit_id, generation, root, relative_path,"
        " trash_path, reason, size, mtime_ns, content_id, trashed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.conduit_id,
                r.generation,
                r.root,
                r.relative_path,
                r.trash_path,
                r.reason.value,
                r.size,
                r.mtime_ns,
                r.content_id,
                r.trashed_at or now,
            )
            for r in rows
        ],
    )


async def list_trashed(
    db: Database, conduit_id: int, prefix: bytes | None = None
) -> list[TrashRow]:
    """Trashed versions of a conduit, newest first, optionally under a path."""
    rows = await db.fetch_all(
        "SELECT * FROM sync_trash WHERE conduit_id = ? ORDER BY generation DESC, id DESC",
        (conduit_id,),
    )
    found = [TrashRow.from_row(r) for r in rows]
    if prefix:
        found = [
            r
            for r in found
            if r.relative_path == prefix or r.relative_path.startswith(prefix + b"/")
        ]
    return found


@dataclass(frozen=True, slots=True)
class TrashTotals:
    """A conduit's trash in three numbers."""

    count: int
    size: int
    oldest_trashed_at: str | None


async def trash_totals(db: Database, conduit_id: int) -> TrashTotals:
    rows = await db.fetch_all(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(trashed_at) FROM sync_trash"
        " WHERE conduit_id = ?",
        (conduit_id,),
    )
    count, size, oldest = rows[0]
    return TrashTotals(int(count), int(size), None if oldest is None else str(oldest))


async def oldest_trashed_at(db: Database, conduit_id: int) -> str | None:
    """When the conduit's oldest trashed version went to trash (None: none);
    one seek in idx_sync_trash_age."""
    rows = await db.fetch_all(
        "SELECT MIN(trashed_at) FROM sync_trash WHERE conduit_id = ?", (conduit_id,)
    )
    oldest = rows[0][0]
    return None if oldest is None else str(oldest)


async def expired_unprotected_exists(
    db: Database, conduit_id: int, location_ids: Sequence[int], cutoff: str
) -> bool:
    """Whether a version trashed before `cutoff` is not the newest trashed copy
    of a path that exists on neither side (see `last_copies`): one that age
    retention would prune. An index lookup or two per version older than
    `cutoff`, instead of loading every row into Python."""
    rows = await db.fetch_all(
        expired_unprotected_sql(len(location_ids)),
        (conduit_id, cutoff, *location_ids),
    )
    return bool(rows[0][0])


def expired_unprotected_sql(locations: int) -> str:
    """The query of `expired_unprotected_exists` for that many location ids."""
    marks = ", ".join("?" * locations)
    return (
        "SELECT EXISTS (SELECT 1 FROM sync_trash t"
        " WHERE t.conduit_id = ? AND t.trashed_at < ? AND ("
        " EXISTS (SELECT 1 FROM sync_trash n WHERE n.conduit_id = t.conduit_id"
        " AND n.relative_path = t.relative_path"
        # `+`: no range on idx_sync_trash_conduit's generation, which the
        # planner preferred to the path index (every row against every row:
        # 470 s for 68k rows).
        " AND (+n.generation, n.trashed_at, n.id) > (t.generation, t.trashed_at, t.id))"
        " OR EXISTS (SELECT 1 FROM entry e"
        f" WHERE e.location_id IN ({marks}) AND e.relative_path = t.relative_path)))"
    )


async def delete_trashed(tx: Transaction, ids: Iterable[int]) -> None:
    """Drop the rows of pruned versions (issue 9: the row goes with the file)."""
    await tx.execute_many("DELETE FROM sync_trash WHERE id = ?", [(i,) for i in ids])


async def existing_paths(
    db: Database, location_ids: Iterable[int], paths: Iterable[bytes]
) -> set[bytes]:
    """Which of `paths` the index knows on any of `location_ids` (any kind)."""
    locations = tuple(location_ids)
    rows = await fetch_in(
        db,
        "SELECT DISTINCT relative_path FROM entry WHERE location_id IN"
        f" ({', '.join('?' * len(locations))}) AND relative_path IN",
        locations,
        sorted(set(paths)),
    )
    return {bytes(r["relative_path"]) for r in rows}
