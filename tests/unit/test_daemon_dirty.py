"""Dirty-path accounting and the expected-writes filter (pure)."""

from __future__ import annotations

from conduitd.daemon.dirty import (
    DirtyPaths,
    DirtyTracker,
    ExpectedWrites,
    Side,
    is_internal,
)


def test_tracker_starts_with_everything_dirty() -> None:
    assert DirtyTracker().take().is_everything


def test_tracker_accumulates_per_side_until_taken() -> None:
    tracker = DirtyTracker()
    tracker.take()
    tracker.add(Side.SOURCE, [b"a", b"b"])
    tracker.add(Side.SOURCE, [b"a"])
    tracker.add(Side.TARGET, [b"c"])
    assert tracker.take() == DirtyPaths(frozenset({b"a", b"b"}), frozenset({b"c"}))
    assert tracker.take().is_empty


def test_overflow_past_the_limit_means_everything_on_that_side() -> None:
    tracker = DirtyTracker(limit=3)
    tracker.take()
    tracker.add(Side.SOURCE, [b"1", b"2", b"3", b"4"])
    tracker.add(Side.TARGET, [b"x"])
    taken = tracker.take()
    assert taken.source is None
    assert taken.target == {b"x"}
    assert taken.count() is None


def test_restore_merges_a_failed_runs_paths_back() -> None:
    tracker = DirtyTracker()
    tracker.take()
    tracker.add(Side.SOURCE, [b"a"])
    failed = tracker.take()
    tracker.add(Side.SOURCE, [b"b"])
    tracker.restore(failed)
    assert tracker.take().source == {b"a", b"b"}
    tracker.restore(DirtyPaths(None, frozenset()))
    assert tracker.take().source is None


def test_expected_writes_cover_the_path_and_its_parents_only() -> None:
    expected = ExpectedWrites()
    expected.expect(Side.TARGET, [b"a/b/c.txt"])
    assert expected.is_expected(Side.TARGET, b"a/b/c.txt")
    assert expected.is_expected(Side.TARGET, b"a/b")
    assert expected.is_expected(Side.TARGET, b"a")
    assert expected.is_expected(Side.TARGET, b"")
    assert not expected.is_expected(Side.TARGET, b"a/b/d.txt")
    assert not expected.is_expected(Side.SOURCE, b"a/b/c.txt")
    expected.clear(Side.TARGET)
    assert not expected.is_expected(Side.TARGET, b"a/b/c.txt")
    assert len(expected) == 0


def test_internal_paths_are_recognised() -> None:
    assert is_internal(b".conduitd")
    assert is_internal(b".conduitd/trash/3/x")
    assert not is_internal(b".conduitdx")
    assert not is_internal(b"photos/.conduitd")
