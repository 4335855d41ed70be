"""`conduitd migrate up|status`: the library's schema, both databases."""

from __future__ import annotations

from pathlib import Path

from conduitd.storage.library import open_library
from conduitd.storage.migrations import Migration, migrate_up, migration_status
from conduitd.storage.schema_library import LIBRARY_MIGRATIONS
from conduitd.storage.schema_synclog import SYNCLOG_MIGRATIONS


def _databases() -> tuple[tuple[str, tuple[Migration, ...]], ...]:
    return (("library.db", LIBRARY_MIGRATIONS), ("sync.db", SYNCLOG_MIGRATIONS))


async def migrate_up_report(state_dir: Path) -> list[str]:
    library = await open_library(state_dir, migrate=False)
    try:
        lines: list[str] = []
        for (name, migrations), db in zip(
            _databases(), (library.db, library.sync_db), strict=True
        ):
            applied = await migrate_up(db, migrations)
            lines.extend(f"{name}: applied {m.version:04d} {m.name}" for m in applied)
            if not applied:
                lines.append(f"{name}: up to date")
        return lines
    finally:
        await library.close()


async def migrate_status_report(state_dir: Path) -> list[str]:
    library = await open_library(state_dir, migrate=False)
    try:
        lines: list[str] = []
        for (name, migrations), db in zip(
            _databases(), (library.db, library.sync_db), strict=True
        ):
            for state in await migration_status(db, migrations):
                when = state.applied_at or "pending"
                lines.append(f"{name}  {state.version:04d}  {when:<28}  {state.name}")
        return lines
    finally:
        await library.close()
