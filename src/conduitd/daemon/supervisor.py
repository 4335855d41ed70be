"""The daemon's root task group: lock, library, reconciliation, services.

Task tree (STYLE.md: one root group, every task has a parent)::

    root
      serve_signals          signals -> request_stop / reload_config / sync_all
      run_watchdog           WATCHDOG=1 at half of WATCHDOG_USEC
      ControlServer.serve    the socket; request handlers run in root too
      _run_services          cancelled first on stop
        ConduitScheduler.run   interval/cron jobs -> ConduitTask.request
        heartbeat, drainer     leadership lease, outbox -> sync.db
        indexer watchers       + the feed that routes changes to conduits
        ConduitTask.run x N    one per configured conduit

Stop: services are cancelled (runs end interrupted, their cleanup shielded),
then the outbox gets a last bounded drain, then the root (socket, signals)
goes, then the library closes and the lock is released.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import structlog

from conduitd.config import ConduitConfig, Config, Schedule, diff_conduits
from conduitd.daemon.conduit_task import ConduitTask
from conduitd.daemon.control import ControlServer
from conduitd.daemon.dirty import Side
from conduitd.daemon.engine import ConduitContext, RunFactory, unavailable_run_factory
from conduitd.daemon.handlers import DaemonHandlers
from conduitd.daemon.notify import Notifier, SdNotifier, run_watchdog
from conduitd.daemon.runs import RunFunction, RunReason, RunRequest, TaskSettings
from conduitd.daemon.sandbox import sandbox_problems
from conduitd.daemon.schedules import ConduitScheduler
from conduitd.daemon.signals import serve_signals
from conduitd.errors import AlreadyRunning, ConduitdError, ConfigError, UsageError
from conduitd.index.indexer import Indexer
from conduitd.storage.conduits import ConduitManager
from conduitd.storage.library import Library, open_library
from conduitd.storage.locations import LocationRecord, list_locations
from conduitd.storage.lockfile import LockHeld, StateLock
from conduitd.storage.reconcile import reconcile_conduits
from conduitd.storage.state_dir import ensure_state_dir
from conduitd.storage.transactions import TransactionManager, open_transaction_manager
from conduitd.timeutil import utc_now_text

logger = structlog.get_logger()

ConfigLoader = Callable[[Path], Config]
# The last outbox drain at stop never takes longer than this.
FINAL_DRAIN_S = 5.0


class RunState(enum.StrEnum):
    """Where the daemon is in its life; entry points check it."""

    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


class DaemonStarting(ConduitdError):
    kind = "starting"
    exit_code = 3


class DaemonStopping(ConduitdError):
    kind = "stopping"
    exit_code = 3


@dataclass(frozen=True, slots=True)
class ReloadResult:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    restarted: tuple[str, ...]
    unchanged: tuple[str, ...]

    def document(self) -> dict[str, object]:
        return {
            "reloaded": True,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "restarted": list(self.restarted),
            "unchanged": list(self.unchanged),
        }


@dataclass(slots=True)
class _Conduit:
    config: ConduitConfig
    task: ConduitTask
    finished: anyio.Event = field(default_factory=anyio.Event)
    notes: tuple[str, ...] = ()


class Supervisor:
    """Owns the daemon's lifetime; implements the signal and control entry points.

    Args:
        run_factory: builds each conduit's run (the sync engine). The default
            stand-in fails every run with `sync_engine_unavailable`.
        notifier: sd_notify (default: from $NOTIFY_SOCKET).
        config_loader: reads the config on reload (default: load_config).
        watch: start the indexer's watchers (tests of the daemon machinery
            alone may turn it off).
    """

    def __init__(
        self,
        config: Config,
        *,
        run_factory: RunFactory = unavailable_run_factory,
        notifier: Notifier | None = None,
        config_loader: ConfigLoader | None = None,
        watch: bool = True,
    ) -> None:
        self.config = config
        self.state = RunState.STARTING
        self.started_at: str | None = None
        self.library: Library | None = None
        self.transactions: TransactionManager | None = None
        self.indexer: Indexer | None = None
        self._watch = watch
        self._run_factory = run_factory
        self._notifier: Notifier = notifier or SdNotifier.from_environ()
        self._config_loader = config_loader
        self.scheduler = ConduitScheduler(self._post_scheduled)
        self._conduits: dict[str, _Conduit] = {}
        self._location_sides: dict[int, list[tuple[str, Side]]] = {}
        self._stop_requested: anyio.Event | None = None
        self._services_done: anyio.Event | None = None
        self._reload_lock: anyio.Lock | None = None
        self._root: anyio.abc.TaskGroup | None = None
        self._services: anyio.abc.TaskGroup | None = None

    @property
    def state_dir(self) -> Path:
        return self.config.daemon.state_dir

    # -- lifetime ------------------------------------------------------------

    async def run(self) -> None:
        """Run until asked to stop; return once everything is closed."""
        state_dir = ensure_state_dir(self.state_dir)
        lock = StateLock(state_dir)
        try:
            lock.acquire()
        except LockHeld as held:
            holder = f"pid {held.pid}" if held.pid else "another process"
            raise AlreadyRunning(
                f"another conduitd ({holder}) already runs on state dir {state_dir}"
            ) from None
        try:
            self.library = await open_library(state_dir)
            try:
                await self._serve(self.library)
            finally:
                await self.library.close()
        finally:
            lock.release()
            self.state = RunState.STOPPED
        logger.info("daemon_stopped")

    async def _serve(self, library: Library) -> None:
        self._stop_requested = anyio.Event()
        self._services_done = anyio.Event()
        self._reload_lock = anyio.Lock()
        self.transactions = await open_transaction_manager(library)
        await self._recover(self.transactions)
        async with anyio.create_task_group() as root:
            self._root = root
            await root.start(serve_signals, self, root)
            await root.start(run_watchdog, self._notifier)
            await root.start(ControlServer(self.state_dir, self.handlers()).serve, root)
            services = await root.start(self._run_services)
            self.state = RunState.STARTED
            self.started_at = utc_now_text()
            self._notifier.notify(f"READY=1\nSTATUS={self._status_line()}")
            logger.info(
                "daemon_ready",
                pid=os.getpid(),
                state_dir=str(self.state_dir),
                conduits=list(self.config.names),
            )
            await self._stop_requested.wait()
            await self._shut_down(services)
            root.cancel_scope.cancel()

    async def _recover(self, tm: TransactionManager) -> None:
        assert self.library is not None  # opened by run()
        # We hold the lock: a generation still "running" was cut short by a crash.
        async with tm.transaction() as tx:
            interrupted = await ConduitManager(self.library.db).interrupt_unfinished(tx)
        if interrupted:
            logger.warning("generations_interrupted", count=len(interrupted))
        report = await reconcile_conduits(self.library, self.config, tm=tm)
        logger.info(
            "conduits_reconciled",
            created=report.created,
            updated=report.updated,
            reset=report.reset,
            disabled=report.disabled,
        )

    async def _run_services(
        self, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]
    ) -> None:
        assert self.transactions is not None  # opened by _serve
        assert self._services_done is not None
        tm = self.transactions
        try:
            async with anyio.create_task_group() as services:
                self._services = services
                await services.start(self.scheduler.run)
                await services.start(tm.leadership.run_heartbeat)
                await services.start(tm.run_drainer)
                if self._watch:
                    await services.start(self._run_indexer)
                paused = await self._paused_names()
                for conduit in self.config.conduits:
                    await self._start_conduit(conduit, paused=conduit.name in paused)
                self.scheduler.apply(self._schedules())
                task_status.started(services.cancel_scope)
        finally:
            self._services = None
            self._services_done.set()

    async def _shut_down(self, services: anyio.CancelScope) -> None:
        assert self._services_done is not None
        self.state = RunState.STOPPING
        self._notifier.notify("STOPPING=1\nSTATUS=stopping")
        timeout_s = self.config.daemon.shutdown_timeout_s
        logger.info("daemon_stopping", timeout_s=timeout_s)
        deadline = anyio.current_time() + timeout_s
        services.cancel()
        with anyio.move_on_after(timeout_s, shield=True) as waited:
            await self._services_done.wait()
        if waited.cancelled_caught:
            logger.error("shutdown_timeout_exceeded", timeout_s=timeout_s)
        remaining_s = max(0.0, min(FINAL_DRAIN_S, deadline - anyio.current_time()))
        with anyio.move_on_after(remaining_s, shield=True):
            await self._final_drain()

    async def _final_drain(self) -> None:
        if self.transactions is None:
            return
        try:
            if self.transactions.leadership.is_leader():
                await self.transactions.flushed()
        except ConduitdError:
            logger.exception("final_drain_failed")  # the rows wait in the outbox

    # -- signal and control entry points -------------------------------------

    def handlers(self) -> DaemonHandlers:
        return DaemonHandlers(self)

    def request_stop(self, reason: str) -> None:
        """Begin a graceful stop (SIGTERM, SIGINT, `conduitd stop`)."""
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return
        logger.info("stop_requested", reason=reason)
        if self.state is RunState.STARTING:
            # Nothing runs yet that needs a graceful end: drop everything.
            self.state = RunState.STOPPING
            self._notifier.notify("STOPPING=1")
            if self._root is not None:
                self._root.cancel_scope.cancel()
            return
        if self._stop_requested is not None:
            self._stop_requested.set()

    def require_started(self) -> None:
        """Raises DaemonStarting or DaemonStopping unless the daemon is up."""
        if self.state is RunState.STARTING:
            raise DaemonStarting("the daemon is starting; try again in a moment")
        if self.state is not RunState.STARTED:
            raise DaemonStopping("the daemon is stopping")

    def sync_all(self) -> list[str]:
        """SIGUSR1: trigger every enabled, unpaused conduit now."""
        if self.state is not RunState.STARTED:
            return []
        posted = [
            name
            for name, entry in self._conduits.items()
            if not entry.task.paused and entry.task.request(RunReason.SIGNAL)
        ]
        logger.info("sync_all_requested", conduits=posted)
        return posted

    async def log_status(self) -> None:
        """SIGUSR2: one status_dump event with every conduit's runtime state."""
        document = await self.handlers().status({}, lambda _event: None)
        logger.info("status_dump", status=document)

    async def reload_config(self) -> ReloadResult:
        """SIGHUP or `conduitd reload`: apply a valid config, keep an invalid one out.

        Raises:
            ConfigError: the new config is invalid; every problem was logged
                and the daemon goes on with the old one.
        """
        self.require_started()
        assert self._reload_lock is not None
        async with self._reload_lock:
            try:
                new = await anyio.to_thread.run_sync(
                    self._load_config, self.config.path
                )
            except ConfigError as error:
                for problem in error.problems:
                    logger.error(
                        "config_problem",
                        file=problem.file,
                        key=problem.key,
                        problem=problem.message,
                    )
                logger.warning("reload_rejected", problems=len(error.problems))
                raise
            return await self._apply_config(new)

    def _load_config(self, path: Path) -> Config:
        if self._config_loader is not None:
            return self._config_loader(path)
        from conduitd.config import load_config

        return load_config(path)

    async def _apply_config(self, new: Config) -> ReloadResult:
        assert self.library is not None
        assert self.transactions is not None
        old = self.config
        if new.daemon.state_dir != old.daemon.state_dir:
            logger.warning(
                "state_dir_change_needs_restart",
                running=str(old.daemon.state_dir),
                configured=str(new.daemon.state_dir),
            )
            new = Config(old.daemon, new.conduits, new.path, new.warnings)
        diff = diff_conduits(old, new)
        await reconcile_conduits(self.library, new, tm=self.transactions)
        self.config = new
        restarted = []
        for name in diff.removed:
            await self._stop_conduit(name)
        for name in diff.changed:
            conduit = new.conduit(name)
            if conduit.identity_changed(old.conduit(name)):
                paused = self._conduits[name].task.paused
                await self._stop_conduit(name)
                await self._start_conduit(conduit, paused=paused)
                restarted.append(name)
            else:
                entry = self._conduits[name]
                entry.config = conduit
                entry.task.reconfigure(TaskSettings.from_config(conduit))
        paused_names = await self._paused_names()
        for name in diff.added:
            await self._start_conduit(new.conduit(name), paused=name in paused_names)
        self.scheduler.apply(self._schedules())
        await self._refresh_watches()
        result = ReloadResult(
            diff.added, diff.removed, diff.changed, tuple(restarted), diff.unchanged
        )
        logger.info("config_reloaded", **result.document())
        self._notifier.notify(f"STATUS={self._status_line()}")
        return result

    # -- conduits --------------------------------------------------------------

    def conduit_task(self, name: str) -> ConduitTask:
        """The running task of a configured conduit.

        Raises:
            UsageError: no conduit of that name is configured.
        """
        entry = self._conduits.get(name)
        if entry is None:
            known = ", ".join(self._conduits) or "none"
            raise UsageError(f"no conduit named {name!r}; configured: {known}")
        return entry.task

    def conduit_notes(self, name: str) -> tuple[str, ...]:
        entry = self._conduits.get(name)
        return entry.notes if entry else ()

    def route_changes(self, location_id: int, paths: Iterable[bytes]) -> None:
        """Index change notifications of one location -> the conduits using it."""
        changed = tuple(paths)
        for name, side in self._location_sides.get(location_id, ()):
            entry = self._conduits.get(name)
            if entry is not None:
                entry.task.notify_changes(side, changed)

    async def set_paused(self, names: Iterable[str], paused: bool) -> list[str]:
        """Persist `paused` and apply it to the running tasks (pause/resume)."""
        assert self.library is not None
        assert self.transactions is not None
        manager = ConduitManager(self.library.db)
        done = []
        for name in names:
            task = self.conduit_task(name)
            record = await manager.get_by_name(name)
            if record is not None and record.paused != paused:
                async with self.transactions.transaction() as tx:
                    await manager.set_paused(tx, record.id, paused)
            task.set_paused(paused)
            done.append(name)
        logger.info("conduits_paused" if paused else "conduits_resumed", conduits=done)
        return done

    async def _start_conduit(self, conduit: ConduitConfig, *, paused: bool) -> None:
        assert self._services is not None  # only while services run
        assert self.library is not None
        assert self.transactions is not None
        name = conduit.name
        runs: list[RunFunction] = []

        async def run(request: RunRequest) -> object:
            return await runs[0](request)

        task = ConduitTask(
            TaskSettings.from_config(conduit),
            run,
            paused=paused,
            record_error=lambda error: self._record_error(name, error),
        )
        entry = _Conduit(conduit, task)
        context = ConduitContext(
            name=name,
            library=self.library,
            transactions=self.transactions,
            indexer=self.indexer,
            expected_writes=task.expected_writes,
            report_progress=task.report_progress,
            current_config=lambda: entry.config,
        )
        runs.append(self._run_factory(context))
        entry.notes = await anyio.to_thread.run_sync(
            sandbox_problems, conduit, self.config.path
        )
        self._conduits[name] = entry
        await self._services.start(self._run_conduit, entry)

    async def _run_conduit(
        self, entry: _Conduit, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            await entry.task.run(task_status=task_status)
        finally:
            entry.finished.set()

    async def _stop_conduit(self, name: str) -> None:
        entry = self._conduits.pop(name, None)
        if entry is None:
            return
        entry.task.stop()
        with anyio.move_on_after(self.config.daemon.shutdown_timeout_s):
            await entry.finished.wait()

    async def _record_error(self, name: str, error: str | None) -> None:
        if self.library is None or self.transactions is None:
            return
        manager = ConduitManager(self.library.db)
        record = await manager.get_by_name(name)
        if record is not None and record.last_sync_error != error:
            async with self.transactions.transaction() as tx:
                await manager.set_error(tx, record.id, error)

    async def _paused_names(self) -> set[str]:
        assert self.library is not None
        records = await ConduitManager(self.library.db).list_all()
        return {record.name for record in records if record.paused}

    def _schedules(self) -> Mapping[str, Schedule]:
        return {c.name: c.schedule for c in self.config.conduits if c.enabled}

    def _post_scheduled(self, name: str) -> None:
        entry = self._conduits.get(name)
        if entry is not None and self.state is RunState.STARTED:
            entry.task.request(RunReason.SCHEDULE)

    # -- the indexer -------------------------------------------------------------

    async def _run_indexer(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The indexer's watchers, and the feed routing their changes to conduits.

        Started before the conduits: READY=1 comes after the initial scans.
        """
        assert self.library is not None
        self.indexer = Indexer.for_library(
            self.library,
            tm=self.transactions,
            rescan_interval_s=self.config.daemon.rescan_interval_s,
        )
        locations = await self._watched_locations()
        with self.indexer.subscribe() as feed:
            async with anyio.create_task_group() as tg:
                await tg.start(self.indexer.run_watchers, locations)
                task_status.started()
                async for change in feed:
                    self.route_changes(change.location_id, change.paths)

    async def _watched_locations(self) -> list[LocationRecord]:
        """Locations of enabled conduits' roots; refreshes the routing table."""
        assert self.library is not None
        by_path = {loc.path: loc for loc in await list_locations(self.library.db)}
        sides: dict[int, list[tuple[str, Side]]] = {}
        watched: dict[int, LocationRecord] = {}
        for conduit in self.config.conduits:
            if not conduit.enabled:
                continue
            for side, root in (
                (Side.SOURCE, conduit.source),
                (Side.TARGET, conduit.target),
            ):
                location = by_path.get(root)
                if location is not None:
                    sides.setdefault(location.id, []).append((conduit.name, side))
                    watched[location.id] = location
        self._location_sides = sides
        return list(watched.values())

    async def _refresh_watches(self) -> None:
        if self.indexer is None:
            await self._watched_locations()
            return
        before = set(self._location_sides)
        locations = await self._watched_locations()
        after = {location.id for location in locations}
        for location_id in before - after:
            self.indexer.remove_watch(location_id)
        for location_id in after - before:
            await self.indexer.add_watch(location_id)

    def _status_line(self) -> str:
        running = len(self._conduits)
        return f"{running} conduit{'s' if running != 1 else ''}, state dir {self.state_dir}"


async def run_daemon(config: Config, *, run_factory: RunFactory | None = None) -> None:
    """Run the daemon for `config` until SIGTERM, SIGINT or `conduitd stop`."""
    supervisor = Supervisor(config, run_factory=run_factory or unavailable_run_factory)
    await supervisor.run()
