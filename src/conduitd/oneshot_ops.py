"""Issue 9's commands when no daemon runs: trash, restore, pause and resume.

Writers (`restore`, `trash purge`, `pause`, `resume`) run in a one-shot
writer session: they hold `conduitd.lock` like the daemon, so they never
race a daemon or another writer (another holder: exit 3 "busy"). `trash
list` only reads, like `status`.

Why pause/resume take the lock rather than writing the flag straight into
library.db: the flag is a syncable record change (the conduit's `version`
goes up and an outbox row is written in the same transaction), and a daemon
that started in between would keep running a conduit it had loaded as
unpaused. Under the lock no daemon can be running, and the next daemon
start reads the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conduitd.config import Config
from conduitd.oneshot import writer_session
from conduitd.storage.conduits import ConduitManager
from conduitd.storage.library import open_library
from conduitd.sync.restore import restore_version, trash_list_document
from conduitd.sync.trash_retention import prune_conduit_trash


async def trash_list_once(
    config: Config, name: str, path: bytes | None
) -> list[dict[str, Any]]:
    """`trash list` without a daemon: read the library."""
    config.conduit(name)
    library = await open_library(config.daemon.state_dir)
    try:
        return await trash_list_document(library, config, name, path)
    finally:
        await library.close()


async def restore_once(
    config: Config,
    name: str,
    path: bytes,
    *,
    generation: int | None,
    dest: Path | None,
) -> dict[str, Any]:
    """`restore` without a daemon, under the state dir's lock."""
    config.conduit(name)
    async with writer_session(config) as session:
        return await restore_version(
            session.library,
            session.tm,
            config,
            name,
            path,
            generation=generation,
            dest=dest,
        )


async def purge_once(
    config: Config, name: str, older_than_s: float | None
) -> dict[str, object]:
    """`trash purge` without a daemon, under the state dir's lock."""
    conduit = config.conduit(name)
    async with writer_session(config) as session:
        summary = await prune_conduit_trash(
            session.library, session.tm, conduit, older_than_s=older_than_s
        )
        return summary.document()


async def set_paused_once(
    config: Config, names: list[str], paused: bool
) -> dict[str, list[str]]:
    """`pause`/`resume` without a daemon: persist the flag under the lock.

    Resuming starts no run here (nothing runs without a daemon); the next
    `sync`, or the daemon's start-up catch-up, takes what changed.
    """
    for name in names:
        config.conduit(name)
    async with writer_session(config) as session:
        manager = ConduitManager(session.library.db)
        for name in names:
            record = await manager.get_by_name(name)
            if record is not None and record.paused != paused:
                async with session.tm.transaction() as tx:
                    await manager.set_paused(tx, record.id, paused)
    return {"paused" if paused else "resumed": names}
