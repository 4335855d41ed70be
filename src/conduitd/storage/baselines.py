"""`sync_baseline`: per conduit and path, the state both sides agreed on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from conduitd.storage.database import Database, Row, Transaction, fetch_in
from conduitd.storage.models import BaselineRow, EntryKind
from conduitd.storage.state_sql import differs_within_kind

_SELECT: Final = (
    "SELECT relative_path, kind, size, mtime_ns, mode, content_id, symlink_target,"
    " generation FROM sync_baseline WHERE conduit_id = ?"
)
# Above this many subtrees one whole load costs less than a query per subtree.
_SUBSET_QUERIES_MAX: Final = 5_000


def _rows(rows: Iterable[Row]) -> dict[bytes, BaselineRow]:
    # Positional and by table lookup: this runs once per path of a conduit on
    # every full resolution (by name and through EnumMeta it cost 5-10 us a row).
    kinds = {int(kind): kind for kind in EntryKind}
    return {
        path: BaselineRow(path, kinds[kind], size, mtime_ns, mode, cid, link, gen)
        for path, kind, size, mtime_ns, mode, cid, link, gen in rows
    }


async def load_baseline(db: Database, conduit_id: int) -> dict[bytes, BaselineRow]:
    return _rows(await db.fetch_all(_SELECT, (conduit_id,)))


async def load_baseline_subset(
    db: Database, conduit_id: int, paths: Iterable[bytes]
) -> dict[bytes, BaselineRow]:
    """Baseline rows of `paths` and their subtrees (incremental resolution).

    The rows themselves by IN lists, then one ranged query on the primary key
    under each path that may have a subtree (a directory, or a path without a
    row): it costs what is asked for, not the size of the baseline. A ranged
    query for every path (2,000 edited files) took 0.3 s, twice per run
    (issue 6 bench).
    """
    wanted = {p for p in paths if p}  # as load_entry_subset: the root is no subtree
    tops = [
        p for p in sorted(wanted) if not _has_ancestor_in(p.rpartition(b"/")[0], wanted)
    ]
    if len(tops) > _SUBSET_QUERIES_MAX:
        whole = await load_baseline(db, conduit_id)
        return {p: row for p, row in whole.items() if _has_ancestor_in(p, wanted)}
    found = _rows(
        await fetch_in(db, f"{_SELECT} AND relative_path IN", (conduit_id,), tops)
    )
    # [p, p + b"0") holds p, p's subtree (b"/" sorts just below b"0") and
    # siblings such as p + b".txt", which are dropped.
    sql = f"{_SELECT} AND relative_path >= ? AND relative_path < ?"
    for top in tops:
        row = found.get(top)
        if row is not None and row.kind is not EntryKind.DIRECTORY:
            continue  # a file or symlink: nothing lies under it
        rows = await db.fetch_all(sql, (conduit_id, top, top + b"0"))
        found.update(
            (path, row)
            for path, row in _rows(rows).items()
            if path == top or path.startswith(top + b"/")
        )
    return found


def _has_ancestor_in(path: bytes, paths: set[bytes]) -> bool:
    """True when a proper ancestor of `path`, or `path` itself, is in `paths`."""
    while path:
        if path in paths:
            return True
        path = path.rpartition(b"/")[0]
    return False


async def has_any_baseline(db: Database, conduit_id: int) -> bool:
    row = await db.fetch_one(
        "SELECT EXISTS (SELECT 1 FROM sync_baseline WHERE conduit_id = ?)",
        (conduit_id,),
    )
    return bool(row and row[0])


async def replace_baseline_paths(
    tx: Transaction,
    conduit_id: int,
    upserts: Iterable[BaselineRow],
    deletes: Iterable[bytes],
) -> None:
    """Upsert agreed rows and drop the paths that no longer exist on either side."""
    await tx.execute_many(
        "DELETE FROM sync_baseline WHERE conduit_id = ? AND relative_path = ?",
        [(conduit_id, path) for path in deletes],
    )
    await tx.execute_many(
        "INSERT INTO sync_baseline (conduit_id, relative_path, kind, content_id, size,"
        " mtime_ns, mode, symlink_target, generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (conduit_id, relative_path) DO UPDATE SET kind = excluded.kind,"
        " content_id = excluded.content_id, size = excluded.size,"
        " mtime_ns = excluded.mtime_ns, mode = excluded.mode,"
        " symlink_target = excluded.symlink_target, generation = excluded.generation",
        [
            (
                conduit_id,
                row.relative_path,
                int(row.kind),
                row.content_id,
                row.size,
                row.mtime_ns,
                row.mode,
                row.symlink_target,
                row.generation,
            )
            for row in upserts
        ],
    )


# The paths whose baseline a run sets from the indexes; a temporary table of
# the connection, filled and emptied inside the writing transaction. CROSS
# JOIN keeps it the outer loop: the planner, without statistics on it, would
# walk a side's whole index instead (0.12 s a run over 100k files, for none).
_TOUCHED: Final = "temp.baseline_touched"
_AGREED_UPSERT: Final = f"""
INSERT INTO sync_baseline (conduit_id, relative_path, kind, content_id, size,
    mtime_ns, mode, symlink_target, generation)
