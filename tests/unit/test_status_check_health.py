"""`status --check`, pure: failed and refused runs, interval and cron staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from conduitd.config.schedule import parse_schedule
from conduitd.health import check_status, cron_period
from conduitd.timeutil import format_utc

NOW = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)


def conduit(name: str = "photos", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": "manual",
        "enabled": True,
        "paused": False,
        "last_checked_at": None,
        "active": None,
        "last_generation": None,
        "last_error": None,
        **fields,
    }


def generation(status: str = "verified", errors: int = 0) -> dict[str, Any]:
    return {
        "generation": 4,
        "verification_status": status,
        "errors_encountered": errors,
    }


def ago(**delta: float) -> str:
    return format_utc(NOW - timedelta(**delta))


def reasons(
    *conduits: dict[str, Any], daemon: dict[str, Any] | None = None
) -> list[str]:
    document = {"daemon": daemon, "conduits": list(conduits)}
    return [p.line() for p in check_status(document, NOW)]


def test_verified_and_never_run_manual_conduits_are_healthy() -> None:
    assert reasons(conduit(last_generation=generation()), conduit("new")) == []


def test_failed_verification_errors_and_refusals_are_unhealthy() -> None:
    found = reasons(
        conduit("a", last_generation=generation("failed:work_remains")),
        conduit("b", last_generation=generation(errors=2)),
        conduit("c", last_error="refused: not enough free space on /mnt"),
    )
    assert found == [
        "a: generation 4 failed:work_remains",
        "b: generation 4: 2 path(s) failed",
        "c: last run failed: refused: not enough free space on /mnt",
    ]


def test_paused_and_disabled_conduits_do_not_count() -> None:
    assert (
        reasons(
            conduit("p", paused=True, last_error="boom"),
            conduit("d", enabled=False, last_error="boom"),
        )
        == []
    )


def test_interval_conduit_is_stale_after_twice_its_period() -> None:
    fresh = conduit("fresh", schedule="interval:1h", last_checked_at=ago(minutes=90))
    stale = conduit("stale", schedule="interval:1h", last_checked_at=ago(hours=3))
    [line] = reasons(fresh, stale)
    assert line.startswith("stale: last checked 3.0h ago")


def test_a_conduit_that_never_ran_counts_from_daemon_start() -> None:
    never = conduit("never", schedule="interval:10m")
    assert reasons(never, daemon={"started_at": ago(minutes=15)}) == []
    [line] = reasons(never, daemon={"started_at": ago(minutes=25)})
    assert "never checked since the daemon started" in line
    [line] = reasons(never)
    assert "no daemon is running" in line


def test_cron_staleness_uses_the_gap_between_its_last_two_fire_times() -> None:
    daily = parse_schedule("cron:0 3 * * *")
    assert cron_period(daily, NOW) == timedelta(days=1)
    weekdays = parse_schedule("cron:30 2 * * 1-5")
    assert cron_period(weekdays, NOW) == timedelta(days=1)
    ok = conduit("ok", schedule="cron:0 3 * * *", last_checked_at=ago(hours=40))
    late = conduit("late", schedule="cron:0 3 * * *", last_checked_at=ago(hours=50))
    assert [line.split(":")[0] for line in reasons(ok, late)] == ["late"]
