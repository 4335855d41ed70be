"""The running conduit tasks, by name: start, stop, reconfigure, pause."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import structlog

from conduitd.daemon.conduit_task import ConduitTask
from conduitd.daemon.dirty import Side
from conduitd.daemon.engine import ConduitContext, RunFactory
from conduitd.daemon.runs import RunFunction, RunReason, RunRequest, TaskSettings
from conduitd.daemon.sandbox import sandbox_problems
from conduitd.errors import UsageError
from conduitd.storage.conduits import ConduitManager

if TYPE_CHECKING:
    from conduitd.config import ConduitConfig
    from conduitd.index.indexer import Indexer
    from conduitd.storage.library import Library
    from conduitd.storage.transactions import TransactionManager

logger = structlog.get_logger()


@dataclass(slots=True)
class _Conduit:
    config: ConduitConfig
    task: ConduitTask
    finished: anyio.Event = field(default_factory=anyio.Event)
    notes: tuple[str, ...] = ()


class ConduitRegistry:
    """One ConduitTask per configured conduit, each in the services task group.

    Args:
        indexer: the indexer once its watchers run (None without them).
        catch_up: `WatchService.catch_up` (see `ConduitTask`).
        stop_timeout_s: how long `stop` waits for a task's cleanup.
        config_path: named in the sandbox notes' regenerate-the-unit command.
    """

    def __init__(
        self,
        library: Library,
        transactions: TransactionManager,
        run_factory: RunFactory,
        *,
        indexer: Callable[[], Indexer | None],
        stop_timeout_s: float,
        config_path: Path,
        catch_up: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._library = library
        self._tm = transactions
        self._run_factory = run_factory
        self._indexer = indexer
        self._catch_up = catch_up
        self.stop_timeout_s = stop_timeout_s
        self.config_path = config_path
        self._conduits: dict[str, _Conduit] = {}
        self._group: anyio.abc.TaskGroup | None = None

    def bind(self, group: anyio.abc.TaskGroup | None) -> None:
        """The task group conduit tasks run in (None once it is gone)."""
        self._group = group

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._conduits)

    def task(self, name: str) -> ConduitTask:
        """The task of a configured conduit.

        Raises:
            UsageError: no conduit of that name is configured.
        """
        entry = self._conduits.get(name)
        if entry is None:
            known = ", ".join(self._conduits) or "none"
            raise UsageError(f"no conduit named {name!r}; configured: {known}")
        return entry.task

    def notes(self, name: str) -> tuple[str, ...]:
        """Problems to show in `status` beside the last error (the sandbox)."""
        entry = self._conduits.get(name)
        return entry.notes if entry else ()

    def notify_changes(self, name: str, side: Side, paths: tuple[bytes, ...]) -> None:
        """Index change notification for one conduit's side."""
        entry = self._conduits.get(name)
        if entry is not None:
            entry.task.notify_changes(side, paths)

    def request(self, name: str, reason: RunReason) -> bool:
        entry = self._conduits.get(name)
        return entry is not None and entry.task.request(reason)

    def request_all(self, reason: RunReason) -> list[str]:
        """Trigger every enabled, unpaused conduit; the names triggered."""
        return [
            name
            for name, entry in self._conduits.items()
            if not entry.task.paused and entry.task.request(reason)
        ]

    async def start(self, conduit: ConduitConfig, *, paused: bool) -> None:
        """Start the conduit's task (an instant or interval one catches up first)."""
        if self._group is None:
            raise RuntimeError("conduit tasks start only while services run")
        name = conduit.name
        runs: list[RunFunction] = []

        async def run(request: RunRequest) -> object:
            return await runs[0](request)

        task = ConduitTask(
            TaskSettings.from_config(conduit),
            run,
            paused=paused,
            record_error=lambda error: self._record_error(name, error),
            catch_up=None if self._catch_up is None else partial(self._catch_up, name),
        )
        entry = _Conduit(conduit, task)
        context = ConduitContext(
            name=name,
            library=self._library,
            transactions=self._tm,
            indexer=self._indexer(),
            expected_writes=task.expected_writes,
            report_progress=task.report_progress,
            current_config=lambda: entry.config,
        )
        runs.append(self._run_factory(context))
        entry.notes = await anyio.to_thread.run_sync(
            sandbox_problems, conduit, self.config_path
        )
        self._conduits[name] = entry
        await self._group.start(self._run, entry)

    async def stop(self, name: str) -> None:
        """Cancel the conduit's task and wait (bounded) for its cleanup."""
        entry = self._conduits.pop(name, None)
        if entry is None:
            return
        entry.task.stop()
        with anyio.move_on_after(self.stop_timeout_s):
            await entry.finished.wait()

    def reconfigure(self, conduit: ConduitConfig) -> None:
        """New settings for a running conduit whose identity did not change."""
        entry = self._conduits[conduit.name]
        entry.config = conduit
        entry.task.reconfigure(TaskSettings.from_config(conduit))

    async def set_paused(self, names: Iterable[str], paused: bool) -> list[str]:
        """Persist `paused` (logged) and apply it to the running tasks."""
        manager = ConduitManager(self._library.db)
        done = []
        for name in names:
            task = self.task(name)
            record = await manager.get_by_name(name)
            if record is not None and record.paused != paused:
                async with self._tm.transaction() as tx:
                    await manager.set_paused(tx, record.id, paused)
            task.set_paused(paused)
            done.append(name)
        logger.info("conduits_paused" if paused else "conduits_resumed", conduits=done)
        return done

    async def paused_names(self) -> set[str]:
        records = await ConduitManager(self._library.db).list_all()
        return {record.name for record in records if record.paused}

    async def _run(
        self, entry: _Conduit, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            await entry.task.run(task_status=task_status)
        finally:
            entry.finished.set()

    async def _record_error(self, name: str, error: str | None) -> None:
        manager = ConduitManager(self._library.db)
        record = await manager.get_by_name(name)
        if record is not None and record.last_sync_error != error:
            async with self._tm.transaction() as tx:
                await manager.set_error(tx, record.id, error)
