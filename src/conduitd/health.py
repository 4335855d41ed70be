"""`status --check` (issue 9): is every conduit healthy? For scripts and monitoring.

A conduit counts when it is enabled and not paused. It is unhealthy when its
last run failed or was refused (a last error, per-path errors, or failed
verification), or when an interval or cron conduit has not resolved for
twice its period (cron: twice the gap between its last two fire times); a
conduit that never resolved counts from the daemon's start, and is unhealthy
at once when no daemon runs to schedule it. Works on the `status` document
alone, so it reads the same with and without a daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from conduitd.config.enums import ScheduleKind
from conduitd.config.schedule import Schedule, parse_schedule
from conduitd.timeutil import parse_utc

# Look back at most this far for a cron schedule's last two fire times.
_CRON_LOOKBACK: Final = timedelta(days=800)
_CRON_FIRST_WINDOW: Final = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Problem:
    """One unhealthy conduit and why."""

    conduit: str
    reason: str

    def line(self) -> str:
        return f"{self.conduit}: {self.reason}"


def cron_period(schedule: Schedule, now: datetime) -> timedelta | None:
    """The gap between the cron schedule's last two fire times before `now`."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger(**schedule.cron_trigger_fields())  # local time
    window = _CRON_FIRST_WINDOW
    while window <= _CRON_LOOKBACK:
        fires = _fires_between(trigger, now - window, now)
        if len(fires) >= 2:
            return fires[-1] - fires[-2]
        window *= 2
    return None


def _fires_between(trigger: Any, start: datetime, end: datetime) -> list[datetime]:
    fires: list[datetime] = []
    previous = None
    moment = start
    while True:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None or fire > end:
            return fires
        fires.append(fire)
        previous, moment = fire, fire + timedelta(microseconds=1)


def period_of(schedule_text: str, now: datetime) -> timedelta | None:
    """How often the schedule fires (interval or cron); None for manual/instant."""
    try:
        schedule = parse_schedule(schedule_text)
    except ValueError:
        return None
    if schedule.kind is ScheduleKind.INTERVAL and schedule.interval_s is not None:
        return timedelta(seconds=schedule.interval_s)
    if schedule.kind is ScheduleKind.CRON:
        return cron_period(schedule, now)
    return None


def conduit_problem(
    conduit: Mapping[str, Any], daemon_started_at: str | None, now: datetime
) -> str | None:
    """Why one status conduit object is unhealthy, or None."""
    if not conduit.get("enabled", True) or conduit.get("paused"):
        return None
    if conduit.get("last_error"):
        return f"last run failed: {conduit['last_error']}"
    last = conduit.get("last_generation")
    if isinstance(last, Mapping) and conduit.get("active") is None:
        status = str(last.get("verification_status", ""))
        if status.startswith("failed:"):
            return f"generation {last.get('generation')} {status}"
        if last.get("errors_encountered"):
            return (
                f"generation {last.get('generation')}:"
                f" {last['errors_encountered']} path(s) failed"
            )
    return _staleness(conduit, daemon_started_at, now)


def _staleness(
    conduit: Mapping[str, Any], daemon_started_at: str | None, now: datetime
) -> str | None:
    period = period_of(str(conduit.get("schedule", "")), now)
    if period is None:
        return None
    checked = conduit.get("last_checked_at")
    since = checked or daemon_started_at
    if since is None:
        return "never checked, and no daemon is running to schedule it"
    age = now - parse_utc(str(since))
    if age <= 2 * period:
        return None
    what = "last checked" if checked else "never checked since the daemon started"
    return (
        f"{what} {_duration(age)} ago, more than twice its period ({_duration(period)})"
    )


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds}s"


def check_status(document: Mapping[str, Any], now: datetime) -> list[Problem]:
    """Every unhealthy conduit of a `status --json` document."""
    daemon = document.get("daemon")
    started = daemon.get("started_at") if isinstance(daemon, Mapping) else None
    conduits: Sequence[Mapping[str, Any]] = document.get("conduits", [])
    problems = []
    for conduit in conduits:
        reason = conduit_problem(conduit, started, now)
        if reason is not None:
            problems.append(Problem(str(conduit.get("name")), reason))
    return problems
