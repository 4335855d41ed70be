"""Index logic without a filesystem: states, root verdicts, markers, events, feed."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anyio
import pytest
from watchfiles import Change

from conduitd.index.feed import ChangeFeed
from conduitd.index.identity import RootInspection, RootVerdict, judge_root
from conduitd.index.marker import (
    Marker,
    MarkerRead,
    MarkerStatus,
    barrier_token,
    classify_marker,
)
from conduitd.index.state import TRANSITIONS, IndexStep, InvalidTransition, advance
from conduitd.index.store import updated_digests
from conduitd.index.walk import child_term, digest_with, is_conduitd_path, needs_hash
from conduitd.index.watcher import ConduitdTmpFilter, translate
from conduitd.storage.entries import is_within, parent_path
from conduitd.storage.locations import LocationRecord, LocationState

LIBRARY = uuid.uuid4()
LOCATION = uuid.uuid4()
DEVICE = uuid.uuid4()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _location(**changes: object) -> LocationRecord:
    fields: dict[str, object] = {
        "id": 1,
        "uuid": LOCATION,
        "device_id": str(DEVICE),
        "entry_id": 1,
        "name": "root",
        "path": Path("/data/root"),
        "st_dev": 42,
        "root_inode": 7,
        "index_mode": "deep",
        "state": LocationState.READY,
        "index_lost": False,
        "last_scan_at": None,
        "total_file_count": 0,
        "total_byte_size": 0,
        "version": 1,
        "has_marker": True,
    }
    fields.update(changes)
    return LocationRecord(**fields)  # type: ignore[arg-type]


def _stat(dev: int = 42, ino: int = 7) -> os.stat_result:
    return os.stat_result((0o40755, ino, dev, 1, 0, 0, 0, 0, 0, 0))


def _ours() -> MarkerRead:
    return MarkerRead(exists=True, marker=Marker(LIBRARY, LOCATION, DEVICE))


def test_every_state_step_pair_is_decided_except_completion_when_unmounted() -> None:
    missing = {
        (state, step)
        for state in LocationState
        for step in IndexStep
        if (state, step) not in TRANSITIONS
    }
    assert missing == {(LocationState.UNMOUNTED, IndexStep.SCAN_COMPLETED)}
    with pytest.raises(InvalidTransition):
        advance(LocationState.UNMOUNTED, IndexStep.SCAN_COMPLETED)


def test_root_lost_always_means_unmounted_and_a_scan_start_means_scanning() -> None:
    for state in LocationState:
        assert advance(state, IndexStep.ROOT_LOST) is LocationState.UNMOUNTED
        assert advance(state, IndexStep.SCAN_STARTED) is LocationState.SCANNING


def test_watch_failure_during_scan_keeps_location_stale_after_it() -> None:
    state = advance(LocationState.SCANNING, IndexStep.WATCH_FAILED)
    assert advance(state, IndexStep.SCAN_COMPLETED) is LocationState.STALE


def test_marker_naming_this_library_and_location_is_ok() -> None:
    assert classify_marker(_ours(), LIBRARY, LOCATION) is MarkerStatus.OK


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (MarkerRead(exists=False), MarkerStatus.MISSING),
        (MarkerRead(exists=True, error="corrupt"), MarkerStatus.FOREIGN),
        (MarkerRead(exists=True, error="unreadable"), MarkerStatus.UNREADABLE),
        (
            MarkerRead(exists=True, marker=Marker(uuid.uuid4(), LOCATION, DEVICE)),
            MarkerStatus.FOREIGN,
        ),
        (
            MarkerRead(exists=True, marker=Marker(LIBRARY, uuid.uuid4(), DEVICE)),
            MarkerStatus.FOREIGN,
        ),
    ],
)
def test_marker_classification(read: MarkerRead, expected: MarkerStatus) -> None:
    assert classify_marker(read, LIBRARY, LOCATION) is expected


def test_missing_root_is_unmounted() -> None:
    found = RootInspection(None, MarkerRead(exists=False))
    assert judge_root(_location(), found, LIBRARY).verdict is RootVerdict.ROOT_MISSING


def test_vanished_marker_is_unmounted_even_on_the_same_device() -> None:
    found = RootInspection(_stat(), MarkerRead(exists=False))
    verdict = judge_root(_location(), found, LIBRARY).verdict
    assert verdict is RootVerdict.MARKER_VANISHED
    assert verdict.unmounted


def test_root_without_marker_on_another_device_is_unmounted() -> None:
    found = RootInspection(_stat(dev=99), MarkerRead(exists=False))
    record = _location(has_marker=False)
    assert judge_root(record, found, LIBRARY).verdict is RootVerdict.DEVICE_CHANGED


def test_replugged_disk_with_our_marker_is_accepted() -> None:
    judgement = judge_root(_location(), RootInspection(_stat(dev=99), _ours()), LIBRARY)
    assert judgement.verdict is RootVerdict.OURS
    assert judgement.identity_changed


def test_foreign_marker_means_index_lost() -> None:
    other = MarkerRead(exists=True, marker=Marker(uuid.uuid4(), uuid.uuid4(), DEVICE))
    found = RootInspection(_stat(), other)
    assert judge_root(_location(), found, LIBRARY).verdict is RootVerdict.INDEX_LOST


def test_first_scan_of_an_unmarked_root_claims_it() -> None:
    found = RootInspection(_stat(), MarkerRead(exists=False))
    record = _location(has_marker=False, st_dev=None, root_inode=None)
    assert judge_root(record, found, LIBRARY).verdict is RootVerdict.FIRST_SEEN


def test_conduitd_paths_at_any_depth() -> None:
    assert is_conduitd_path(b".conduitd")
    assert is_conduitd_path(b"a/.conduitd/marker")
    assert not is_conduitd_path(b"a/.conduitd2/x")
    assert not is_conduitd_path(b"x.conduitd")


def test_subtree_helpers_respect_component_boundaries() -> None:
    assert is_within(b"a/b", b"a")
    assert is_within(b"a", b"a")
    assert not is_within(b"ab", b"a")
    assert is_within(b"anything", b"")
    assert parent_path(b"a/b/c") == b"a/b"
    assert parent_path(b"a") == b""


def test_file_is_rehashed_only_when_size_mtime_ctime_or_inode_changed() -> None:
    old = (0, 10, 100, 200, 5, 0o100644, "ab" * 32, None, 0)
    assert not needs_hash(old, (0, 10, 100, 200, 5, 0o100644, None, None, 0))
    assert needs_hash(old, (0, 10, 100, 201, 5, 0o100644, None, None, 0))
    assert needs_hash(old, (0, 10, 100, 200, 6, 0o100644, None, None, 0))
    assert needs_hash(old, (0, 11, 100, 200, 5, 0o100644, None, None, 0))
    assert needs_hash(old, (0, 10, 101, 200, 5, 0o100644, None, None, 0))
    flagged = (*old[:8], 1)
    assert needs_hash(flagged, (0, 10, 100, 200, 5, 0o100644, None, None, 0))


def test_watch_filter_drops_only_the_temp_area() -> None:
    keep = ConduitdTmpFilter("/r")
    assert not keep(Change.added, "/r/.conduitd/tmp")
    assert not keep(Change.added, "/r/.conduitd/tmp/x.part")
    for path in ("/r/.git/HEAD", "/r/node_modules/a.js", "/r/.venv/x", "/r/a.swp"):
        assert keep(Change.added, path)
    assert keep(Change.added, "/r/.conduitd/marker")


def test_event_translation_separates_conduitd_events() -> None:
    token = uuid.uuid4().hex
    raw = {
        (Change.added, "/r/a/b"),
        (Change.deleted, "/r"),
        (Change.added, f"/r/.conduitd/marker.{token}.tmp"),
        (Change.modified, "/r/.conduitd/trash/1/a"),
        (Change.added, "/r/.conduitd/marker"),
        (Change.added, "/r/x/.conduitd/y"),
        (Change.added, "/elsewhere/z"),
    }
    batch = translate(b"/r", raw)
    assert batch.paths == {b"a/b"}
    assert batch.tokens == {token}
    assert batch.root_touched
    assert batch.marker_touched
    assert barrier_token(b"marker.tmp") is None


@pytest.mark.anyio
async def test_feed_merges_paths_per_location_and_never_blocks_the_writer() -> None:
    closed: list[ChangeFeed] = []
    feed = ChangeFeed(closed.append)
    for i in range(10_000):
        feed.publish(1, [b"f%d" % (i % 100)])
    feed.publish(2, [b"x"])
    with anyio.fail_after(1):
        first = await feed.receive()
        second = await feed.receive()
    assert (first.location_id, len(first.paths)) == (1, 100)
    assert (second.location_id, second.paths) == (2, frozenset({b"x"}))
    feed.close()
    assert closed == [feed]
    with pytest.raises(anyio.EndOfStream):
        await feed.receive()


@pytest.mark.anyio
async def test_feed_wakes_a_waiting_reader() -> None:
    feed = ChangeFeed(lambda _feed: None)
    received = []

    async def read() -> None:
        received.extend([change async for change in feed])

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.01)
            feed.publish(3, [b"a"])
            await anyio.sleep(0.01)
            feed.close()
    assert [c.paths for c in received] == [frozenset({b"a"})]


# Listing digests: sums of one term per child, updated from rows alone.
FILE_ROW = (0, 3, 10, 11, 100, 0o100644, "c" * 64, None, 0)
DIR_ROW = (1, 0, 20, 21, 200, 0o40755, None, None, 0)
LINK_ROW = (2, 1, 30, 31, 300, 0o120777, None, b"f", 0)
EMPTY = b""


def test_a_digest_is_a_sum_whatever_the_order_of_the_children() -> None:
    terms = [
        child_term(b"d/f", FILE_ROW),
        child_term(b"d/sub", DIR_ROW),
        child_term(b"d/link", LINK_ROW),
    ]
    assert None not in terms
    ints = [t for t in terms if t is not None]
    assert digest_with(EMPTY, [], ints) == digest_with(EMPTY, [], ints[::-1])
    one_by_one = EMPTY
    for term in ints:
        one_by_one = digest_with(one_by_one, [], [term])
    assert one_by_one == digest_with(EMPTY, [], ints)
    assert digest_with(one_by_one, ints, []) == EMPTY


def test_a_term_depends_on_name_and_metadata_not_on_content_id_or_parent() -> None:
    term = child_term(b"d/f", FILE_ROW)
    assert child_term(b"other/f", FILE_ROW) == term
    assert child_term(b"d/f", (*FILE_ROW[:6], "e" * 64, None, 0)) == term
    assert child_term(b"d/g", FILE_ROW) != term
    for index, value in ((1, 4), (2, 12), (3, 12), (4, 101), (5, 0o100600)):
        changed = list(FILE_ROW)
        changed[index] = value
        assert child_term(b"d/f", tuple(changed)) != term
    assert child_term(b"d/link", (*LINK_ROW[:7], b"g", 0)) != child_term(
        b"d/link", LINK_ROW
    )


def test_rows_no_listing_vouches_for_have_no_term() -> None:
    assert child_term(b"d/f", (*FILE_ROW[:8], 1)) is None  # unreadable
    assert child_term(b"d/f", (*FILE_ROW[:6], None, None, 0)) is None  # not hashed
    assert child_term(b"d/x", (7, *FILE_ROW[1:])) is None  # no such kind


def test_updated_digests_swap_old_terms_for_new_ones() -> None:
    f_term = child_term(b"d/f", FILE_ROW)
    sub_term = child_term(b"d/sub", DIR_ROW)
    assert f_term is not None
    assert sub_term is not None
    before = digest_with(EMPTY, [], [f_term, sub_term])
    edited = (0, 5, 12, 13, 100, 0o100644, "e" * 64, None, 0)
    after = updated_digests(
        {b"d": before, b"e": EMPTY},
        [b"d/f", b"d/sub", b"d/new", b"e/x"],
        {b"d/f": FILE_ROW, b"d/sub": DIR_ROW},
        {b"d/f": edited, b"d/new": LINK_ROW, b"e/x": (*FILE_ROW[:8], 1)},
    )
    new_f, link = child_term(b"d/f", edited), child_term(b"d/new", LINK_ROW)
    assert new_f is not None
    assert link is not None
    assert after == {b"d": digest_with(EMPTY, [], [new_f, link]), b"e": None}
