"""Documents for `status` and `history`, shared by the CLI and the daemon."""

from __future__ import annotations

from typing import Any

from conduitd.config import Config
from conduitd.storage.conduits import ConduitManager, GenerationRecord
from conduitd.storage.library import Library, open_library
from conduitd.storage.locations import list_locations

JsonObject = dict[str, Any]


def generation_document(conduit: str, generation: GenerationRecord) -> JsonObject:
    """The generation object of DESIGN.md Interfaces (`sync --json`, history)."""
    counts = generation.counts
    return {
        "conduit": conduit,
        "generation": generation.generation,
        "files_copied": counts.files_copied,
        "metadata_updated": counts.metadata_updated,
        "files_deleted": counts.files_deleted,
        "conflicts_resolved": counts.conflicts_resolved,
        "conflicts_pending": counts.conflicts_pending,
        "files_skipped": counts.files_skipped,
        "bytes_transferred": counts.bytes_transferred,
        "errors_encountered": counts.errors_encountered,
        "verification_status": generation.verification_status,
        "started_at": generation.started_at,
        "completed_at": generation.completed_at,
    }


async def conduit_documents(library: Library, config: Config) -> list[JsonObject]:
    """One status object per configured conduit, from the library."""
    manager = ConduitManager(library.db)
    records = {c.name: c for c in await manager.list_all()}
    states = {
        str(loc.path): loc.state.value for loc in await list_locations(library.db)
    }
    documents = []
    for conduit in config.conduits:
        record = records.get(conduit.name)
        last = await manager.last_generation(record.id) if record else None
        documents.append(
            {
                "name": conduit.name,
                "mode": conduit.mode.value,
                "schedule": conduit.schedule.text,
                "enabled": conduit.enabled,
                "paused": bool(record and record.paused),
                "next_run": None,
                "last_checked_at": record.last_checked_at if record else None,
                "endpoints": {
                    side: {"path": str(path), "state": states.get(str(path), "unknown")}
                    for side, path in (
                        ("source", conduit.source),
                        ("target", conduit.target),
                    )
                },
                "active": None,
                "last_generation": generation_document(conduit.name, last)
                if last
                else None,
                "last_error": record.last_sync_error if record else None,
            }
        )
    return documents


async def status_document(config: Config) -> JsonObject:
    """`status --json` without a daemon: what the library knows."""
    library = await open_library(config.daemon.state_dir)
    try:
        return {"daemon": None, "conduits": await conduit_documents(library, config)}
    finally:
        await library.close()


async def history_document(config: Config, name: str, limit: int) -> list[JsonObject]:
    from conduitd.errors import UsageError

    library = await open_library(config.daemon.state_dir)
    try:
        manager = ConduitManager(library.db)
        record = await manager.get_by_name(name)
        if record is None:
            raise UsageError(f"no conduit named {name!r} has run here")
        generations = await manager.generations(record.id, limit)
        return [generation_document(name, g) for g in generations]
    finally:
        await library.close()


def resolve_document(
    conduit: str, conflict_id: int, keep: str, resolved: bool, run: GenerationRecord
) -> JsonObject:
    """What `resolve` answers (CLI and daemon): the conflict, and its generation."""
    return {
        "conflict": conflict_id,
        "keep": keep,
        "resolved": resolved,
        "generation": generation_document(conduit, run),
    }
