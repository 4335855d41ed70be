"""The sync engine wired into the daemon: one FileSyncService for all conduits."""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field

import anyio

from conduitd.config import Config
from conduitd.daemon.dirty import DirtyPaths
from conduitd.daemon.dirty import Side as DirtySide
from conduitd.daemon.engine import ConduitContext, RunFactory
from conduitd.daemon.runs import RunFunction, RunProgress, RunRequest
from conduitd.errors import UsageError
from conduitd.forked_workers import ForkedWorkers
from conduitd.hooks import with_error_hook
from conduitd.jobs.commit import Durability
from conduitd.jobs.runner import TransferRunner
from conduitd.reports import generation_document, resolve_document
from conduitd.storage.conduits import ConduitManager, GenerationRecord
from conduitd.sync.operations import Side
from conduitd.sync.service import ActiveRun, FileSyncService
from conduitd.sync.trash_retention import prune_all


@dataclass(slots=True)
class SyncEngine:
    """Builds each conduit's run function around one shared FileSyncService.

    The service is created on the first run (the library, log and index are
    the daemon's, handed over in each conduit's context); all conduits share
    its transfer limiter (`max_parallel_transfers`) and the worker processes
    the daemon forked at start for copies of small files (None: threads).
    """

    config: Config
    workers: ForkedWorkers | None = None
    contexts: dict[str, ConduitContext] = field(default_factory=dict)
    service: FileSyncService | None = None
    limiter: anyio.CapacityLimiter | None = None

    def factory(self) -> RunFactory:
        return self.run_function

    def run_function(self, context: ConduitContext) -> RunFunction:
        self.contexts[context.name] = context

        async def run(request: RunRequest) -> object:
            service = self._service(context)
            conduit = context.config()

            async def sync() -> GenerationRecord | None:
                return await service.sync_now(
                    context.name,
                    force=request.force,
                    explicit=request.explicit,
                    dirty=_dirty_union(request.dirty),
                    conduit=conduit,
                )

            def document(found: GenerationRecord | None) -> dict[str, object] | None:
                return generation_document(context.name, found) if found else None

            try:
                generation = await with_error_hook(conduit, sync, document)
            finally:
                context.expected_writes.clear()
            if generation is None:
                return None
            # Issue 9: retention is applied after every run (and hourly).
            await prune_all(context.library, context.transactions, [conduit])
            return generation_document(context.name, generation)

        return run

    async def resolve_conflict(self, conflict_id: int, keep: str) -> object:
        """`conduitd resolve` through the daemon: the conduits' own service.

        Raises:
            UsageError: no such conflict, or its conduit is not running here.
        """
        from conduitd.storage.conflicts import ConflictRepository, Resolution
        from conduitd.sync.resolve_conflict import resolve_conflict

        any_context = next(iter(self.contexts.values()), None)
        if any_context is None:
            raise UsageError("no conduit runs in this daemon")
        record = await ConflictRepository(any_context.library.db).get(conflict_id)
        if record is None:
            raise UsageError(f"no conflict {conflict_id}")
        conduit = await ConduitManager(any_context.library.db).get(record.conduit_id)
        context = self.contexts.get(conduit.name) if conduit else None
        if context is None:
            raise UsageError(f"the conduit of conflict {conflict_id} is not running")
        current = {name: c.config() for name, c in self.contexts.items()}
        try:
            done = await resolve_conflict(
                self._service(context), conflict_id, Resolution(keep), current=current
            )
        finally:
            context.expected_writes.clear()
        return resolve_document(
            done.conduit, conflict_id, keep, done.resolved, done.generation
        )

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """Conduit `name`'s writer slot (see `ConflictResolving`); nothing to
        hold for a conduit that does not run here."""
        context = self.contexts.get(name)
        if context is None:
            return nullcontext()
        return self._service(context).writer_slot(name)

    def _service(self, context: ConduitContext) -> FileSyncService:
        if self.service is None:
            if context.indexer is None:
                raise RuntimeError("the daemon runs conduits only with an indexer")
            self.limiter = anyio.CapacityLimiter(
                self.config.daemon.max_parallel_transfers
            )
            self.service = FileSyncService(
                context.library,
                context.transactions,
                context.indexer,
                self.config,
                one_shot=False,
                transfer_limiter=self.limiter,
                runner=TransferRunner(
                    durability=Durability.SYNCFS, workers=self.workers
                ),
                expect_writes=self._expect,
                report_progress=self._progress,
            )
        return self.service

    def _expect(self, name: str, side: Side, paths: Collection[bytes]) -> None:
        context = self.contexts.get(name)
        if context is not None:
            context.expected_writes.expect(DirtySide(side.value), paths)

    def _progress(self, name: str, active: ActiveRun) -> None:
        context = self.contexts.get(name)
        if context is not None:
            context.report_progress(
                RunProgress(
                    generation=active.generation,
                    files_done=active.files_done,
                    files_total=active.files_total,
                    bytes_done=active.bytes_done,
                    bytes_total=active.bytes_total,
                )
            )


def _dirty_union(dirty: DirtyPaths) -> Collection[bytes] | None:
    if dirty.source is None or dirty.target is None:
        return None
    return dirty.source | dirty.target
