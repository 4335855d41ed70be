"""One aiosqlite connection per database file, with a serialising transaction()."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeAlias

import aiosqlite
import anyio

from conduitd.errors import StorageError

SqlParam: TypeAlias = int | float | str | bytes | None
SqlParams: TypeAlias = Sequence[SqlParam]
Row: TypeAlias = sqlite3.Row

BUSY_TIMEOUT_MS = 10_000
# Values per IN (...) list: SQLite allows 999 bound parameters in older
# builds; stay well under.
IN_LIST_MAX = 500


@dataclass(frozen=True, slots=True)
class ConnectionTuning:
    """Memory a process's SQLite connections may use for speed."""

    # Page cache per connection, KiB (SQLite's default: 2000).
    cache_kib: int
    # Bytes of the file read through a memory map instead of read(2) (0: none).
    mmap_bytes: int

    def pragmas(self) -> list[str]:
        return [
            f"PRAGMA cache_size=-{self.cache_kib}",
            f"PRAGMA mmap_size={self.mmap_bytes}",
        ]


# SQLite's defaults: the daemon lives for months and its RSS has a budget.
LONG_LIVED: Final = ConnectionTuning(cache_kib=2000, mmap_bytes=0)
# A one-shot run lives for a second and reads its whole library: with the
# defaults, a 1 % run of a 100k-file pair made 41k read(2) calls of 4 KiB
# pages (the 2 MiB cache held a fraction of what a run reads twice) and
# spilled dirty pages mid-transaction, writing a 1000-row update to the WAL
# twice over (issue 5 bench). Mapped pages are the kernel's page cache, shared
# with the workers; a disk error on the library then kills the process
# (SIGBUS) instead of failing the run, which crash recovery handles like any
# interrupted run.
SHORT_LIVED: Final = ConnectionTuning(cache_kib=64 << 10, mmap_bytes=1 << 30)

_tuning = LONG_LIVED


@contextmanager
def tuned_connections(tuning: ConnectionTuning) -> Iterator[None]:
    """`tuning` for the connections this process, and the workers it forks,
    open inside (then back as it was)."""
    global _tuning  # a property of the process, like its logging
    before, _tuning = _tuning, tuning
    try:
        yield
    finally:
        _tuning = before


def connection_tuning() -> ConnectionTuning:
    return _tuning


class Reader(Protocol):
    """`Database` or a transaction: anything that runs a query."""

    async def fetch_all(self, sql: str, params: SqlParams = ()) -> list[Row]: ...


def in_lists(
    sql: str, params: SqlParams, keys: Sequence[SqlParam]
) -> Iterator[tuple[str, list[SqlParam]]]:
    """`sql`, which ends in `IN`, with its parameters for all `keys` (bound
    after `params`): one statement per IN_LIST_MAX keys."""
    for start in range(0, len(keys), IN_LIST_MAX):
        chunk = keys[start : start + IN_LIST_MAX]
        yield f"{sql} ({', '.join('?' * len(chunk))})", [*params, *chunk]


async def fetch_in(
    db: Reader, sql: str, params: SqlParams, keys: Sequence[SqlParam]
) -> list[Row]:
    """The rows of `sql`, which ends in `IN`, for all `keys` (`in_lists`)."""
    rows: list[Row] = []
    for statement, bound in in_lists(sql, params, keys):
        rows += await db.fetch_all(statement, bound)
    return rows


@contextmanager
def storage_errors(what: str) -> Any:
    """Translate sqlite3 errors into StorageError once, at the boundary."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"{what}: {exc}") from exc


class Database:
    """A single connection to one SQLite file (WAL, foreign keys on).

    All writes go through `transaction()`, which holds a lock so that tasks
    sharing the connection never interleave statements of two transactions, and
    which commits or rolls back under a shielded scope (a cancelled await does
    not stop aiosqlite's thread).
    """

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Database:
        with storage_errors(f"cannot open {path}"):
            conn = await aiosqlite.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            for pragma in _tuning.pragmas():
                await conn.execute(pragma)
        return cls(path, conn)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True), storage_errors("close"):
            await self._conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Run statements in one `BEGIN IMMEDIATE` transaction."""
        async with self._lock:
            with storage_errors("begin"):
                await self._conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._conn)
            try:
                yield tx
            except BaseException:
                with anyio.CancelScope(shield=True), storage_errors("rollback"):
                    await self._conn.execute("ROLLBACK")
                raise
            with anyio.CancelScope(shield=True), storage_errors("commit"):
                await self._conn.execute("COMMIT")

    async def fetch_all(self, sql: str, params: SqlParams = ()) -> list[Row]:
        async with self._lock:
            with storage_errors("query"):
                cursor = await self._conn.execute(sql, params)
                rows = await cursor.fetchall()
                await cursor.close()
        return list(rows)

    async def fetch_one(self, sql: str, params: SqlParams = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute_script(self, sql: str) -> None:
        async with self._lock:
            with storage_errors("script"):
                await self._conn.executescript(sql)


class Transaction:
    """Statements issued inside `Database.transaction()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: SqlParams = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        with storage_errors("execute"):
            cursor = await self._conn.execute(sql, params)
            count = cursor.rowcount
            await cursor.close()
        return count

    async def insert(self, sql: str, params: SqlParams = ()) -> int:
        """Run one INSERT; return the new row's id."""
        with storage_errors("insert"):
            cursor = await self._conn.execute(sql, params)
            row_id = cursor.lastrowid
            await cursor.close()
        if row_id is None:
            raise StorageError(f"insert returned no row id: {sql.split()[:4]}")
        return row_id

    async def execute_many(self, sql: str, rows: Iterable[SqlParams]) -> None:
        with storage_errors("execute_many"):
            await self._conn.executemany(sql, rows)

    async def fetch_all(self, sql: str, params: SqlParams = ()) -> list[Row]:
        with storage_errors("query"):
            cursor = await self._conn.execute(sql, params)
            rows = await cursor.fetchall()
            await cursor.close()
        return list(rows)

    async def fetch_one(self, sql: str, params: SqlParams = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None
