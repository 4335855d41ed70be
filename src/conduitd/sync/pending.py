"""Keeping pending `sync_conflict` rows true to what resolution sees (issue 6).

A `prompt_user` conflict is recorded once, when first seen. Every later
resolution that covers its path brings the row up to date: sides edited
again are recorded again (so that `conduitd resolve` compares against what
the user last saw in `conduitd conflicts`), and a path that is no longer a
conflict (the user made both sides agree, deleted one side, or the strategy
changed) is closed: resolved, with no resolution to record.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from conduitd.storage.conflicts import ConflictRepository, ConflictSide, ConflictStatus
from conduitd.storage.models import EntryRow
from conduitd.storage.transactions import TransactionManager
from conduitd.sync.operations import Conflict


def conflict_side(entry: EntryRow | None) -> ConflictSide:
    """What a `sync_conflict` row records of one side (absent: all None)."""
    if entry is None:
        return ConflictSide()
    return ConflictSide(entry.kind, entry.size, entry.mtime_ns, entry.content_id)


def _in_scope(path: bytes, scope: Collection[bytes] | None) -> bool:
    """True when `path` is one of `scope` or beneath one (None: everything)."""
    if scope is None:
        return True
    while True:
        if path in scope:
            return True
        if not path:
            return False
        path = path.rpartition(b"/")[0]


async def refresh_pending(
    tm: TransactionManager,
    rows: ConflictRepository,
    conduit_id: int,
    pending: Sequence[Conflict],
    scope: Collection[bytes] | None,
) -> list[Conflict]:
    """Update or close the open rows this resolution covered.

    Args:
        pending: the conflicts left for the user by this resolution.
        scope: the paths it resolved, with their subtrees (None: all).

    Returns:
        The pending conflicts that have no open row yet (to be recorded in
        the generation that is about to start).
    """
    open_rows = {
        r.relative_path: r for r in await rows.list(conduit_id, ConflictStatus.PENDING)
    }
    current = {c.relative_path: c for c in pending}
    closed = [
        r for p, r in open_rows.items() if p not in current and _in_scope(p, scope)
    ]
    changed = []
    for path, conflict in current.items():
        row = open_rows.get(path)
        sides = (conflict_side(conflict.source), conflict_side(conflict.target))
        if row is not None and (row.source, row.target) != sides:
            changed.append((row.id, sides))
    if closed or changed:
        async with tm.transaction() as tx:
            for row in closed:
                await rows.resolve(tx, row.id, None)
            for conflict_id, (source, target) in changed:
                await rows.update_sides(tx, conflict_id, source, target)
    return [c for p, c in current.items() if p not in open_rows]
