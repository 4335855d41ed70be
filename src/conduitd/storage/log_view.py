"""`conduitd log`: the sync log as DESIGN.md's JSON documents, or as text lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from conduitd.storage.library import Library, open_library
from conduitd.storage.synclog import SyncLogDb


async def log_entries(
    library: Library, since: int = 0, limit: int | None = 100
) -> list[dict[str, object]]:
    """Entries after sequence `since`, oldest first, at most `limit` of them.

    Each is `{"sequence", "device_id", "timestamp", "model_type", "record_id",
    "change_type", "version", "data": {...}}`. Reads sync.db only: rows still
    waiting in this device's outbox are not in the log yet.
    """
    log = SyncLogDb(library.sync_db)
    return [entry.to_document() for entry in await log.fetch_since(since, limit)]


async def read_log(
    state_dir: Path, since: int = 0, limit: int | None = 100
) -> list[dict[str, object]]:
    """`log_entries` of the state dir's library (the CLI's path; the log is
    read through a WAL snapshot, so a running daemon is no obstacle)."""
    library = await open_library(state_dir)
    try:
        return await log_entries(library, since, limit)
    finally:
        await library.close()


def log_lines(entries: Sequence[Mapping[str, object]]) -> list[str]:
    """One line per entry: sequence, time, change, model, what, version."""
    return [
        f"{entry['sequence']:>8}  {entry['timestamp']}  {entry['change_type']:<11}"
        f"  {entry['model_type']:<10}  {_describe(entry)}  v{entry['version']}"
        for entry in entries
    ]


def _describe(entry: Mapping[str, object]) -> str:
    data = entry.get("data")
    data = data if isinstance(data, Mapping) else {}
    if entry.get("change_type") == "bulk_insert":
        return f"{entry['record_id']} ({data.get('count')} items)"
    if "name" in data:
        return f"{data['name']} ({entry['record_id']})"
    if "generation" in data:
        return f"{data.get('conduit_uuid')} #{data['generation']}"
    return str(entry["record_id"])