SELECT ?3, s.relative_path, s.kind, s.content_id, s.size, s.mtime_ns, s.mode,
    s.symlink_target, ?4
FROM {_TOUCHED} p
CROSS JOIN entry s ON s.location_id = ?1 AND s.relative_path = p.relative_path
CROSS JOIN entry t ON t.location_id = ?2 AND t.relative_path = p.relative_path
WHERE s.kind = t.kind AND NOT {differs_within_kind("s", "t")}
ON CONFLICT (conduit_id, relative_path) DO UPDATE SET kind = excluded.kind,
    content_id = excluded.content_id, size = excluded.size,
    mtime_ns = excluded.mtime_ns, mode = excluded.mode,
    symlink_target = excluded.symlink_target, generation = excluded.generation
"""
_GONE_DELETE: Final = f"""
DELETE FROM sync_baseline WHERE conduit_id = ?3 AND relative_path IN (
    SELECT p.relative_path FROM {_TOUCHED} p
    WHERE NOT EXISTS (SELECT 1 FROM entry s
        WHERE s.location_id = ?1 AND s.relative_path = p.relative_path)
    AND NOT EXISTS (SELECT 1 FROM entry t
        WHERE t.location_id = ?2 AND t.relative_path = p.relative_path))
"""


async def record_agreed_paths(
    tx: Transaction,
    conduit_id: int,
    source_id: int,
    target_id: int,
    paths: Iterable[bytes],
    generation: int,
) -> None:
    """Set the baseline of `paths` from both sides' index rows, in SQL.

    Where the two rows hold the same state (the resolver's `same_state`),
    the source's row becomes the baseline; where neither side has a row, the
    baseline row goes; anything else keeps its old row (a skipped copy must
    still look changed to the next run). Loading both sides' rows of every
    path into objects to compare them took 2.8 of the 3.5 s this cost after
    a first two-way sync of 100k files (issue 6 bench).
    """
    await tx.execute(
        f"CREATE TABLE IF NOT EXISTS {_TOUCHED}"
        " (relative_path BLOB PRIMARY KEY) WITHOUT ROWID"
    )
    # In key order: appending to the B-tree costs a third less than a set's order.
    await tx.execute_many(
        f"INSERT OR IGNORE INTO {_TOUCHED} VALUES (?)", ((p,) for p in sorted(paths))
    )
    params = (source_id, target_id, conduit_id, generation)
    await tx.execute(_AGREED_UPSERT, params)
    await tx.execute(_GONE_DELETE, params[:3])
    await tx.execute(f"DELETE FROM {_TOUCHED}")


async def clear_baseline(tx: Transaction, conduit_id: int) -> None:
    await tx.execute("DELETE FROM sync_baseline WHERE conduit_id = ?", (conduit_id,))
