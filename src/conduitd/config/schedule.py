"""What starts a conduit's runs: manual, instant, interval:<duration>, cron:<expr>."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from conduitd.config.enums import ScheduleKind
from conduitd.config.units import parse_duration

SCHEDULE_FORMAT: Final = (
    'manual, instant, interval:<duration> (at least 1s, e.g. "interval:5m") or '
    'cron:<minute> <hour> <day> <month> <weekday> (e.g. "cron:0 3 * * *")'
)
MIN_INTERVAL_S: Final = 1.0

_MONTHS: Final = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)
# crontab numbers weekdays from Sunday (0, and 7 again); APScheduler from Monday.
_CRON_WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_APS_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ELEMENT_RE: Final = re.compile(
    r"(?P<range>\*|(?P<first>[0-9a-z]+)(?:-(?P<last>[0-9a-z]+))?)(?:/(?P<step>[0-9]+))?"
)


@dataclass(frozen=True, slots=True)
class _CronField:
    """One crontab field: its APScheduler name, its bounds, its names if any."""

    name: str
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_from: int = 0


_FIELDS: Final = (
    _CronField("minute", "minute", 0, 59),
    _CronField("hour", "hour", 0, 23),
    _CronField("day", "day of month", 1, 31),
    _CronField("month", "month", 1, 12, _MONTHS, 1),
    _CronField("day_of_week", "day of week", 0, 7, _CRON_WEEKDAYS, 0),
)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed `schedule` value; `text` is what the config said."""

    kind: ScheduleKind
    text: str
    interval_s: float | None = None
    cron: str | None = None

    def cron_trigger_fields(self) -> dict[str, str]:
        """APScheduler CronTrigger keyword arguments for a cron schedule.

        Raises:
            ValueError: this is not a cron schedule.
        """
        if self.cron is None:
            raise ValueError(f"schedule {self.text!r} is not a cron schedule")
        return cron_trigger_fields(self.cron)

    def __str__(self) -> str:
        return self.text


def parse_schedule(text: str) -> Schedule:
    """Parse `manual`, `instant`, `interval:<duration>` or `cron:<5 fields>`.

    A cron expression is also checked by building APScheduler's CronTrigger
    from it, so what passes here is what the daemon can schedule.

    Raises:
        ValueError: the message names what is wrong and what is allowed.
    """
    if text in (ScheduleKind.MANUAL, ScheduleKind.INSTANT):
        return Schedule(ScheduleKind(text), text)
    kind, sep, rest = text.partition(":")
    if sep and kind == ScheduleKind.INTERVAL:
        return Schedule(ScheduleKind.INTERVAL, text, interval_s=_interval_s(text, rest))
    if sep and kind == ScheduleKind.CRON:
        expr = " ".join(rest.split())
        try:
            fields = cron_trigger_fields(expr)
            _check_with_apscheduler(fields)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid cron schedule: {exc}") from None
        return Schedule(ScheduleKind.CRON, text, cron=expr)
    raise ValueError(f"{text!r} is not a schedule; allowed: {SCHEDULE_FORMAT}")


def _interval_s(text: str, duration: str) -> float:
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid interval: {exc}") from None
    if seconds < MIN_INTERVAL_S:
        raise ValueError(f"{text!r} is too short; allowed: an interval of at least 1s")
    return seconds


def cron_trigger_fields(expr: str) -> dict[str, str]:
    """Translate a five-field crontab expression into CronTrigger keyword arguments.

    Fields keep crontab's meaning: day of week 0 and 7 are Sunday, 1 Monday;
    weekdays come out as names (`1-5` -> `mon-fri`), since APScheduler counts
    from Monday. crontab runs a job when *either* a restricted day of month or
    a restricted day of week matches, which one CronTrigger cannot express, so
    restricting both (neither starting with `*`) is refused.

    Raises:
        ValueError: not five fields, a value out of range, or both day fields
            restricted.
    """
    parts = expr.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"expected 5 fields (minute hour day month weekday), got {len(parts)}"
        )
    if not parts[2].startswith("*") and not parts[4].startswith("*"):
        raise ValueError(
            "day of month and day of week are both restricted, which crontab reads "
            "as 'either matches' and conduitd does not support; restrict only one "
            "and write * for the other"
        )
    fields = {
        spec.name: _translate_field(spec, part.lower())
        for spec, part in zip(_FIELDS[:4], parts[:4], strict=True)
    }
    fields["day_of_week"] = _weekday_names(_weekday_numbers(parts[4].lower()))
    return fields


