"""ConduitTask: debouncing, coalescing, backoff, disabled and paused conduits.

Short durations, real time, event-based assertions: a test waits for the
run it expects (inside fail_after) and proves "nothing else was pending" by
asking for one more explicit run and checking it carries only its own reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from conduitd.config.enums import ScheduleKind, SyncMode
from conduitd.daemon.conduit_task import ConduitTask
from conduitd.daemon.dirty import Side
from conduitd.daemon.runs import (
    RunInterrupted,
    RunReason,
    RunRequest,
    TaskSettings,
    backoff_delay_s,
)
from conduitd.errors import SafetyRefusal


class Recorder:
    """A run function that reports each call and can be held at a gate."""

    def __init__(self, failures: int = 0) -> None:
        self.requests: list[RunRequest] = []
        self.failures = failures
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()
        self._arrived = anyio.Event()
        self._seen = 0

    async def __call__(self, request: RunRequest) -> object:
        self.requests.append(request)
        arrived, self._arrived = self._arrived, anyio.Event()
        arrived.set()
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if len(self.requests) <= self.failures:
            raise OSError(f"source vanished (call {len(self.requests)})")
        return {"run": len(self.requests)}

    async def next_call(self, timeout_s: float = 5) -> RunRequest:
        with anyio.fail_after(timeout_s):
            while len(self.requests) <= self._seen:
                await self._arrived.wait()
        self._seen += 1
        return self.requests[self._seen - 1]


@asynccontextmanager
async def running(task: ConduitTask) -> AsyncIterator[ConduitTask]:
    async with anyio.create_task_group() as tg:
        await tg.start(task.run)
        yield task
        tg.cancel_scope.cancel()


def settings(schedule: ScheduleKind, **changes: object) -> TaskSettings:
    values: dict[str, object] = {"name": "photos", "schedule": schedule, **changes}
    return TaskSettings(**values)  # type: ignore[arg-type]  # test shorthand


async def assert_nothing_pending(task: ConduitTask, recorder: Recorder) -> None:
    """A fresh explicit run carries only its own reason: nothing was queued."""
    with anyio.fail_after(5):
        await task.sync_now(RunReason.MANUAL)
    assert recorder.requests[-1].reasons == {RunReason.MANUAL}


async def test_debounce_collapses_a_burst_into_one_run() -> None:
    recorder = Recorder()
    task = ConduitTask(settings(ScheduleKind.INSTANT, debounce_s=0.05), recorder)
    async with running(task):
        assert (await recorder.next_call()).reason is RunReason.STARTUP
        for index in range(20):
            task.notify_changes(Side.SOURCE, [f"photo-{index}.jpg".encode()])
            await anyio.lowlevel.checkpoint()
        burst = await recorder.next_call()
        assert burst.reasons == {RunReason.CHANGES}
        assert burst.dirty.source == {f"photo-{i}.jpg".encode() for i in range(20)}
        await assert_nothing_pending(task, recorder)
    assert len(recorder.requests) == 3


async def test_max_delay_forces_a_run_under_a_steady_stream() -> None:
    recorder = Recorder()
    task = ConduitTask(
        settings(ScheduleKind.INSTANT, debounce_s=0.2, max_delay_s=0.3), recorder
    )
    async with running(task):
        await recorder.next_call()  # startup
        recorder.entered = anyio.Event()
        sent = 0
        with anyio.fail_after(5):
            # Changes arrive far faster than the quiet time: only max_delay can
            # start a run while this loop is still producing.
            while not recorder.entered.is_set():
                task.notify_changes(Side.SOURCE, [f"log-{sent}".encode()])
                sent += 1
                await anyio.sleep(0.02)
        forced = recorder.requests[-1]
        assert forced.reason is RunReason.CHANGES
        assert forced.dirty.source is not None
        assert 0 < len(forced.dirty.source) <= sent


async def test_triggers_during_a_run_coalesce_into_exactly_one_follow_up() -> None:
    recorder = Recorder()
    recorder.gate = anyio.Event()
    task = ConduitTask(settings(ScheduleKind.MANUAL), recorder)
    results: list[object] = []

    async def sync_and_keep() -> None:
        results.append(await task.sync_now())

    async with running(task), anyio.create_task_group() as callers:
        callers.start_soon(sync_and_keep)
        first = await recorder.next_call()
        assert first.reasons == {RunReason.MANUAL}
        for _ in range(5):
            assert task.request(RunReason.SCHEDULE)
        callers.start_soon(sync_and_keep)
        callers.start_soon(sync_and_keep)
        await wait_all_tasks_blocked()
        recorder.gate.set()
        follow_up = await recorder.next_call()
        assert follow_up.reasons == {RunReason.SCHEDULE, RunReason.MANUAL}
        assert follow_up.reason is RunReason.MANUAL
    assert results == [{"run": 1}, {"run": 2}, {"run": 2}]
    assert len(recorder.requests) == 2


async def test_failed_runs_are_retried_with_growing_backoff() -> None:
    recorder = Recorder(failures=2)
    recorded: list[str | None] = []

    async def record_error(error: str | None) -> None:
        recorded.append(error)

    task = ConduitTask(
        settings(ScheduleKind.INTERVAL),
        recorder,
        record_error=record_error,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )
    async with running(task):
        assert (await recorder.next_call()).reason is RunReason.STARTUP
        assert (await recorder.next_call()).reason is RunReason.RETRY
        assert (await recorder.next_call()).reason is RunReason.RETRY
        await wait_all_tasks_blocked()
        runtime = task.runtime()
    assert recorded == [
        "source vanished (call 1)",
        "source vanished (call 2)",
        None,
    ]
    assert runtime.last_error is None
    assert runtime.consecutive_failures == 0


async def test_failure_keeps_dirty_paths_and_reports_last_error() -> None:
    recorder = Recorder(failures=1)
    task = ConduitTask(settings(ScheduleKind.MANUAL), recorder, backoff_initial_s=60)
    async with running(task):
        task.notify_changes(Side.TARGET, [b"a.txt"])
        with pytest.raises(Exception, match="source vanished"):
            await task.sync_now()
        runtime = task.runtime()
        assert runtime.last_error == "source vanished (call 1)"
        assert runtime.retry_in_s is not None
        # Explicit runs do not wait out the backoff; the failed run's paths
        # are handed to the next one.
        task.notify_changes(Side.TARGET, [b"b.txt"])
        with anyio.fail_after(5):
            await task.sync_now()
    assert recorder.requests[1].dirty.is_everything  # nothing known at start


def test_backoff_doubles_and_is_capped() -> None:
    delays = [backoff_delay_s(n, 1.0, 300.0) for n in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == 300.0
    assert backoff_delay_s(10_000, 1.0, 300.0) == 300.0


async def test_disabled_conduit_never_runs() -> None:
    recorder = Recorder()
    task = ConduitTask(settings(ScheduleKind.INSTANT, enabled=False), recorder)
    async with running(task):
        task.notify_changes(Side.SOURCE, [b"new.txt"])
        assert not task.request(RunReason.SIGNAL)
        with pytest.raises(SafetyRefusal, match="disabled"):
            await task.sync_now()
        await wait_all_tasks_blocked()
    assert recorder.requests == []


async def test_paused_conduit_skips_automatic_runs_and_catches_up_on_resume() -> None:
    recorder = Recorder()
    task = ConduitTask(settings(ScheduleKind.INSTANT), recorder, paused=True)
    async with running(task):
        task.notify_changes(Side.SOURCE, [b"while-paused.txt"])
        assert not task.request(RunReason.SCHEDULE)
        with pytest.raises(SafetyRefusal, match="paused"):
            await task.sync_now()
        await wait_all_tasks_blocked()
        assert recorder.requests == []
        task.set_paused(False)
        catch_up = await recorder.next_call()
        assert catch_up.dirty.is_everything


async def test_own_writes_neither_dirty_nor_trigger() -> None:
    recorder = Recorder()
    task = ConduitTask(
        settings(ScheduleKind.INSTANT, mode=SyncMode.BIDIRECTIONAL), recorder
    )
    async with running(task):
        await recorder.next_call()  # startup
        task.expected_writes.expect(Side.SOURCE, [b"docs/report.txt"])
        assert task.notify_changes(Side.SOURCE, [b"docs/report.txt", b"docs"]) == 0
        assert task.notify_changes(Side.TARGET, [b".conduitd/tmp/x", b".conduitd"]) == 0
        await wait_all_tasks_blocked()
        assert len(recorder.requests) == 1
        # A user's change beside ours still counts.
        assert task.notify_changes(Side.SOURCE, [b"docs/other.txt"]) == 1
        changed = await recorder.next_call()
        assert changed.dirty.source == {b"docs/other.txt"}
        task.expected_writes.clear(Side.SOURCE)
        assert task.notify_changes(Side.SOURCE, [b"docs/report.txt"]) == 1


async def test_mirror_target_changes_dirty_but_do_not_trigger() -> None:
    recorder = Recorder()
    task = ConduitTask(settings(ScheduleKind.INSTANT), recorder)
    async with running(task):
        await recorder.next_call()  # startup
        task.notify_changes(Side.TARGET, [b"edited-on-target.txt"])
        await wait_all_tasks_blocked()
        assert len(recorder.requests) == 1
        await task.sync_now()
    assert recorder.requests[-1].dirty.target == {b"edited-on-target.txt"}


async def test_stopping_the_task_interrupts_waiting_callers() -> None:
    recorder = Recorder()
    recorder.gate = anyio.Event()
    task = ConduitTask(settings(ScheduleKind.MANUAL), recorder)
    outcome: list[BaseException] = []

    async def sync_and_keep() -> None:
        try:
            await task.sync_now()
        except RunInterrupted as error:
            outcome.append(error)

    async with anyio.create_task_group() as tg:
        await tg.start(task.run)
        tg.start_soon(sync_and_keep)
        await recorder.next_call()
        task.stop()
    assert len(outcome) == 1
