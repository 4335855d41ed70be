"""One SQL test for "these two rows hold different states", shared by every
query that compares index or baseline rows in bulk.

It is the resolver's `same_state` at a granularity of 1 ns, negated, for two
rows of the same kind: files compare content, size, permission bits and
mtime; symlinks their target and mtime; directories their permission bits.
Kind itself (and `unreadable`) is each query's own business.
"""

from __future__ import annotations

from conduitd.storage.models import EntryKind

_FILE = int(EntryKind.FILE)
_DIRECTORY = int(EntryKind.DIRECTORY)
_SYMLINK = int(EntryKind.SYMLINK)


def differs_within_kind(a: str, b: str) -> str:
    """SQL, true when rows `a` and `b` (table aliases of `entry` or
    `sync_baseline`), of `a`'s kind, differ in what the resolver compares."""
    return (
        f"(({a}.kind != {_DIRECTORY} AND {a}.mtime_ns != {b}.mtime_ns)"
        f" OR ({a}.kind != {_SYMLINK} AND ({a}.mode & 4095) != ({b}.mode & 4095))"
        f" OR ({a}.kind = {_FILE} AND ({a}.size != {b}.size"
        f" OR {a}.content_id IS NOT {b}.content_id))"
        f" OR ({a}.kind = {_SYMLINK} AND {a}.symlink_target IS NOT {b}.symlink_target))"
    )
