"""`conflicts` and `resolve` when no daemon runs (issue 6).

`conflicts` only reads the library, like `status`. `resolve` writes: it runs
in a one-shot writer session under `conduitd.lock`, like `sync` (another
holder: exit 3 "busy").
"""

from __future__ import annotations

from typing import Any

from conduitd.config import Config
from conduitd.oneshot import writer_session
from conduitd.reports import resolve_document
from conduitd.storage.conflicts import Resolution
from conduitd.storage.library import open_library
from conduitd.sync.resolve_conflict import list_conflicts, resolve_conflict


async def conflicts_once(config: Config, name: str | None) -> list[dict[str, Any]]:
    """`conduitd conflicts [NAME]` without a daemon."""
    if name is not None:
        config.conduit(name)
    library = await open_library(config.daemon.state_dir)
    try:
        return await list_conflicts(library.db, name)
    finally:
        await library.close()


async def resolve_once(
    config: Config, conflict_id: int, keep: Resolution
) -> dict[str, Any]:
    """`conduitd resolve ID --keep ...` without a daemon, under the lock."""
    async with writer_session(config) as session:
        done = await resolve_conflict(session.service(), conflict_id, keep)
        return resolve_document(
            done.conduit, conflict_id, keep.value, done.resolved, done.generation
        )
