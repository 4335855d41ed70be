"""The entry repository: bulk reads and writes of a location's index rows.

Every write is an upsert (`INSERT ... ON CONFLICT DO UPDATE`), never `INSERT OR
REPLACE`: a replace deletes the row first, and the conduits' `ON DELETE CASCADE`
hangs off root entries. The root entry (`relative_path = x''`) is never deleted.

Index values travel as plain tuples (`EntryValues`) rather than `EntryRow`
objects: a scan compares 100k of them, and a frozen dataclass costs a few
microseconds per instance. `load_entry_map` builds `EntryRow`s for the resolver.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeAlias

from conduitd.storage.database import (
    BUSY_TIMEOUT_MS,
    Reader,
    SqlParam,
    SqlParams,
    connection_tuning,
    fetch_in,
    in_lists,
    storage_errors,
)
from conduitd.storage.models import EntryKind, EntryRow

# (kind, size, mtime_ns, ctime_ns, inode, mode, content_id, symlink_target,
#  unreadable): the `entry` columns a scan compares, in this order.
EntryValues: TypeAlias = tuple[
    int, int, int, int, int, int, str | None, bytes | None, int
]

KIND: Final = 0
SIZE: Final = 1
MTIME_NS: Final = 2
CTIME_NS: Final = 3
INODE: Final = 4
MODE: Final = 5
CONTENT_ID: Final = 6
SYMLINK_TARGET: Final = 7
UNREADABLE: Final = 8

ROOT_PATH: Final = b""

_VALUE_COLUMNS: Final = (
    "kind, size, mtime_ns, ctime_ns, inode, mode, content_id, symlink_target,"
    " unreadable"
)

# An existing row keeps its parent_id and name: the name is the path's, and a
# directory's row only goes with its whole subtree, so its id cannot change
# under a child's row. Assigning them anyway made SQLite rewrite the
# idx_entry_parent entry of every updated row: a third more pages written by
# a 1 % change (issue 5 bench).
_UPSERT: Final = (
    "INSERT INTO entry (location_id, parent_id, name, relative_path, kind, size,"
    " mtime_ns, ctime_ns, inode, mode, content_id, symlink_target, unreadable)"
    " VALUES (?, (SELECT id FROM entry WHERE location_id = ? AND relative_path = ?),"
    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (location_id, relative_path) DO UPDATE SET kind = excluded.kind,"
    " size = excluded.size, mtime_ns = excluded.mtime_ns,"
    " ctime_ns = excluded.ctime_ns, inode = excluded.inode, mode = excluded.mode,"
    " content_id = excluded.content_id, symlink_target = excluded.symlink_target,"
    " unreadable = excluded.unreadable"
)


class Writer(Reader, Protocol):
    """A write transaction (`Transaction` or the TransactionManager's)."""

    async def execute(self, sql: str, params: SqlParams = ()) -> int: ...

    async def execute_many(self, sql: str, rows: Iterable[SqlParams]) -> None: ...


def parent_path(relative_path: bytes) -> bytes:
    """`b"a/b"` for `b"a/b/c"`, `b""` for a top-level name."""
    cut = relative_path.rfind(b"/")
    return b"" if cut < 0 else relative_path[:cut]


def is_within(relative_path: bytes, prefix: bytes) -> bool:
    """True when `relative_path` is `prefix` or lies under it."""
    if not prefix:
        return True
    return relative_path == prefix or relative_path.startswith(prefix + b"/")


def _subtree_bounds(prefix: bytes) -> tuple[bytes, bytes]:
    # Children of p sort in [p + b"/", p + b"0"): b"0" is the byte after b"/".
    return prefix + b"/", prefix + b"0"


def entry_row(relative_path: bytes, values: EntryValues) -> EntryRow:
    return EntryRow(
        relative_path=relative_path,
        kind=EntryKind(values[KIND]),
        size=values[SIZE],
        mtime_ns=values[MTIME_NS],
        mode=values[MODE],
        content_id=values[CONTENT_ID],
        symlink_target=values[SYMLINK_TARGET],
        unreadable=bool(values[UNREADABLE]),
        inode=values[INODE],
        ctime_ns=values[CTIME_NS],
    )


async def load_entry_map(db: Reader, location_id: int) -> dict[bytes, EntryRow]:
    """Every entry of a location, root included, keyed by relative path (one query)."""
    values = await load_entry_values(db, location_id)
    return {path: entry_row(path, v) for path, v in values.items()}


async def load_entry_subset(
    db: Reader, location_id: int, paths: Iterable[bytes]
) -> dict[bytes, EntryRow]:
    """The rows of `paths`, their subtrees and their ancestors (root included).

    What an incremental resolution of `paths` needs: it costs what changed,
    not what exists (one ranged query per path on the (location, path) index).
    """
    wanted = {p for p in paths if p}
    ancestors = {b""}
    for path in wanted:
        parent = parent_path(path)
        while parent and parent not in ancestors:
            ancestors.add(parent)
            parent = parent_path(parent)
    # Subtrees already loaded with an ancestor's are not asked for again.
    tops = [p for p in sorted(wanted) if not any(_parents_in(p, wanted))]
    # The rows themselves by IN lists (a few queries for thousands of paths);
    # then a ranged query only under those that are directories: nothing else
    # has a subtree in the index.
    exact = sorted(ancestors | set(tops))
    found = await fetch_entry_values(db, location_id, exact)
    for top in tops:
        values = found.get(top)
        if values is not None and values[KIND] == EntryKind.DIRECTORY:
            found.update(await load_entry_values(db, location_id, top))
    return {path: entry_row(path, v) for path, v in found.items()}


def _parents_in(path: bytes, candidates: set[bytes]) -> Iterable[bytes]:
    parent = parent_path(path)
    while parent:
        if parent in candidates:
            yield parent
        parent = parent_path(parent)


async def load_entry_values(
    db: Reader, location_id: int, prefix: bytes | None = None
) -> dict[bytes, EntryValues]:
    """A location's rows as `EntryValues` in one query.

    Args:
        prefix: only `prefix` and its subtree; None (or b"") for every row.
    """
    sql = f"SELECT relative_path, {_VALUE_COLUMNS} FROM entry WHERE location_id = ?"
    params: list[SqlParam] = [location_id]
    if prefix:
        low, high = _subtree_bounds(prefix)
        sql += " AND (relative_path = ? OR (relative_path >= ? AND relative_path < ?))"
        params += [prefix, low, high]
    rows = await db.fetch_all(sql, params)
    return {row[0]: row[1:] for row in rows}


def _subtree_clause(prefix: bytes | None) -> tuple[str, list[SqlParam]]:
    if not prefix:
        return "", []
    low, high = _subtree_bounds(prefix)
    clause = " AND (relative_path = ? OR (relative_path >= ? AND relative_path < ?))"
    return clause, [prefix, low, high]


class EntryReader:
    """Blocking reads of one location's rows on a read-only connection of its
    own, for worker threads (one thread at a time).

    The rows become Python objects off the event loop; WAL readers see the last
    committed state and never block the writer.
    """

    def __init__(self, db_path: Path, location_id: int) -> None:
        self._uri = f"{db_path.resolve().as_uri()}?mode=ro"
        self._location_id = location_id
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            with storage_errors(f"cannot open {self._uri}"):
                self._conn = sqlite3.connect(
                    self._uri,
                    uri=True,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    check_same_thread=False,
                )
                for pragma in connection_tuning().pragmas():
                    self._conn.execute(pragma)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def values(self, prefix: bytes | None = None) -> dict[bytes, EntryValues]:
        """Every row (of `prefix` and its subtree)."""
        clause, params = _subtree_clause(prefix)
        sql = f"SELECT relative_path, {_VALUE_COLUMNS} FROM entry WHERE location_id = ?"
        with storage_errors("read entries"):
            cursor = self._connection().execute(
                sql + clause, [self._location_id, *params]
            )
            return {row[0]: row[1:] for row in cursor}

    def row(self, path: bytes) -> EntryValues | None:
        with storage_errors("read entry"):
            found = (
                self._connection()
                .execute(
                    f"SELECT {_VALUE_COLUMNS} FROM entry"
                    " WHERE location_id = ? AND relative_path = ?",
                    (self._location_id, path),
                )
                .fetchone()
            )
        return None if found is None else found

    def directories(
        self, prefix: bytes | None = None
    ) -> dict[bytes, tuple[EntryValues, bytes | None]]:
        """Directory rows (of `prefix` and its subtree) with their listing digests."""
        clause, params = _subtree_clause(prefix)
        # `kind = 1` literally, so that idx_entry_directories (partial) serves it.
        sql = (
            f"SELECT relative_path, listing_digest, {_VALUE_COLUMNS} FROM entry"
            " WHERE location_id = ? AND kind = 1"
        )
        with storage_errors("read directories"):
            cursor = self._connection().execute(
                sql + clause, [self._location_id, *params]
            )
            return {row[0]: (row[2:], row[1]) for row in cursor}

    def named(self, paths: Sequence[bytes]) -> dict[bytes, EntryValues]:
        """The rows of `paths` that exist (by primary key, chunked)."""
        found: dict[bytes, EntryValues] = {}
        conn = self._connection()
        with storage_errors("read entries"):
            for statement, bound in in_lists(_NAMED, (self._location_id,), paths):
                for row in conn.execute(statement, bound):
                    found[row[0]] = row[1:]
        return found

    def children(self, directories: Iterable[bytes]) -> dict[bytes, EntryValues]:
        """The rows directly under each directory (one range query each).

        By path, not by `parent_id`: a row is found wherever it hangs.
        """
        found: dict[bytes, EntryValues] = {}
        conn = self._connection()
        with storage_errors("read children"):
            for directory in directories:
                if directory:
                    low, high = _subtree_bounds(directory)
                    cursor = conn.execute(
                        _CHILDREN, (self._location_id, low, high, len(low) + 1)
                    )
                else:
                    cursor = conn.execute(_TOP_LEVEL, (self._location_id,))
                for row in cursor:
                    found[row[0]] = row[1:]
        return found


_NAMED: Final = (
    f"SELECT relative_path, {_VALUE_COLUMNS} FROM entry WHERE location_id = ?"
    " AND relative_path IN"
)
_CHILDREN: Final = (
    f"SELECT relative_path, {_VALUE_COLUMNS} FROM entry WHERE location_id = ?"
    " AND relative_path >= ? AND relative_path < ?"
    " AND instr(substr(relative_path, ?), x'2f') = 0"
)
_TOP_LEVEL: Final = (
    f"SELECT relative_path, {_VALUE_COLUMNS} FROM entry WHERE location_id = ?"
    " AND relative_path != x'' AND instr(relative_path, x'2f') = 0"
)


def read_entry_values(
    db_path: Path, location_id: int, prefix: bytes | None = None
) -> dict[bytes, EntryValues]:
    """`load_entry_values` on a read-only connection of its own (blocking)."""
    with closing(EntryReader(db_path, location_id)) as reader:
        return reader.values(prefix)


async def set_listing_digests(
    tx: Writer, location_id: int, digests: Iterable[tuple[bytes, bytes | None]]
) -> None:
    """Record the listing digests a scan computed (None: unknown)."""
    params: list[SqlParams] = [(d, location_id, p) for p, d in digests]
    if params:
        await tx.execute_many(
            "UPDATE entry SET listing_digest = ?"
            " WHERE location_id = ? AND relative_path = ?",
            params,
        )


async def fetch_listing_digests(
    db: Reader, location_id: int, directories: Iterable[bytes]
) -> dict[bytes, bytes]:
    """The listing digests those directories have."""
    rows = await fetch_in(
        db,
        "SELECT relative_path, listing_digest FROM entry WHERE location_id = ?"
        " AND listing_digest IS NOT NULL AND relative_path IN",
        (location_id,),
        list(set(directories)),
    )
    return {row[0]: row[1] for row in rows}


async def clear_listing_digests(
    tx: Writer, location_id: int, directories: Iterable[bytes]
) -> None:
    """Forget the listing digests of directories (their children changed)."""
    params: list[SqlParams] = [(location_id, d) for d in set(directories)]
    if params:
        await tx.execute_many(
            "UPDATE entry SET listing_digest = NULL WHERE location_id = ?"
            " AND relative_path = ? AND listing_digest IS NOT NULL",
            params,
        )


async def fetch_entry_values(
    db: Reader, location_id: int, paths: Iterable[bytes]
) -> dict[bytes, EntryValues]:
    """The rows of the given paths that exist."""
    rows = await fetch_in(db, _NAMED, (location_id,), list(dict.fromkeys(paths)))
    return {row[0]: row[1:] for row in rows}


async def upsert_entries(
    tx: Writer, location_id: int, rows: Iterable[tuple[bytes, EntryValues]]
) -> int:
    """Insert or update rows in place; return how many were written.

    Rows are written in path order so that every parent precedes its children
    (its id is looked up by the upsert itself). The root row is only updated.
    """
    ordered = sorted(rows, key=_path_key)
    params: list[SqlParams] = []
    for path, v in ordered:
        if path == ROOT_PATH:
            await update_root_entry(tx, location_id, v)
            continue
        cut = path.rfind(b"/")
        parent, name = (b"", path) if cut < 0 else (path[:cut], path[cut + 1 :])
        params.append((location_id, location_id, parent, name, path, *v))
    if params:
        await tx.execute_many(_UPSERT, params)
    return len(ordered)


def _path_key(row: tuple[bytes, EntryValues]) -> bytes:
    return row[0]


async def update_root_entry(tx: Writer, location_id: int, values: EntryValues) -> None:
    """Update the root row's metadata in place (it is never replaced)."""
    await tx.execute(
        "UPDATE entry SET kind = ?, size = ?, mtime_ns = ?, ctime_ns = ?, inode = ?,"
        " mode = ?, content_id = ?, symlink_target = ?, unreadable = ?"
        " WHERE location_id = ? AND relative_path = x''",
        (*values, location_id),
    )


async def delete_entries(tx: Writer, location_id: int, paths: Iterable[bytes]) -> None:
    """Delete single rows by path; the root row is never deleted."""
    params: list[SqlParams] = [(location_id, p) for p in paths if p != ROOT_PATH]
    if params:
        await tx.execute_many(
            "DELETE FROM entry WHERE location_id = ? AND relative_path = ?", params
        )


async def delete_subtree(
    tx: Writer, location_id: int, prefix: bytes
) -> tuple[list[bytes], Totals]:
    """Delete `prefix` and everything under it; return the deleted paths and
    what they counted in the location's totals.

    `prefix = b""` deletes every row but the root.
    """
    if prefix:
        low, high = _subtree_bounds(prefix)
        rows = await tx.fetch_all(
            "DELETE FROM entry WHERE location_id = ? AND (relative_path = ?"
            " OR (relative_path >= ? AND relative_path < ?))"
            " RETURNING relative_path, kind, size",
            (location_id, prefix, low, high),
        )
    else:
        rows = await tx.fetch_all(
            "DELETE FROM entry WHERE location_id = ? AND relative_path != x''"
            " RETURNING relative_path, kind, size",
            (location_id,),
        )
    return [row[0] for row in rows], Totals.over((kind, size) for _, kind, size in rows)


async def entry_kinds_after(
    db: Reader, location_id: int, after: bytes, limit: int
) -> list[tuple[bytes, EntryKind]]:
    """Up to `limit` (path, kind) of a location's entries past `after`, in
    path order; `after=b""` starts after the root."""
    rows = await db.fetch_all(
        "SELECT relative_path, kind FROM entry"
        " WHERE location_id = ? AND relative_path > ?"
        " ORDER BY relative_path LIMIT ?",
        (location_id, after, limit),
    )
    return [(row[0], EntryKind(row[1])) for row in rows]


@dataclass(frozen=True, slots=True)
class Totals:
    """What rows count in a location's totals: non-directory entries, and
    the bytes of regular files."""

    files: int = 0
    size: int = 0

    @classmethod
    def over(cls, rows: Iterable[tuple[int, int]]) -> Totals:
        """What rows of these (kind, size) count."""
        files = size = 0
        for kind, row_size in rows:
            if kind != EntryKind.DIRECTORY:
                files += 1
                if kind == EntryKind.FILE:
                    size += row_size
        return cls(files, size)

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.files + other.files, self.size + other.size)

    def __sub__(self, other: Totals) -> Totals:
        return Totals(self.files - other.files, self.size - other.size)


async def add_to_totals(tx: Writer, location_id: int, delta: Totals) -> None:
    """Move the location's totals by what a write added and removed."""
    if delta != Totals():
        await tx.execute(
            "UPDATE location SET total_file_count = total_file_count + ?,"
            " total_byte_size = total_byte_size + ? WHERE id = ?",
            (delta.files, delta.size, location_id),
        )
