"""One task per conduit: triggers in, one run at a time, errors contained.

Triggers (instant changes, schedules, the CLI, SIGUSR1, retries) land on a
1-slot stream: a trigger while one is pending or a run is going is coalesced
into exactly one follow-up run. Every trigger's reason is kept, so the
follow-up knows whether someone asked for it explicitly. The run itself is
injected (the sync engine); this module knows nothing of copying.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from conduitd.config.enums import ScheduleKind
from conduitd.daemon.dirty import (
    DEFAULT_DIRTY_LIMIT,
    DirtyTracker,
    ExpectedWrites,
    Side,
    is_internal,
)
from conduitd.daemon.runs import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_BACKOFF_MAX_S,
    REASON_PRIORITY,
    ConduitRuntime,
    RunFailed,
    RunFunction,
    RunInterrupted,
    RunProgress,
    RunReason,
    RunRequest,
    TaskSettings,
    backoff_delay_s,
)
from conduitd.errors import ConduitdError, SafetyRefusal

logger = structlog.get_logger()


ErrorRecorder = Callable[[str | None], Awaitable[None]]
ProgressCallback = Callable[[Mapping[str, object]], None]


@dataclass(eq=False, slots=True)
class _Waiter:
    """A caller of `sync_now` waiting for the run that includes its request."""

    progress: ProgressCallback | None
    done: anyio.Event = field(default_factory=anyio.Event)
    result: object = None
    error: BaseException | None = None

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


@dataclass(slots=True)
class _Batch:
    request: RunRequest
    waiters: list[_Waiter]


class ConduitTask:
    """Triggers, debouncing, coalescing, backoff and error isolation for one conduit.

    Args:
        run: the sync engine's run for this conduit.
        record_error: persists `last_error` (None clears it) so `status`
            without a daemon shows it too; failures there are logged only.
        backoff_initial_s, backoff_max_s: retry delay after a failed run,
            doubling per consecutive failure, capped.
        dirty_limit: changed paths per side kept before 'everything changed'.
        catch_up: awaited before an explicit run takes its dirty paths;
            returns once the watchers have reported every earlier change.
    """

    def __init__(
        self,
        settings: TaskSettings,
        run: RunFunction,
        *,
        paused: bool = False,
        record_error: ErrorRecorder | None = None,
        backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        dirty_limit: int = DEFAULT_DIRTY_LIMIT,
        catch_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._catch_up = catch_up
        self.expected_writes = ExpectedWrites()
        self._run = run
        self._paused = paused
        self._record_error = record_error
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._dirty = DirtyTracker(dirty_limit)
        # The 1-slot trigger stream and the events are made in run(): anyio
        # objects belong to a running loop, and streams must be closed.
        self._wake_send: MemoryObjectSendStream[None] | None = None
        self._reasons: set[RunReason] = set()
        self._force = False
        self._waiters: list[_Waiter] = []
        self._skipped_while_paused = False
        self._running = False
        self._active: RunProgress | None = None
        self._running_waiters: list[_Waiter] = []
        self._last_error: str | None = None
        self._failures = 0
        self._retry_at: float | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._explicit: anyio.Event | None = None
        self._changed: anyio.Event | None = None
        self._burst_started_at: float | None = None
        self._last_change_at = 0.0
        self._log = logger.bind(conduit=settings.name)

    @property
    def name(self) -> str:
        return self.settings.name

    # -- lifecycle -----------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve triggers until cancelled (`stop()` or the parent's scope)."""
        self._explicit = anyio.Event()
        self._changed = anyio.Event()
        if self._burst_started_at is not None:  # changes noted before run()
            self._changed.set()
        send, receive = anyio.create_memory_object_stream[None](1)
        self._wake_send = send
        try:
            with send, receive, anyio.CancelScope() as self._scope:
                if self._reasons or self._explicit_pending():
                    send.send_nowait(None)  # requested before run()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._debounce_loop)
                    if self.settings.catches_up_at_start:
                        self.request(RunReason.STARTUP)
                    task_status.started()
                    await self._run_loop(receive)
        finally:
            self._stopped, self._wake_send = True, None
            stopped = RunInterrupted(f"conduit {self.name} stopped")
            for waiter in self._waiters:
                waiter.finish(error=stopped)
            self._waiters.clear()

    def stop(self) -> None:
        """Cancel the task (a running run is cancelled: it ends interrupted)."""
        if self._scope is not None:
            self._scope.cancel()

    # -- inputs --------------------------------------------------------------

    def request(self, reason: RunReason, *, force: bool = False) -> bool:
        """Post a trigger without waiting; False when it is ignored.

        Ignored: a disabled conduit (always), a paused one (automatic
        reasons), a stopped task. A trigger while one is pending joins it.
        """
        if self._stopped or not self.settings.enabled:
            return False
        if self._paused and not reason.explicit:
            self._skipped_while_paused = True
            return False
        self._reasons.add(reason)
        self._force = self._force or force
        if reason.explicit and self._explicit is not None:
            self._explicit.set()
        if self._wake_send is not None:
            with contextlib.suppress(anyio.WouldBlock):
                self._wake_send.send_nowait(None)  # WouldBlock: already pending
        return True

    async def sync_now(
        self,
        reason: RunReason = RunReason.MANUAL,
        *,
        force: bool = False,
        progress: ProgressCallback | None = None,
    ) -> object:
        """Request a run and wait for it; return what the run returned.

        While a run is going, this waits for the one follow-up run.

        Raises:
            SafetyRefusal: the conduit is disabled or paused (exit 3).
            ConduitdError: the run's own error (RunFailed for foreign ones).
            RunInterrupted: the task stopped before the run finished.
        """
        self._refuse_if_not_runnable()
        waiter = _Waiter(progress)
        self._waiters.append(waiter)
        try:
            self.request(reason, force=force)
            await waiter.done.wait()
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def notify_changes(self, side: Side, paths: Iterable[bytes]) -> int:
        """Index change notification: relative paths changed on `side`.

        Paths this conduit's own run expects to write, and `.conduitd/`, are
        dropped. The rest are dirty for the next run and, for an instant
        conduit, on a trigger side, start or extend the debounce window.
        Returns how many paths were kept.
        """
        expected = self.expected_writes
        kept = [
            p for p in paths if not is_internal(p) and not expected.is_expected(side, p)
        ]
        if not kept:
            return 0
        self._dirty.add(side, kept)
        settings = self.settings
        if settings.schedule is ScheduleKind.INSTANT and side in settings.trigger_sides:
            now = anyio.current_time()
            if self._burst_started_at is None:
                self._burst_started_at = now
            self._last_change_at = now
            if self._changed is not None:
                self._changed.set()
        return len(kept)

    def reconfigure(self, settings: TaskSettings) -> None:
        """New settings from a reload (same name); takes effect from the next trigger."""
        if settings.name != self.name:
            raise ValueError(
                f"cannot rename conduit task {self.name} to {settings.name}"
            )
        self.settings = settings
        if not settings.enabled:
            self._reasons.clear()

    def set_paused(self, paused: bool) -> None:
        """Pause (automatic triggers skip) or resume: one catch-up run (issue 9).

        The catch-up is an automatic run: it records a generation only when
        it finds work (what changed or was skipped while paused).
        """
        was_paused, self._paused = self._paused, paused
        if was_paused and not paused:
            self._skipped_while_paused = False
            self.request(RunReason.RESUME)

    def report_progress(self, progress: RunProgress) -> None:
        """The run reports progress: `status` shows it, `sync` callers get it."""
        self._active = progress
        for waiter in self._running_waiters:
            if waiter.progress is not None:
                waiter.progress(progress.document())

    # -- state for status ----------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def runtime(self) -> ConduitRuntime:
        retry_in_s = None
        if self._retry_at is not None:
            retry_in_s = max(0.0, self._retry_at - anyio.current_time())
        return ConduitRuntime(
            running=self._running,
            pending=bool(self._reasons or self._waiters),
            paused=self._paused,
            active=self._active if self._running else None,
            last_error=self._last_error,
            consecutive_failures=self._failures,
            retry_in_s=retry_in_s,
        )

    # -- the loops -----------------------------------------------------------

    async def _run_loop(self, wake: MemoryObjectReceiveStream[None]) -> None:
        while True:
            await wake.receive()
            if self._retry_at is not None and not self._explicit_pending():
                await self._wait_for_retry()
            if self._explicit_pending():
                await self._catch_up_with_watchers()
            batch = self._take_batch(wake)
            if batch is not None:
                await self._execute(batch)

    async def _debounce_loop(self) -> None:
        assert self._changed is not None  # made in run()
        while True:
            await self._changed.wait()
            while True:
                assert self._burst_started_at is not None  # set with _changed
                quiet_at = self._last_change_at + self.settings.debounce_s
                forced_at = self._burst_started_at + self.settings.max_delay_s
                wake_at = min(quiet_at, forced_at)
                if anyio.current_time() >= wake_at:
                    break
                await anyio.sleep_until(wake_at)
            self._changed = anyio.Event()
            self._burst_started_at = None
            self.request(RunReason.CHANGES)

    async def _catch_up_with_watchers(self) -> None:
        """Before an explicit run takes its dirty paths: let the watchers
        report every change made before the request (a `sync` right after a
        save came back `verified` with the save not synced)."""
        if self._catch_up is None:
            return
        try:
            await self._catch_up()
        except Exception:  # noqa: BLE001 - whatever failed, lose no change
            self._log.exception("catch_up_failed")
            self._dirty.mark_everything()

    def _explicit_pending(self) -> bool:
        return any(reason.explicit for reason in self._reasons)

    async def _wait_for_retry(self) -> None:
        """Hold automatic runs until the backoff expires; explicit ones go now."""
        assert self._retry_at is not None  # checked by the caller
        assert self._explicit is not None  # made in run()
        with anyio.move_on_after(max(0.0, self._retry_at - anyio.current_time())):
            await self._explicit.wait()

    def _take_batch(self, wake: MemoryObjectReceiveStream[None]) -> _Batch | None:
        with contextlib.suppress(anyio.WouldBlock):
            wake.receive_nowait()  # everything is taken below: no stale wake-up
        reasons, self._reasons = self._reasons, set()
        waiters, self._waiters = self._waiters, []
        force, self._force = self._force, False
        self._explicit = anyio.Event()
        if not reasons and not waiters:
            return None
        try:
            self._refuse_if_not_runnable()
        except SafetyRefusal as refusal:
            for waiter in waiters:
                waiter.finish(error=refusal)
            self._skipped_while_paused = self._paused
            return None
        if not reasons:  # waiters whose trigger was taken by a previous batch
            reasons = {RunReason.MANUAL}
        primary = min(reasons, key=REASON_PRIORITY.index)
        request = RunRequest(primary, frozenset(reasons), self._dirty.take(), force)
        return _Batch(request, waiters)

    async def _execute(self, batch: _Batch) -> None:
        request = batch.request
        log = self._log.bind(reason=request.reason.value)
        self._running, self._active = True, None
        self._running_waiters = batch.waiters
        log.debug(
            "conduit_run_started",
            reasons=sorted(request.reasons),
            dirty_paths=request.dirty.count(),
            waiters=len(batch.waiters),
        )
        try:
            result = await self._run(request)
        except anyio.get_cancelled_exc_class():
            self._dirty.restore(request.dirty)
            stopped = RunInterrupted(f"conduit {self.name} stopped during its run")
            for waiter in batch.waiters:
                waiter.finish(error=stopped)
            raise
        except Exception as exc:  # noqa: BLE001 - one conduit's failure must not stop others
            await self._failed(batch, exc, log)
        else:
            await self._succeeded(batch, result, log)
        finally:
            self._running, self._active = False, None
            self._running_waiters = []

    async def _failed(
        self, batch: _Batch, exc: Exception, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._dirty.restore(batch.request.dirty)
        self._failures += 1
        delay_s = backoff_delay_s(
            self._failures, self._backoff_initial_s, self._backoff_max_s
        )
        self._retry_at = anyio.current_time() + delay_s
        self._last_error = str(exc) or type(exc).__name__
        if isinstance(exc, ConduitdError):
            log.error("conduit_run_failed", error=self._last_error, retry_in_s=delay_s)
            error: ConduitdError = exc
        else:
            log.exception("conduit_run_failed", retry_in_s=delay_s)
            error = RunFailed(f"conduit {self.name}: {self._last_error}")
        for waiter in batch.waiters:
            waiter.finish(error=error)
        await self._store_error(self._last_error)
        if self.settings.schedule is not ScheduleKind.MANUAL:
            self.request(RunReason.RETRY)

    async def _succeeded(
        self, batch: _Batch, result: object, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        if self._failures:
            log.info("conduit_recovered", after_failures=self._failures)
        self._failures, self._retry_at = 0, None
        for waiter in batch.waiters:
            waiter.finish(result=result)
        if self._last_error is not None:
            self._last_error = None
            await self._store_error(None)

    async def _store_error(self, error: str | None) -> None:
        if self._record_error is None:
            return
        try:
            await self._record_error(error)
        except ConduitdError:
            self._log.exception("conduit_error_not_recorded")

    def _refuse_if_not_runnable(self) -> None:
        if not self.settings.enabled:
            raise SafetyRefusal(f"conduit {self.name} is disabled")
        if self._paused:
            raise SafetyRefusal(f"conduit {self.name} is paused")
