"""Schedules: manual, instant, interval and cron with crontab's weekdays."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from apscheduler.triggers.cron import CronTrigger

from conduitd.config import ScheduleKind, cron_trigger_fields, parse_schedule

MONDAY = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["manual", "instant"])
def test_manual_and_instant_carry_no_timing(text: str) -> None:
    schedule = parse_schedule(text)
    assert schedule.kind == ScheduleKind(text)
    assert (schedule.interval_s, schedule.cron, schedule.text) == (None, None, text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("interval:5m", 300.0), ("interval:1s", 1.0)]
)
def test_interval_carries_its_seconds(text: str, seconds: float) -> None:
    schedule = parse_schedule(text)
    assert (schedule.kind, schedule.interval_s, schedule.text) == (
        ScheduleKind.INTERVAL,
        seconds,
        text,
    )


@pytest.mark.parametrize("text", ["interval:500ms", "interval:999ms"])
def test_interval_under_one_second_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="at least 1s"):
        parse_schedule(text)


@pytest.mark.parametrize(
    "text", ["interval:", "interval:0s", "interval:5 m", "interval:5"]
)
def test_interval_needs_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a valid interval: .* is not a duration"):
        parse_schedule(text)


@pytest.mark.parametrize(
    "text", ["", "hourly", "Manual", "instant ", "every:5m", "cron"]
)
def test_unknown_schedule_lists_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match="is not a schedule; allowed: manual, instant"):
        parse_schedule(text)


@pytest.mark.parametrize(
    ("weekdays", "expected"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1", "mon"),
        ("1-5", "mon-fri"),
        ("*/2", "tue,thu,sat,sun"),
        ("1,3,5", "mon,wed,fri"),
        ("1-5/2", "mon,wed,fri"),
        ("5-7", "fri-sun"),
        ("0-2", "mon,tue,sun"),
        ("6/1", "sat,sun"),
        ("sat,sun", "sat,sun"),
        ("MON-FRI", "mon-fri"),
        ("*", "*"),
        ("0-7", "*"),
        ("0-6", "*"),
    ],
)
def test_cron_weekdays_keep_crontab_meaning(weekdays: str, expected: str) -> None:
    assert cron_trigger_fields(f"0 3 * * {weekdays}")["day_of_week"] == expected


def test_cron_fields_map_to_crontrigger_keywords() -> None:
    assert cron_trigger_fields("*/15 9-17 * jan-mar 1-5") == {
        "minute": "*/15",
        "hour": "9-17",
        "day": "*",
        "month": "1-3",
        "day_of_week": "mon-fri",
    }


@pytest.mark.parametrize(
    ("expr", "after", "fires"),
    [
        ("0 3 * * 0", MONDAY, datetime(2024, 1, 7, 3, 0, tzinfo=UTC)),
        ("0 3 * * 7", MONDAY, datetime(2024, 1, 7, 3, 0, tzinfo=UTC)),
        ("0 3 * * */2", MONDAY.replace(hour=4), datetime(2024, 1, 2, 3, 0, tzinfo=UTC)),
        ("30 2 * * 6", MONDAY, datetime(2024, 1, 6, 2, 30, tzinfo=UTC)),
    ],
)
def test_cron_trigger_fires_when_crontab_would(
    expr: str, after: datetime, fires: datetime
) -> None:
    trigger = CronTrigger(timezone=UTC, **cron_trigger_fields(expr))
    assert trigger.get_next_fire_time(None, after) == fires


def test_cron_schedule_keeps_the_text_and_normalises_the_expression() -> None:
    schedule = parse_schedule("cron:0  3 * *\t0")
    assert (schedule.kind, schedule.text, schedule.cron) == (
        ScheduleKind.CRON,
        "cron:0  3 * *\t0",
        "0 3 * * 0",
    )
    assert schedule.cron_trigger_fields()["day_of_week"] == "sun"


def test_non_cron_schedule_has_no_trigger_fields() -> None:
    with pytest.raises(ValueError, match="not a cron schedule"):
        parse_schedule("instant").cron_trigger_fields()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cron:0 3 * *", "expected 5 fields"),
        ("cron:0 3 * * * *", "expected 5 fields"),
        ("cron:@daily", "expected 5 fields"),
        ("cron:61 * * * *", "minute: '61' is not allowed; allowed: 0-59"),
        ("cron:0 24 * * *", "hour: '24'"),
        ("cron:0 3 0 * *", "day of month: '0'"),
        ("cron:0 3 * 13 *", "month: '13'"),
        ("cron:0 3 * * 8", "day of week: '8'"),
        ("cron:0 3 * * 5-1", "runs backwards"),
        ("cron:0 3 * * mon#2", "not crontab syntax"),
        ("cron:0 3 L * *", "day of month: 'l'"),
        ("cron:*/0 3 * * *", "step"),
        ("cron:0 3 1 * 1", "both restricted"),
        ("cron:0 3 1-15 * mon-fri", "both restricted"),
    ],
)
def test_invalid_cron_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="is not a valid cron schedule") as info:
        parse_schedule(text)
    assert reason in str(info.value)


def test_cron_with_a_starred_day_field_is_anded_as_in_crontab() -> None:
    assert cron_trigger_fields("0 3 */2 * 1")["day_of_week"] == "mon"
