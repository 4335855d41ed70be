"""`interval:` and `cron:` schedules on APScheduler 3.11's AsyncIOScheduler.

APScheduler runs its jobs outside our task groups, so a job does one thing:
post a trigger to its conduit (a non-blocking `send_nowait` on the conduit's
1-slot trigger stream, through the `post` callback). The conduit's own task
does the work. Jobs are `async def` so the AsyncIOScheduler runs them on the
event loop, not in a worker thread where posting would not be safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from conduitd.config.enums import ScheduleKind
from conduitd.config.schedule import Schedule

logger = structlog.get_logger()

# DESIGN.md Config: a late job still runs, missed runs collapse into one, and
# a conduit never has two scheduled firings in flight.
JOB_OPTIONS: Final = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
SCHEDULED_KINDS: Final = frozenset({ScheduleKind.INTERVAL, ScheduleKind.CRON})

PostTrigger = Callable[[str], object]


@dataclass(frozen=True, slots=True)
class ScheduleChanges:
    """Job names by what `apply` did to them."""

    added: tuple[str, ...] = ()
    rescheduled: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


def build_trigger(schedule: Schedule, timezone: tzinfo | None = None) -> BaseTrigger:
    """The APScheduler trigger for an interval or cron schedule, in local time.

    Cron fields come from the config's `cron_trigger_fields` (crontab meaning:
    weekday numbers translated to names, 0 and 7 Sunday).

    Raises:
        ValueError: a manual or instant schedule has no trigger.
    """
    if schedule.kind is ScheduleKind.INTERVAL and schedule.interval_s is not None:
        return IntervalTrigger(seconds=schedule.interval_s, timezone=timezone)
    if schedule.kind is ScheduleKind.CRON:
        return CronTrigger(timezone=timezone, **schedule.cron_trigger_fields())
    raise ValueError(f"schedule {schedule.text!r} has no timed trigger")


class ConduitScheduler:
    """One APScheduler job per interval or cron conduit, named after it.

    Args:
        post: called with the conduit's name when its job fires; must not
            block (the supervisor passes `ConduitTask.request`).
        timezone: where cron fields are read; None is the local zone.
    """

    def __init__(self, post: PostTrigger, *, timezone: tzinfo | None = None) -> None:
        self._post = post
        self._timezone = timezone
        options = {"timezone": timezone} if timezone is not None else {}
        self._scheduler = AsyncIOScheduler(job_defaults=dict(JOB_OPTIONS), **options)
        self._schedules: dict[str, Schedule] = {}

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the scheduler on this event loop until cancelled."""
        self._scheduler.start()
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            # AsyncIOScheduler.shutdown queues itself on the loop; let it run.
            self._scheduler.shutdown(wait=False)
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()

    def apply(self, schedules: Mapping[str, Schedule]) -> ScheduleChanges:
        """Make the jobs match `schedules` (name -> schedule of each enabled conduit).

        Manual and instant schedules get no job. A conduit whose schedule did
        not change keeps its job and its next run time untouched.
        """
        wanted = {n: s for n, s in schedules.items() if s.kind in SCHEDULED_KINDS}
        added, rescheduled, unchanged = [], [], []
        for name, schedule in wanted.items():
            current = self._schedules.get(name)
            if current == schedule:
                unchanged.append(name)
                continue
            trigger = build_trigger(schedule, self._timezone)
            if current is None:
                self._scheduler.add_job(
                    self._fire, trigger, args=(name,), id=name, name=name
                )
                added.append(name)
            else:
                self._scheduler.reschedule_job(name, trigger=trigger)
                rescheduled.append(name)
            self._schedules[name] = schedule
        removed = [name for name in self._schedules if name not in wanted]
        for name in removed:
            self._scheduler.remove_job(name)
            del self._schedules[name]
        changes = ScheduleChanges(
            tuple(added), tuple(rescheduled), tuple(removed), tuple(unchanged)
        )
        if added or rescheduled or removed:
            logger.info(
                "schedules_applied",
                added=changes.added,
                rescheduled=changes.rescheduled,
                removed=changes.removed,
            )
        return changes

    def next_run(self, name: str) -> datetime | None:
        """When the conduit's job fires next (aware), or None without a job."""
        job = self._scheduler.get_job(name) if name in self._schedules else None
        if job is None:
            return None
        when = getattr(job, "next_run_time", None)
        if when is None:  # not started yet: ask the trigger
            when = job.trigger.get_next_fire_time(None, datetime.now(self._zone()))
        return when if isinstance(when, datetime) else None

    def job_options(self, name: str) -> dict[str, object]:
        """The job's misfire/coalesce/instances settings (for tests and status dumps)."""
        job = self._scheduler.get_job(name)
        return {key: getattr(job, key) for key in JOB_OPTIONS}

    async def _fire(self, name: str) -> None:
        # Runs on the event loop, outside our task groups: post and return.
        self._post(name)

    def _zone(self) -> tzinfo:
        zone = self._scheduler.timezone
        assert isinstance(zone, tzinfo)  # APScheduler resolves it at construction
        return zone
