"""LeadershipManager: creator leads, lease expiry and takeover, terms, restarts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from conduitd.errors import NotLeader
from conduitd.storage.leadership import LeadershipManager, Role, leader_info
from conduitd.storage.library import Library, open_library
from conduitd.storage.syncable import ChangeType
from conduitd.storage.synclog import NewLogEntry, SyncLogDb

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await open_library(tmp_path / "state")
    try:
        yield lib
    finally:
        await lib.close()


def manager(
    library: Library, clock: FakeClock, device: uuid.UUID | None = None
) -> LeadershipManager:
    return LeadershipManager(
        library, heartbeat_s=30, lease_s=60, clock=clock, device_id=device
    )


def an_entry() -> NewLogEntry:
    return NewLogEntry(
        "d", "2026-01-01T00:00:00.000000Z", "conduit", "r", ChangeType.UPDATE, 1, "{}"
    )


async def test_creator_device_leads_and_persists_the_lease(
    library: Library, clock: FakeClock
) -> None:
    lm = manager(library, clock)
    assert await lm.start() is Role.LEADER
    assert lm.is_leader()
    assert lm.term == 1
    assert lm.lease_expires_at == "2026-01-01T00:01:00.000000Z"
    assert await leader_info(library) == {
        "role": "leader",
        "term": 1,
        "lease_expires_at": "2026-01-01T00:01:00.000000Z",
    }
    assert lm.info() == await leader_info(library)


async def test_another_device_follows_and_may_not_append(
    library: Library, clock: FakeClock
) -> None:
    await manager(library, clock).start()
    other = manager(library, clock, uuid.uuid4())
    assert await other.start() is Role.FOLLOWER
    assert other.term == 1
    with pytest.raises(NotLeader):
        await other.ensure_leader()
    with pytest.raises(NotLeader):
        await SyncLogDb(library.sync_db, other).append(an_entry())


async def test_a_device_that_did_not_create_the_library_does_not_lead_it_first(
    library: Library, clock: FakeClock
) -> None:
    other = manager(library, clock, uuid.uuid4())
    assert await other.start() is Role.FOLLOWER
    assert other.term == 0
    assert other.lease_expires_at is None
    assert await leader_info(library) == {
        "role": "follower",
        "term": 0,
        "lease_expires_at": None,
    }


async def test_follower_takes_an_expired_lease_with_the_next_term(
    library: Library, clock: FakeClock
) -> None:
    leader = manager(library, clock)
    await leader.start()
    follower = manager(library, clock, uuid.uuid4())
    await follower.start()
    clock.advance(59)
    assert await follower.tick() is Role.FOLLOWER
    clock.advance(2)
    assert await follower.tick() is Role.LEADER
    assert follower.term == 2
    assert await follower.ensure_leader() == 2
    # The stale leader wakes up: it sees the higher term and stops appending.
    assert leader.is_leader()
    assert not await leader.check()
    assert leader.role is Role.FOLLOWER
    assert leader.term == 2
    with pytest.raises(NotLeader):
        await SyncLogDb(library.sync_db, leader).append(an_entry())
    assert await leader.tick() is Role.FOLLOWER
    assert (await leader_info(library))["role"] == "follower"


async def test_heartbeat_renewal_keeps_followers_out(
    library: Library, clock: FakeClock
) -> None:
    leader = manager(library, clock)
    await leader.start()
    follower = manager(library, clock, uuid.uuid4())
    for _ in range(5):
        clock.advance(30)
        assert await leader.tick() is Role.LEADER
        assert await follower.tick() is Role.FOLLOWER
    assert leader.term == 1


async def test_only_one_of_two_racing_followers_takes_over(
    library: Library, clock: FakeClock
) -> None:
    await manager(library, clock).start()
    racers = [manager(library, clock, uuid.uuid4()) for _ in range(2)]
    for racer in racers:
        await racer.start()
    clock.advance(61)
    roles: list[Role] = []

    async def take(racer: LeadershipManager) -> None:
        roles.append(await racer.tick())

    async with anyio.create_task_group() as tg:
        for racer in racers:
            tg.start_soon(take, racer)
    assert sorted(roles) == [Role.FOLLOWER, Role.LEADER]
    assert {r.term for r in racers} == {2}


async def test_leadership_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "state"
    library = await open_library(state)
    other_device = uuid.uuid4()
    try:
        await manager(library, clock).start()
    finally:
        await library.close()
    library = await open_library(state)
    try:
        lm = manager(library, clock)
        assert await lm.start() is Role.LEADER
        assert lm.term == 1
        clock.advance(120)
        assert await manager(library, clock, other_device).start() is Role.LEADER
    finally:
        await library.close()
    library = await open_library(state)
    try:
        lm = manager(library, clock)
        assert await lm.start() is Role.FOLLOWER
        assert lm.term == 2
    finally:
        await library.close()


async def test_one_shot_process_of_the_same_device_never_demotes_its_daemon(
    library: Library, clock: FakeClock
) -> None:
    daemon = manager(library, clock)
    await daemon.start()
    clock.advance(10)
    one_shot = manager(library, clock)
    assert await one_shot.start() is Role.LEADER
    assert one_shot.term == daemon.term == 1
    assert await daemon.check()
    # Even after the lease ran out, the same device renews without a new term.
    clock.advance(600)
    assert await one_shot.tick() is Role.LEADER
    assert await daemon.ensure_leader() == 1


async def test_lease_expiry_and_takeover_with_short_real_timings(
    library: Library,
) -> None:
    leader = LeadershipManager(library, heartbeat_s=0.02, lease_s=1.0)
    follower = LeadershipManager(
        library, heartbeat_s=0.02, lease_s=1.0, device_id=uuid.uuid4()
    )
    await leader.start()
    await follower.start()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(leader.run_heartbeat)
            await tg.start(follower.run_heartbeat)
            await anyio.sleep(1.5)  # longer than a lease: renewals keep it
            assert leader.is_leader()
            assert not follower.is_leader()
            tg.cancel_scope.cancel()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(follower.run_heartbeat)
            # The takeover happens in another task; its role is what we can see.
            while not follower.is_leader():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert follower.term == 2
    assert not await leader.check()
