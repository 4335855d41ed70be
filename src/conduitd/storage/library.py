"""Open a state dir's library: both databases, migrated, and who we are."""

from __future__ import annotations

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

    async def close(self) -> None:
        await self.sync_db.close()
        await self.db.close()


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
