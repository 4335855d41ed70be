"""What a rescan trusts: each stored listing digest is the sum of the terms of
its directory's current child rows, every one of them clean."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from conduitd.index.walk import child_term, digest_with
from conduitd.storage.entries import parent_path

ENTRY_ROWS = (
    "SELECT location_id, relative_path, kind, size, mtime_ns, ctime_ns, inode,"
    " mode, content_id, symlink_target, unreadable, listing_digest FROM entry"
)


def untrue_digests(rows: Iterable[Sequence[Any]]) -> list[tuple[int, bytes]]:
    """(location, directory) of every stored digest that is not that sum;
    `rows` as `ENTRY_ROWS` selects them."""
    values: dict[tuple[int, bytes], tuple[Any, ...]] = {}
    digests: dict[tuple[int, bytes], bytes] = {}
    children: dict[tuple[int, bytes], list[bytes]] = {}
    for row in rows:
        location, path = row[0], bytes(row[1])
        values[location, path] = tuple(row[2:11])
        if row[11] is not None:
            digests[location, path] = bytes(row[11])
        if path:
            children.setdefault((location, parent_path(path)), []).append(path)
    untrue = []
    for (location, directory), digest in digests.items():
        terms = [
            child_term(child, values[location, child])
            for child in children.get((location, directory), [])
        ]
        if None in terms or digest != digest_with(
            b"", [], [t for t in terms if t is not None]
        ):
            untrue.append((location, directory))
    return untrue
