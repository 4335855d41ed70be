"""Open a state dir's library: both databases, migrated, and who we are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from conduitd.storage.database import Database
from conduitd.storage.migrations import migrate_up
from conduitd.storage.schema_library import LIBRARY_MIGRATIONS
from conduitd.storage.schema_synclog import SYNCLOG_MIGRATIONS
from conduitd.storage.state_dir import device_id, ensure_state_dir, library_directory
from conduitd.timeutil import utc_now_text

LIBRARY_DB = "library.db"
SYNC_DB = "sync.db"


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


async def open_library(state_dir: Path, *, migrate: bool = True) -> Library:
    """Open (creating on first use) the state dir's library and migrate it."""
    ensure_state_dir(state_dir)
    device = device_id(state_dir)
    library_id, directory, created = library_directory(state_dir)
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
