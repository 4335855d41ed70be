"""Trash retention, pure: by age, by size (oldest first), last copies kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from conduitd.storage.trash_rows import TrashReason, TrashRow, TrashTotals
from conduitd.sync.trash_retention import (
    RetentionPolicy,
    last_copies,
    select_prunable,
)
from conduitd.timeutil import format_utc

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = 86_400.0


def row(
    row_id: int, path: bytes, generation: int, age_days: float, size: int = 10
) -> TrashRow:
    return TrashRow(
        id=row_id,
        conduit_id=1,
        generation=generation,
        root="target",
        relative_path=path,
        trash_path=b".conduitd/trash/%d/%s" % (generation, path),
        reason=TrashReason.OVERWRITTEN,
        size=size,
        mtime_ns=0,
        content_id=None,
        trashed_at=format_utc(NOW - timedelta(days=age_days)),
    )


def ids(rows: list[TrashRow]) -> list[int]:
    return [r.id for r in rows]


def test_versions_older_than_the_retention_are_pruned() -> None:
    rows = [row(1, b"a", 1, 40), row(2, b"a", 2, 31), row(3, b"a", 3, 2)]
    policy = RetentionPolicy(max_age_s=30 * DAY, max_bytes=None)
    assert ids(select_prunable(rows, policy, NOW, live_paths={b"a"})) == [1, 2]


def test_over_the_cap_the_oldest_generations_go_first() -> None:
    rows = [
        row(3, b"c", 3, 1, size=100),
        row(1, b"a", 1, 3, size=100),
        row(2, b"b", 2, 2, size=100),
    ]
    policy = RetentionPolicy(max_age_s=None, max_bytes=150)
    live = {b"a", b"b", b"c"}
    assert ids(select_prunable(rows, policy, NOW, live)) == [1, 2]
    assert select_prunable(rows, RetentionPolicy(None, 300), NOW, live) == []


def test_the_last_copy_of_a_vanished_path_is_kept_whatever_its_age_or_size() -> None:
    rows = [
        row(1, b"gone.txt", 1, 90, size=1000),
        row(2, b"gone.txt", 2, 60, size=1000),
        row(3, b"alive.txt", 1, 90, size=1000),
    ]
    policy = RetentionPolicy(max_age_s=30 * DAY, max_bytes=0)
    live = {b"alive.txt"}
    assert last_copies(rows, live) == {2}
    assert ids(select_prunable(rows, policy, NOW, live)) == [1, 3]


def test_age_then_size_together() -> None:
    rows = [row(1, b"a", 1, 40), row(2, b"b", 2, 5, 50), row(3, b"c", 3, 1, 50)]
    policy = RetentionPolicy(max_age_s=30 * DAY, max_bytes=60)
    assert ids(select_prunable(rows, policy, NOW, {b"a", b"b", b"c"})) == [1, 2]


def totals(rows: list[TrashRow]) -> TrashTotals:
    oldest = min((r.trashed_at for r in rows), default=None)
    return TrashTotals(len(rows), sum(r.size for r in rows), oldest)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"a", b"b", b"c"]),
            st.floats(min_value=0, max_value=90),
            st.integers(min_value=0, max_value=200),
        ),
        max_size=8,
    ),
    st.one_of(st.none(), st.floats(min_value=0, max_value=60)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=800)),
    st.sets(st.sampled_from([b"a", b"b", b"c"])),
)
def test_the_shortcut_skips_only_runs_that_would_prune_nothing(
    specs: list[tuple[bytes, float, int]],
    age_days: float | None,
    max_bytes: int | None,
    live: set[bytes],
) -> None:
    """Runs skip loading the rows when `may_prune` says no: it must never
    say no where `select_prunable` would choose something."""
    rows = [row(i, path, i, age, size) for i, (path, age, size) in enumerate(specs, 1)]
    policy = RetentionPolicy(None if age_days is None else age_days * DAY, max_bytes)
    if not policy.may_prune(totals(rows), NOW):
        assert select_prunable(rows, policy, NOW, live) == []
