"""Open a state dir's library: both databases, migrated, and who we are."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import anyio
import structlog

from conduitd.storage.database import Database
from conduitd.storage.migrations import migrate_up
from conduitd.storage.schema_library import LIBRARY_MIGRATIONS
from conduitd.storage.schema_synclog import SYNCLOG_MIGRATIONS
from conduitd.storage.state_dir import device_id, ensure_state_dir, library_directory
from conduitd.timeutil import utc_now_text

LIBRARY_DB = "library.db"
SYNC_DB = "sync.db"
SQLITE_SIDECARS = ("-wal", "-shm")
# What library.db looked like when a writer closed it cleanly (JSON).
CLEAN_CLOSE = "library.db.clean"

logger = structlog.get_logger()


@dataclass(slots=True)
class Library:
    """An open library: `db` is library.db, `sync_db` the sync log's sync.db."""

    uuid: UUID
    device_id: UUID
    directory: Path
    db: Database
    sync_db: Database
    created: bool

    async def close(self, *, clean: bool = False) -> None:
        """Close both databases.

        Args:
            clean: the writer holding the state dir's lock finished without an
                error: remember library.db as it is now, so that the next
                writer may skip `PRAGMA quick_check` if it finds it unchanged.
        """
        await self.sync_db.close()
        await self.db.close()
        if clean:
            await anyio.to_thread.run_sync(record_clean_close, self.directory)


async def open_library(
    state_dir: Path, *, migrate: bool = True, repair: bool = False
) -> Library:
    """Open (creating on first use) the state dir's library and migrate it.

    Args:
        repair: the caller holds the state dir's lock: a library.db failing
            `PRAGMA quick_check` is moved aside and rebuilt empty (DESIGN.md
            Safety; the roots' markers then name unknown locations, so the
            next run of every conduit is a union).
    """
    ensure_state_dir(state_dir)
    device = device_id(state_dir)
    library_id, directory, created = library_directory(state_dir)
    if repair:
        moved = await anyio.to_thread.run_sync(quarantine_if_corrupt, directory)
        if moved is not None:
            logger.warning("library_corrupt_moved_aside", moved_to=str(moved))
    db = await Database.open(directory / LIBRARY_DB)
    sync_db = await Database.open(directory / SYNC_DB)
    library = Library(library_id, device, directory, db, sync_db, created)
    if migrate:
        try:
            await migrate_library(library)
        except BaseException:
            # Open connections keep aiosqlite's threads alive: the process
            # would hang at exit after printing the error.
            await library.close()
            raise
    return library


def quarantine_if_corrupt(directory: Path) -> Path | None:
    """Move a library.db failing `PRAGMA quick_check` (and its -wal, -shm) aside.

    Returns where it went (`library.db.corrupt-<UTC timestamp>`), or None
    when the database is absent or sound. Blocking: run in a worker thread.
    """
    path = directory / LIBRARY_DB
    if not path.exists():
        return None
    if closed_cleanly(directory):
        return None
    problem = _quick_check(path)
    if problem is None:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = directory / f"{LIBRARY_DB}.corrupt-{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = directory / f"{LIBRARY_DB}.corrupt-{stamp}-{n}"
    for suffix in ("", *SQLITE_SIDECARS):
        source = directory / f"{LIBRARY_DB}{suffix}"
        if source.exists():
            os.replace(source, aside.with_name(aside.name + suffix))
    logger.warning("library_quick_check_failed", path=str(path), problem=problem)
    return aside


def _identity(directory: Path) -> dict[str, int] | None:
    """library.db's size, mtime and inode; None while a -wal file exists (a
    writer did not close it, or one has it open)."""
    if (directory / f"{LIBRARY_DB}-wal").exists():
        return None
    try:
        st = os.stat(directory / LIBRARY_DB)
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def record_clean_close(directory: Path) -> None:
    """Write CLEAN_CLOSE for the library.db just closed (blocking)."""
    identity = _identity(directory)
    if identity is None:
        return
    temp = directory / f"{CLEAN_CLOSE}.tmp"
    temp.write_text(json.dumps(identity))
    os.replace(temp, directory / CLEAN_CLOSE)


def closed_cleanly(directory: Path) -> bool:
    """True when library.db is exactly as a writer left it on a clean close.

    The record is consumed: a writer that crashes from here on leaves none,
    so the next one checks. `PRAGMA quick_check` reads every page (half a
    second for an index of 100k files per side, issue 5 bench): it runs
    after a crash, an error, or any change made while no writer held the
    library — corruption met later by a query fails that run, which leaves
    no record either.
    """
    record = directory / CLEAN_CLOSE
    try:
        text = record.read_text()
    except FileNotFoundError:
        return False
    record.unlink()
    try:
        recorded = json.loads(text)
    except ValueError:
        return False
    return bool(recorded == _identity(directory))


def _quick_check(path: Path) -> str | None:
    try:
        conn = sqlite3.connect(path, timeout=10)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    verdict = "; ".join(str(row[0]) for row in rows)
    return None if verdict == "ok" else verdict


async def migrate_library(library: Library) -> None:
    await migrate_up(library.db, LIBRARY_MIGRATIONS)
    await migrate_up(library.sync_db, SYNCLOG_MIGRATIONS)
    async with library.db.transaction() as tx:
        for key, value in (
            ("library_uuid", str(library.uuid)),
            ("created_by_device", str(library.device_id)),
            ("created_at", utc_now_text()),
        ):
            await tx.execute(
                "INSERT INTO library_info (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
