"""ConduitScheduler and the cron/interval triggers it builds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from conduitd.config.enums import ScheduleKind
from conduitd.config.schedule import Schedule, parse_schedule
from conduitd.daemon.schedules import ConduitScheduler, build_trigger


def interval(seconds: float) -> Schedule:
    # Below the config's 1 s minimum on purpose: the scheduler does not care.
    return Schedule(ScheduleKind.INTERVAL, f"interval:{seconds}s", interval_s=seconds)


def next_fire(schedule: str, after: datetime) -> datetime:
    trigger = build_trigger(parse_schedule(schedule), UTC)
    fire = trigger.get_next_fire_time(None, after)
    assert isinstance(fire, datetime)
    return fire


def test_cron_weekday_numbers_keep_crontab_meaning() -> None:
    trigger = build_trigger(parse_schedule("cron:30 2 * * 1-5"), UTC)
    fields = {field.name: str(field) for field in trigger.fields}
    assert fields["day_of_week"] == "mon-fri"
    assert fields["hour"] == "2"
    assert fields["minute"] == "30"
    saturday = datetime(2024, 6, 1, tzinfo=UTC)
    assert next_fire("cron:30 2 * * 1-5", saturday) == datetime(
        2024, 6, 3, 2, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("sunday", ["0", "7", "sun"])
def test_cron_sunday_is_zero_seven_or_sun(sunday: str) -> None:
    monday = datetime(2024, 6, 3, 12, tzinfo=UTC)
    assert next_fire(f"cron:0 4 * * {sunday}", monday) == datetime(
        2024, 6, 9, 4, tzinfo=UTC
    )


def test_manual_and_instant_have_no_trigger() -> None:
    for text in ("manual", "instant"):
        with pytest.raises(ValueError, match="no timed trigger"):
            build_trigger(parse_schedule(text))


async def test_interval_job_posts_a_trigger_repeatedly() -> None:
    fired: list[str] = []
    arrived = anyio.Event()

    def post(name: str) -> None:
        fired.append(name)
        if len(fired) >= 2:
            arrived.set()

    scheduler = ConduitScheduler(post)
    scheduler.apply({"photos": interval(0.05), "notes": parse_schedule("manual")})
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        assert scheduler.job_options("photos") == {
            "misfire_grace_time": None,
            "coalesce": True,
            "max_instances": 1,
        }
        with anyio.fail_after(5):
            await arrived.wait()
        tg.cancel_scope.cancel()
    assert set(fired) == {"photos"}


async def test_apply_leaves_unchanged_jobs_alone() -> None:
    scheduler = ConduitScheduler(lambda name: None, timezone=UTC)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        first = scheduler.apply(
            {"a": interval(3600), "b": parse_schedule("cron:0 3 * * *")}
        )
        assert first.added == ("a", "b")
        a_next = scheduler.next_run("a")
        changes = scheduler.apply(
            {"a": interval(3600), "b": parse_schedule("cron:0 4 * * *")}
        )
        assert changes.unchanged == ("a",)
        assert changes.rescheduled == ("b",)
        assert scheduler.next_run("a") == a_next
        b_next = scheduler.next_run("b")
        assert b_next is not None
        assert b_next.hour == 4
        removed = scheduler.apply({"b": parse_schedule("cron:0 4 * * *")})
        assert removed.removed == ("a",)
        assert scheduler.next_run("a") is None
        tg.cancel_scope.cancel()


async def test_next_run_is_known_before_the_scheduler_starts() -> None:
    scheduler = ConduitScheduler(lambda name: None, timezone=UTC)
    scheduler.apply({"a": interval(60)})
    when = scheduler.next_run("a")
    assert when is not None
    assert when - datetime.now(UTC) <= timedelta(seconds=61)
