"""Pure parts of conduitd.jobs: path validation, trash names, rate, batching."""

from __future__ import annotations

import posixpath

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduitd.errors import UnsafePath
from conduitd.jobs.batching import CommitQueue
from conduitd.jobs.paths import split_relative, split_synced
from conduitd.jobs.ratelimit import RateLimiter
from conduitd.jobs.trash import numbered_name, trash_relative_path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- split_relative -------------------------------------------------------------


def test_split_relative_root_is_empty_tuple() -> None:
    assert split_relative(b"") == ()


def test_split_relative_splits_components() -> None:
    assert split_relative(b"a/b c/\xff.txt") == (b"a", b"b c", b"\xff.txt")


@pytest.mark.parametrize(
    "rel",
    [
        b"/etc/passwd",
        b"a//b",
        b"a/",
        b"/",
        b".",
        b"..",
        b"a/./b",
        b"a/../../b",
        b"a\0b",
        b"x" * 256,
        b"ok/" + b"y" * 256,
    ],
)
def test_split_relative_rejects_unsafe_paths(rel: bytes) -> None:
    with pytest.raises(UnsafePath):
        split_relative(rel)


def test_split_relative_accepts_255_byte_component() -> None:
    assert split_relative(b"z" * 255) == (b"z" * 255,)


def test_split_relative_rejects_str() -> None:
    with pytest.raises(UnsafePath):
        split_relative("a/b")  # type: ignore[arg-type]  # the point of the test


@pytest.mark.parametrize(
    "rel", [b"", b".conduitd", b".conduitd/tmp/x", b"a/.conduitd/b"]
)
def test_split_synced_refuses_root_and_internal_area(rel: bytes) -> None:
    with pytest.raises(UnsafePath):
        split_synced(rel)


_component = st.one_of(
    st.sampled_from([b".", b"..", b"", b"...", b".conduitd", b"a", b"\xff"]),
    st.binary(min_size=0, max_size=8),
)


@given(st.lists(_component, max_size=6), st.booleans())
def test_no_accepted_path_resolves_outside_the_root(
    parts: list[bytes], absolute: bool
) -> None:
    rel = (b"/" if absolute else b"") + b"/".join(parts)
    try:
        accepted = split_relative(rel)
    except UnsafePath:
        return
    root = b"/srv/root"
    resolved = posixpath.normpath(posixpath.join(root, rel))
    assert resolved == root or resolved.startswith(root + b"/")
    assert b"/".join(accepted) == rel
    assert all(p not in (b"", b".", b"..") and b"\0" not in p for p in accepted)


# -- trash names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        (b"a.txt", 1, b"a~1.txt"),
        (b"Makefile", 1, b"Makefile~1"),
        (b"a.tar.gz", 2, b"a.tar~2.gz"),
        (b".bashrc", 1, b".bashrc~1"),
        (b"trailing.", 3, b"trailing.~3"),
        (b"a.txt", 0, b"a.txt"),
    ],
)
def test_numbered_name_goes_before_the_suffix(
    name: bytes, n: int, expected: bytes
) -> None:
    assert numbered_name(name, n) == expected


def test_numbered_name_stays_within_255_bytes() -> None:
    name = b"s" * 250 + b".txt"
    numbered = numbered_name(name, 12)
    assert len(numbered) == 255
    assert numbered.endswith(b"~12.txt")


def test_trash_relative_path_numbers_names_taken_in_the_generation() -> None:
    taken = {
        b".conduitd/trash/7/docs/a.txt",
        b".conduitd/trash/7/docs/a~1.txt",
    }
    assert (
        trash_relative_path(7, b"docs/a.txt", set()) == b".conduitd/trash/7/docs/a.txt"
    )
    assert (
        trash_relative_path(7, b"docs/a.txt", taken)
        == b".conduitd/trash/7/docs/a~2.txt"
    )
    assert trash_relative_path(7, b"Makefile", {b".conduitd/trash/7/Makefile"}) == (
        b".conduitd/trash/7/Makefile~1"
    )


def test_trash_relative_path_validates_the_path() -> None:
    with pytest.raises(UnsafePath):
        trash_relative_path(1, b"../escape", set())


# -- rate limiter -----------------------------------------------------------------


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_rate_limiter_lets_a_burst_through_then_waits() -> None:
    fake = _FakeTime()
    limiter = RateLimiter(1000, burst_bytes=1000, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire(1000)
    assert fake.slept == 0
    limiter.acquire(500)
    assert fake.slept == pytest.approx(0.5)
    limiter.acquire(2000)
    assert fake.slept == pytest.approx(2.5)


def test_rate_limiter_refills_over_time() -> None:
    fake = _FakeTime()
    limiter = RateLimiter(100, burst_bytes=100, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire(100)
    fake.now += 1.0
    limiter.acquire(100)
    assert fake.slept == 0


def test_rate_limiter_checkpoint_can_abandon_the_wait() -> None:
    fake = _FakeTime()
    limiter = RateLimiter(10, burst_bytes=10, clock=fake.clock, sleep=fake.sleep)
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        limiter.acquire(1000, checkpoint)
    assert fake.slept < 1


def test_rate_limiter_refuses_zero_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


# -- commit queue -----------------------------------------------------------------


@pytest.mark.anyio
async def test_commit_queue_releases_a_full_batch_at_once() -> None:
    queue: CommitQueue[int] = CommitQueue(max_files=3, max_bytes=1 << 30, max_age_s=60)
    for i in range(7):
        queue.put(i)
    with anyio.fail_after(5):
        assert await queue.next_batch() == [0, 1, 2]
        assert await queue.next_batch() == [3, 4, 5]
        queue.close()
        assert await queue.next_batch() == [6]
        assert await queue.next_batch() is None


@pytest.mark.anyio
async def test_commit_queue_releases_by_bytes() -> None:
    queue: CommitQueue[str] = CommitQueue(max_files=100, max_bytes=10, max_age_s=60)
    queue.put("a", 6)
    queue.put("b", 6)
    queue.put("c", 1)
    with anyio.fail_after(5):
        assert await queue.next_batch() == ["a", "b"]


@pytest.mark.anyio
async def test_commit_queue_releases_an_old_batch_by_age() -> None:
    queue: CommitQueue[int] = CommitQueue(
        max_files=100, max_bytes=1 << 30, max_age_s=0.05
    )
    batches: list[list[int]] = []
    first_batch = anyio.Event()

    async def consume() -> None:
        while (batch := await queue.next_batch()) is not None:
            batches.append(batch)
            first_batch.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            queue.put(1)
            await first_batch.wait()
            queue.put(2)
            queue.close()
    assert batches == [[1], [2]]
