"""Index versions and conduit agreements (migration 204).

A location's `index_version` moves with every transaction that writes its
entry rows. When verification finds both sides of a conduit agreeing, the
versions it read *before* loading what it compared are recorded as the
conduit's agreement; a write after that read moves a version past the record.
So a later one-shot run whose scans leave both versions where the agreement
has them knows, without comparing 2 x 100k rows, that nothing differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from conduitd.storage.database import Reader
from conduitd.storage.entries import Writer


@dataclass(frozen=True, slots=True)
class Agreement:
    """Both sides' index versions at which a conduit's sides agreed."""

    source_location_id: int
    source_version: int
    target_location_id: int
    target_version: int


async def bump_index_version(tx: Writer, location_id: int) -> None:
    """Called in every transaction that changes a location's entry rows."""
    await tx.execute(
        "INSERT INTO index_version (location_id, version) VALUES (?, 1)"
        " ON CONFLICT (location_id) DO UPDATE SET version = version + 1",
        (location_id,),
    )


async def current_agreement(db: Reader, source_id: int, target_id: int) -> Agreement:
    """The two locations' index versions as they stand now."""
    rows = await db.fetch_all(
        "SELECT location_id, version FROM index_version WHERE location_id IN (?, ?)",
        (source_id, target_id),
    )
    versions = {int(r["location_id"]): int(r["version"]) for r in rows}
    return Agreement(
        source_id, versions.get(source_id, 0), target_id, versions.get(target_id, 0)
    )


async def record_agreement(
    tx: Writer,
    conduit_id: int,
    agreement: Agreement,
    *,
    fingerprint: str,
    generation: int,
) -> None:
    await tx.execute(
        "INSERT INTO conduit_agreement (conduit_id, source_location_id,"
        " source_version, target_location_id, target_version, fingerprint,"
        " generation) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (conduit_id) DO UPDATE SET"
        " source_location_id = excluded.source_location_id,"
        " source_version = excluded.source_version,"
        " target_location_id = excluded.target_location_id,"
        " target_version = excluded.target_version,"
        " fingerprint = excluded.fingerprint, generation = excluded.generation",
        (
            conduit_id,
            agreement.source_location_id,
            agreement.source_version,
            agreement.target_location_id,
            agreement.target_version,
            fingerprint,
            generation,
        ),
    )


async def forget_agreement(tx: Writer, conduit_id: int) -> None:
    await tx.execute(
        "DELETE FROM conduit_agreement WHERE conduit_id = ?", (conduit_id,)
    )


async def recorded_agreement(
    db: Reader, conduit_id: int, fingerprint: str
) -> Agreement | None:
    """The conduit's recorded agreement, if it was reached under the same
    rules (`fingerprint`)."""
    rows = await db.fetch_all(
        "SELECT source_location_id, source_version, target_location_id,"
        " target_version, fingerprint FROM conduit_agreement WHERE conduit_id = ?",
        (conduit_id,),
    )
    if not rows or rows[0]["fingerprint"] != fingerprint:
        return None
    row = rows[0]
    return Agreement(
        int(row["source_location_id"]),
        int(row["source_version"]),
        int(row["target_location_id"]),
        int(row["target_version"]),
    )
