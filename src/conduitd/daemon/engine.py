"""The seam between the daemon and the sync engine.

The supervisor builds one `RunFunction` per conduit by calling a
`RunFactory` with that conduit's `ConduitContext`. Until FileSyncService is
wired in, `unavailable_run_factory` stands in: every run logs
`sync_engine_unavailable` and fails, so `status` shows it as the conduit's
last error.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from conduitd.daemon.dirty import ExpectedWrites
from conduitd.daemon.runs import RunFunction, RunProgress, RunRequest
from conduitd.errors import NotAvailableYet

if TYPE_CHECKING:
    from conduitd.config import ConduitConfig
    from conduitd.index.indexer import Indexer
    from conduitd.storage.library import Library
    from conduitd.storage.transactions import TransactionManager

logger = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class ConduitContext:
    """What a conduit's run function may use, for the daemon's whole life.

    `config()` is the conduit's current config (a reload may change it in
    place, e.g. its ignore list; a changed source, target or mode restarts
    the conduit with a new context instead). `expected_writes` is the
    conduit's own-writes filter (see daemon/dirty.py: `expect` before
    renames and deletes, `clear` after the barrier). `report_progress` feeds
    `status` and the progress events of a waiting `sync` client.
    """

    name: str
    library: Library
    transactions: TransactionManager
    indexer: Indexer | None
    expected_writes: ExpectedWrites
    report_progress: Callable[[RunProgress], None]
    current_config: Callable[[], ConduitConfig]

    def config(self) -> ConduitConfig:
        return self.current_config()


RunFactory = Callable[[ConduitContext], RunFunction]


class ConflictResolving(Protocol):
    """`conduitd resolve` in the daemon, and the writer slot of each conduit
    (the sync engine implements it).

    It must share the conduits' FileSyncService, so that a resolve, a restore
    or a trash purge never overlaps a run of the same conduit.
    """

    async def resolve_conflict(self, conflict_id: int, keep: str) -> object: ...

    def exclusive(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold conduit `name`'s writer slot: no run of it starts or goes on
        until the block ends (it waits for a run going on)."""
        ...


class SyncEngineUnavailable(NotAvailableYet):
    """The daemon has no sync engine wired in yet."""


def unavailable_run_factory(context: ConduitContext) -> RunFunction:
    """The stand-in until FileSyncService lands: every run fails, visibly."""

    async def run(request: RunRequest) -> object:
        logger.warning(
            "sync_engine_unavailable", conduit=context.name, reason=request.reason.value
        )
        raise SyncEngineUnavailable("the sync engine is not wired into the daemon yet")

    return run
