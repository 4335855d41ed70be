"""Compare two locations' indexes in bulk, in SQL: the paths that differ.

A one-shot mirror run has just rescanned both roots, so it cannot take its
work from a watcher (nor can a daemon's run when every path is dirty, as
after its start, nor any verification of a run that touched many paths);
loading both trees whole and resolving every path costs far more than the
walk itself (issue 5 benchmark: 100k unchanged files). The index already
holds both sides, keyed by (location, relative path): one join returns the
paths where they differ, and only those (with their subtrees and ancestors)
are resolved, as the daemon resolves its dirty paths.

A path is listed when it exists on one side only, or differs in kind, in the
unreadable flag, or in what the resolver compares for its kind (files:
content, size, permission bits, mtime; symlinks: target and mtime;
directories: permission bits). Ignore rules and mtime granularity are the
resolver's business: this is a superset of what it would act on.
"""

from __future__ import annotations

from typing import Final

from conduitd.storage.database import Reader
from conduitd.storage.state_sql import differs_within_kind

_DIFFERING_SQL: Final = f"""
SELECT s.relative_path FROM entry s
LEFT JOIN entry t ON t.location_id = ?2 AND t.relative_path = s.relative_path
WHERE s.location_id = ?1 AND s.relative_path != x'' AND (
    t.id IS NULL OR s.kind != t.kind OR s.unreadable OR t.unreadable
    OR {differs_within_kind("s", "t")})
UNION ALL
SELECT t.relative_path FROM entry t
WHERE t.location_id = ?2 AND t.relative_path != x'' AND NOT EXISTS (
    SELECT 1 FROM entry s
    WHERE s.location_id = ?1 AND s.relative_path = t.relative_path)
"""


# Bidirectional (issue 6): paths whose source row moved away from the baseline
# (or has none), and baseline rows the source lacks. With the query above this
# covers every path where source, target and baseline do not all agree.
_BASELINE_SQL: Final = f"""
SELECT s.relative_path FROM entry s
LEFT JOIN sync_baseline b ON b.conduit_id = ?2 AND b.relative_path = s.relative_path
WHERE s.location_id = ?1 AND s.relative_path != x'' AND (
    b.relative_path IS NULL OR s.kind != b.kind OR {differs_within_kind("s", "b")})
UNION ALL
SELECT b.relative_path FROM sync_baseline b
WHERE b.conduit_id = ?2 AND NOT EXISTS (
    SELECT 1 FROM entry s
    WHERE s.location_id = ?1 AND s.relative_path = b.relative_path)
"""


async def differing_paths(
    db: Reader, source_id: int, target_id: int, *, baseline_of: int | None = None
) -> list[bytes]:
    """Relative paths whose index rows differ between the two locations.

    Args:
        baseline_of: a bidirectional conduit's id: also the paths where both
            sides agree with each other but not with that conduit's baseline.
    """
    rows = await db.fetch_all(_DIFFERING_SQL, (source_id, target_id))
    paths = [bytes(row[0]) for row in rows]
    if baseline_of is not None:
        seen = set(paths)
        for row in await db.fetch_all(_BASELINE_SQL, (source_id, baseline_of)):
            path = bytes(row[0])
            if path not in seen:
                seen.add(path)
                paths.append(path)
    return paths
