"""A numbered, forward-only migration runner that records what it applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conduitd.errors import StorageError
from conduitd.storage.database import Database
from conduitd.timeutil import utc_now_text

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step; `sql` may hold several statements."""

    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class MigrationState:
    """A known migration and when it was applied (None: pending)."""

    version: int
    name: str
    applied_at: str | None


async def migration_status(
    db: Database, migrations: Sequence[Migration]
) -> list[MigrationState]:
    await db.execute_script(_LEDGER)
    rows = await db.fetch_all("SELECT version, applied_at FROM schema_migrations")
    applied = {int(r["version"]): str(r["applied_at"]) for r in rows}
    unknown = sorted(set(applied) - {m.version for m in migrations})
    if unknown:
        raise StorageError(
            f"{db.path} was migrated by a newer conduitd (versions {unknown}); "
            "upgrade conduitd"
        )
    return [
        MigrationState(m.version, m.name, applied.get(m.version)) for m in migrations
    ]


async def migrate_up(db: Database, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply every pending migration in order; return the ones applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise StorageError("migrations must have strictly increasing versions")
    states = await migration_status(db, migrations)
    pending = [
        m for m, s in zip(migrations, states, strict=True) if s.applied_at is None
    ]
    for migration in pending:
        async with db.transaction() as tx:
            for statement in _split_statements(migration.sql):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (?, ?, ?)",
                (migration.version, migration.name, utc_now_text()),
            )
    return pending


def _split_statements(sql: str) -> list[str]:
    # Migrations hold plain DDL without triggers, so ';' ends a statement.
    return [s.strip() for s in sql.split(";") if s.strip()]