def _translate_field(spec: _CronField, text: str) -> str:
    """Check one field against crontab syntax; names become numbers."""
    elements = [_translate_element(spec, element) for element in text.split(",")]
    return ",".join(elements)


def _translate_element(spec: _CronField, element: str) -> str:
    match = _ELEMENT_RE.fullmatch(element)
    if match is None:
        raise ValueError(f"{spec.label}: {element!r} is not crontab syntax")
    step = match["step"]
    if step is not None and int(step) < 1:
        raise ValueError(f"{spec.label}: step in {element!r} must be at least 1")
    if match["range"] == "*":
        return element
    first = _value(spec, match["first"])
    out = str(first)
    if match["last"] is not None:
        last = _value(spec, match["last"])
        if last < first:
            raise ValueError(f"{spec.label}: range {element!r} runs backwards")
        out += f"-{last}"
    return out if step is None else f"{out}/{int(step)}"


def _value(spec: _CronField, token: str) -> int:
    if token in spec.names:
        return spec.names.index(token) + spec.names_from
    if token.isdigit() and len(token) <= 2 and spec.low <= int(token) <= spec.high:
        return int(token)
    allowed = f"{spec.low}-{spec.high}"
    if spec.names:
        allowed += f" or {', '.join(spec.names)}"
    raise ValueError(f"{spec.label}: {token!r} is not allowed; allowed: {allowed}")


def _weekday_numbers(text: str) -> set[int]:
    """crontab weekdays (0 Sunday .. 6 Saturday) a day-of-week field selects."""
    spec = _FIELDS[4]
    days: set[int] = set()
    for element in _translate_field(spec, text).split(","):
        days.update(day % 7 for day in _expand(spec, element))
    return days


def _expand(spec: _CronField, element: str) -> Iterator[int]:
    bounds, _, step = element.partition("/")
    if bounds == "*":
        first, last = spec.low, spec.high
    else:
        low, _, high = bounds.partition("-")
        first = int(low)
        # "5/2" means from 5 to the end of the range (as APScheduler and cronie).
        last = int(high) if high else (spec.high if step else first)
    return iter(range(first, last + 1, int(step) if step else 1))


def _weekday_names(days: set[int]) -> str:
    """APScheduler's day_of_week for crontab weekdays, runs of 3+ as ranges."""
    monday_first = sorted((day + 6) % 7 for day in days)
    if len(monday_first) == len(_APS_WEEKDAYS):
        return "*"
    return ",".join(_runs_as_names(monday_first))


def _runs_as_names(indices: Sequence[int]) -> Iterator[str]:
    run: list[int] = []
    for index in [*indices, -2]:
        if run and index == run[-1] + 1:
            run.append(index)
            continue
        if len(run) >= 3:
            yield f"{_APS_WEEKDAYS[run[0]]}-{_APS_WEEKDAYS[run[-1]]}"
        else:
            yield from (_APS_WEEKDAYS[i] for i in run)
        run = [index]


def _check_with_apscheduler(fields: dict[str, str]) -> None:
    """Build the CronTrigger the daemon will build; its refusal is ours."""
    # Imported here: apscheduler costs ~40 ms and most configs have no cron.
    from datetime import UTC

    from apscheduler.triggers.cron import CronTrigger

    # The zone does not change validity; naming one skips the local-zone lookup.
    CronTrigger(timezone=UTC, **fields)
