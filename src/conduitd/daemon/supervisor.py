"""The daemon's root task group: lock, library, reconciliation, services.

Task tree (STYLE.md: one root group, every task has a parent)::

    root
      serve_signals          signals -> request_stop / reload_config / sync_all
      run_watchdog           WATCHDOG=1 at half of WATCHDOG_USEC
      ControlServer.serve    the socket; request handlers run in root too
      _run_services          cancelled first on stop
        ConduitScheduler.run   interval/cron jobs -> ConduitTask.request
        heartbeat, drainer     leadership lease, outbox -> sync.db
        WatchService.run       indexer watchers; their changes -> notify_changes
        ConduitTask.run x N    one per configured conduit
        run_retention          hourly trash pruning (also after every run)

Stop: services are cancelled (runs end interrupted, their cleanup shielded),
then the outbox gets a last bounded drain, then the root (socket, signals)
goes, then the library closes and the lock is released.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import anyio.abc
import structlog

from conduitd.config import Config, DaemonConfig, Schedule, diff_conduits
from conduitd.daemon.control import ControlServer
from conduitd.daemon.engine import (
    ConflictResolving,
    RunFactory,
    unavailable_run_factory,
)
from conduitd.daemon.handlers import DaemonHandlers
from conduitd.daemon.notify import Notifier, SdNotifier, run_watchdog
from conduitd.daemon.registry import ConduitRegistry
from conduitd.daemon.runs import RunReason
from conduitd.daemon.schedules import ConduitScheduler
from conduitd.daemon.signals import serve_signals
from conduitd.daemon.watching import WatchService
from conduitd.errors import AlreadyRunning, ConduitdError, ConfigError
from conduitd.forked_workers import ForkedWorkers
from conduitd.jobs.rootfs import clean_root_tmp
from conduitd.logs import configure_logging
from conduitd.storage.conduits import ConduitManager
from conduitd.storage.library import Library, open_library
from conduitd.storage.lockfile import LockHeld, StateLock
from conduitd.storage.reconcile import reconcile_conduits
from conduitd.storage.state_dir import ensure_state_dir
from conduitd.storage.transactions import TransactionManager, open_transaction_manager
from conduitd.sync.trash_retention import run_retention
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


class Supervisor:
    """Owns the daemon's lifetime; implements the signal and control entry points.

    Args:
        run_factory: builds each conduit's run (the sync engine). The default
            stand-in fails every run with `sync_engine_unavailable`.
        notifier: sd_notify (default: from $NOTIFY_SOCKET).
        config_loader: reads the config on reload (default: load_config).
        watch: start the indexer's watchers (tests of the daemon machinery
            alone may turn it off).
        workers: forked processes the indexer's whole-tree scans may run in
            (see `conduitd.forked_workers`).
    """

    def __init__(
        self,
        config: Config,
        *,
        run_factory: RunFactory = unavailable_run_factory,
        conflict_resolver: ConflictResolving | None = None,
        notifier: Notifier | None = None,
        config_loader: ConfigLoader | None = None,
        watch: bool = True,
        workers: ForkedWorkers | None = None,
    ) -> None:
        self.config = config
        self._workers = workers
        self.state = RunState.STARTING
        self.started_at: str | None = None
        self.library: Library | None = None
        self.transactions: TransactionManager | None = None
        self.watching: WatchService | None = None
        self._watch = watch
        self._run_factory = run_factory
        self.conflict_resolver = conflict_resolver
        self._notifier: Notifier = notifier or SdNotifier.from_environ()
        self._config_loader = config_loader
        self.scheduler = ConduitScheduler(self._post_scheduled)
        self._conduits: ConduitRegistry | None = None
        self._stop_requested: anyio.Event | None = None
        self._services_done: anyio.Event | None = None
        self._reload_lock: anyio.Lock | None = None
        self._root: anyio.abc.TaskGroup | None = None

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
            self.library = await open_library(state_dir, repair=True)
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
        self._conduits = ConduitRegistry(
            library,
            self.transactions,
            self._run_factory,
            indexer=lambda: self.watching.indexer if self.watching else None,
            stop_timeout_s=self.config.daemon.shutdown_timeout_s,
            config_path=self.config.path,
            catch_up=self._catch_up,
        )
        async with anyio.create_task_group() as root:
            self._root = root
            await root.start(serve_signals, self, root)
            await root.start(
                partial(run_watchdog, self._notifier, extending=self._extending)
            )
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

    async def _catch_up(self, name: str) -> None:
        if self.watching is not None:
            await self.watching.catch_up(name)

    async def _recover(self, tm: TransactionManager) -> None:
        assert self.library is not None  # opened by run()
        # We hold the lock: a generation still "running" was cut short by a crash.
        async with tm.transaction() as tx:
            interrupted = await ConduitManager(self.library.db).interrupt_unfinished(tx)
        if interrupted:
            logger.warning("generations_interrupted", count=len(interrupted))
        # Issue 8: temp files of copies a SIGKILL cut short; nothing writes yet.
        for conduit in self.config.conduits:
            for root in (conduit.source, conduit.target):
                removed = await anyio.to_thread.run_sync(clean_root_tmp, root)
                if removed:
                    logger.info("temp_files_removed", root=str(root), count=removed)
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
        assert self.library is not None  # opened by run()
        assert self.transactions is not None  # opened by _serve()
        assert self._services_done is not None
        tm, conduits = self.transactions, self.conduits
        try:
            async with anyio.create_task_group() as services:
                conduits.bind(services)
                await services.start(self.scheduler.run)
                await services.start(tm.leadership.run_heartbeat)
                await services.start(tm.run_drainer)
                if self._watch:
                    self.watching = WatchService(
                        self.library, conduits.notify_changes, self._workers
                    )
                    await services.start(self.watching.run, self.config, tm)
                paused = await conduits.paused_names()
                for conduit in self.config.conduits:
                    await conduits.start(conduit, paused=conduit.name in paused)
                self.scheduler.apply(self._schedules())
                services.start_soon(
                    partial(
                        run_retention, self.library, tm, lambda: self.config.conduits
                    )
                )
                task_status.started(services.cancel_scope)
        finally:
            conduits.bind(None)
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
        posted = self.conduits.request_all(RunReason.SIGNAL)
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

    def _apply_daemon_settings(self, old: DaemonConfig, new: DaemonConfig) -> None:
        if (old.log_level, old.log_format) != (new.log_level, new.log_format):
            configure_logging(new.log_level, new.log_format)
        self.conduits.stop_timeout_s = new.shutdown_timeout_s

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
        self._apply_daemon_settings(old.daemon, new.daemon)
        conduits = self.conduits
        restarted = []
        for name in diff.removed:
            await conduits.stop(name)
        for name in diff.changed:
            conduit = new.conduit(name)
            if conduit.identity_changed(old.conduit(name)):
                # New source, target or mode: a new baseline, a new task.
                paused = conduits.task(name).paused
                await conduits.stop(name)
                await conduits.start(conduit, paused=paused)
                restarted.append(name)
            else:
                conduits.reconfigure(conduit)
        paused_names = await conduits.paused_names()
        for name in diff.added:
            await conduits.start(new.conduit(name), paused=name in paused_names)
        self.scheduler.apply(self._schedules())
        if self.watching is not None:
            await self.watching.refresh(self.config)
        result = ReloadResult(
            diff.added, diff.removed, diff.changed, tuple(restarted), diff.unchanged
        )
        logger.info("config_reloaded", **result.document())
        self._notifier.notify(f"STATUS={self._status_line()}")
        return result

    # -- conduits --------------------------------------------------------------

    @property
    def conduits(self) -> ConduitRegistry:
        """The running conduit tasks (once the library is open)."""
        if self._conduits is None:
            raise DaemonStarting("the daemon is starting; try again in a moment")
        return self._conduits

    def _schedules(self) -> Mapping[str, Schedule]:
        return {c.name: c.schedule for c in self.config.conduits if c.enabled}

    def _post_scheduled(self, name: str) -> None:
        if self.state is RunState.STARTED:
            self.conduits.request(name, RunReason.SCHEDULE)

    def _extending(self) -> bool:
        """Starting or stopping: systemd's start/stop timeouts are extended."""
        return self.state in (RunState.STARTING, RunState.STOPPING)

    def _status_line(self) -> str:
        running = len(self._conduits.names) if self._conduits else 0
        return f"{running} conduit{'s' if running != 1 else ''}, state dir {self.state_dir}"


async def run_daemon(
    config: Config,
    *,
    run_factory: RunFactory | None = None,
    conflict_resolver: ConflictResolving | None = None,
    workers: ForkedWorkers | None = None,
) -> None:
    """Run the daemon for `config` until SIGTERM, SIGINT or `conduitd stop`."""
    supervisor = Supervisor(
        config,
        run_factory=run_factory or unavailable_run_factory,
        conflict_resolver=conflict_resolver,
        workers=workers,
    )
    await supervisor.run()
