"""Commands that run in the CLI's own process when no daemon is running.

They take `conduitd.lock` like the daemon does, so two writers never share a
state dir: another holder makes them exit 3 "busy".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from conduitd.config import Config
from conduitd.errors import Busy
from conduitd.forked_workers import ForkedWorkers
from conduitd.hooks import with_error_hook
from conduitd.index.indexer import Indexer
from conduitd.jobs.commit import Durability
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.runner import TransferRunner
from conduitd.reports import generation_document
from conduitd.storage.conduits import ConduitManager, GenerationRecord
from conduitd.storage.library import Library, open_library
from conduitd.storage.lockfile import LockHeld, StateLock
from conduitd.storage.reconcile import reconcile_conduits
from conduitd.storage.transactions import TransactionManager, open_transaction_manager
from conduitd.sync.preview import preview
from conduitd.sync.service import FileSyncService, ReportProgress
from conduitd.sync.trash_retention import prune_all


@dataclass(slots=True)
class Session:
    """A one-shot writer's open library, log and index."""

    config: Config
    library: Library
    tm: TransactionManager
    indexer: Indexer
    workers: ForkedWorkers | None = None

    def service(self, report_progress: ReportProgress | None = None) -> FileSyncService:
        return FileSyncService(
            self.library,
            self.tm,
            self.indexer,
            self.config,
            one_shot=True,
            runner=TransferRunner(durability=Durability.SYNCFS, workers=self.workers),
            report_progress=report_progress,
        )


@asynccontextmanager
async def writer_session(
    config: Config, workers: ForkedWorkers | None = None
) -> AsyncIterator[Session]:
    """Lock the state dir, open and reconcile the library, recover from a crash.

    Args:
        workers: forked processes that whole-tree scans and copies may run
            in (see `conduitd.forked_workers`).
    """
    lock = StateLock(config.daemon.state_dir)
    config.daemon.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        lock.acquire()
    except LockHeld as held:
        holder = f"pid {held.pid}" if held.pid else "another process"
        raise Busy(f"busy: {holder} holds {held.path}") from None
    try:
        library = await open_library(config.daemon.state_dir, repair=True)
        clean = False
        try:
            tm = await open_transaction_manager(library)
            await reconcile_conduits(library, config, tm=tm)
            await recover_after_crash(library, tm, config)
            indexer = Indexer.for_library(library, tm=tm, workers=workers)
            yield Session(config, library, tm, indexer, workers)
            await tm.flushed()
            clean = True
        finally:
            await library.close(clean=clean)
    finally:
        lock.release()


async def recover_after_crash(
    library: Library, tm: TransactionManager, config: Config
) -> None:
    """Unfinished generations become failed:interrupted; temp areas are emptied."""
    async with tm.transaction() as tx:
        await ConduitManager(library.db).interrupt_unfinished(tx)
    for conduit in config.conduits:
        for root in (conduit.source, conduit.target):
            await anyio.to_thread.run_sync(_clean_tmp, root)


def _clean_tmp(root: Any) -> None:
    try:
        with RootFs(root) as fs:
            fs.clean_tmp()
    except OSError:
        pass  # a missing or unreadable root is refused later, by the run


async def sync_once(
    config: Config,
    name: str,
    *,
    force: bool,
    report_progress: ReportProgress | None = None,
    workers: ForkedWorkers | None = None,
) -> dict[str, Any]:
    """`conduitd sync NAME` without a daemon; returns the generation document.

    Args:
        report_progress: told of each batch of finished jobs, on the event
            loop's thread (`sync --progress` draws its bar from it).
        workers: forked processes for the two scans and the copies (see
            `conduitd.forked_workers`); None does all of it here.
    """
    conduit = config.conduit(name)
    async with writer_session(config, workers) as session:
        service = session.service(report_progress)

        def document(found: GenerationRecord | None) -> dict[str, Any] | None:
            return generation_document(name, found) if found else None

        generation = await with_error_hook(
            conduit, lambda: service.sync_now(name, force=force), document
        )
        assert generation is not None  # explicit runs always record one
        # Issue 9: retention is applied after every run.
        await prune_all(session.library, session.tm, [conduit])
        return generation_document(name, generation)


async def dry_run(config: Config, name: str, *, force: bool) -> dict[str, Any]:
    """`conduitd sync NAME --dry-run`: the plan; nothing written anywhere."""
    conduit = config.conduit(name)
    return await preview(config.daemon.state_dir, conduit, force=force, first_run=True)
