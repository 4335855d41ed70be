"""LeadershipManager (seed LSYNC-009): who may append to a library's sync log.

The lease holder is a device (device.json), not a process: every process of
that device (the daemon, a one-shot CLI run) is the leader while the
persisted lease in `sync_leadership` names it, and none of them ever demotes
another. The library's creator takes the first lease; the leader's heartbeat
renews it; a follower that sees it expired takes it over by compare-and-swap
with term + 1. A leader that finds another holder (a higher term) becomes a
follower and stops appending (`ensure_leader` raises NotLeader).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import structlog
from anyio.abc import TaskStatus

from conduitd.errors import NotLeader, StorageError
from conduitd.storage.database import Database
from conduitd.storage.library import Library
from conduitd.timeutil import format_utc, parse_utc, utc_now

logger = structlog.get_logger()

Clock = Callable[[], datetime]


class Role(enum.StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(frozen=True, slots=True)
class Lease:
    """The persisted `sync_leadership` row of a library."""

    holder_device_id: str
    term: int
    lease_expires_at: str

    def expired(self, now: datetime) -> bool:
        return parse_utc(self.lease_expires_at) <= now


class LeadershipManager:
    """This device's view of one library's leader lease.

    Args:
        heartbeat_s: how often `run_heartbeat` renews (leader) or looks for
            an expired lease (follower).
        lease_s: how long a renewal lasts.
        clock: the time source for lease expiry (tests pass a fake one).
        device_id: who we are; defaults to the library's device (tests
            simulate other devices sharing one library.db).
    """

    def __init__(
        self,
        library: Library,
        *,
        heartbeat_s: float = 30.0,
        lease_s: float = 60.0,
        clock: Clock = utc_now,
        device_id: uuid.UUID | None = None,
    ) -> None:
        self._db: Database = library.db
        self._library_key = library.uuid.bytes
        self.device_id = str(device_id or library.device_id)
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self._clock = clock
        self._role = Role.FOLLOWER
        self._term = 0
        self._lease_expires_at: str | None = None
        self._is_creator: bool | None = None

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def lease_expires_at(self) -> str | None:
        return self._lease_expires_at

    def is_leader(self) -> bool:
        """The role as last observed (no I/O); `check()` re-reads the lease."""
        return self._role is Role.LEADER

    def info(self) -> dict[str, object]:
        """`{"role", "term", "lease_expires_at"}` for `status`."""
        return {
            "role": self._role.value,
            "term": self._term,
            "lease_expires_at": self._lease_expires_at,
        }

    async def start(self) -> Role:
        """Take the first lease (creator), renew ours, or take an expired one."""
        lease = await self._read()
        if lease is None and await self._created_here():
            await self._db_execute(
                "INSERT INTO sync_leadership (library, holder_device_id, term,"
                " lease_expires_at) VALUES (?, ?, 1, ?) ON CONFLICT (library) DO NOTHING",
                (self._library_key, self.device_id, self._expiry()),
            )
            lease = await self._read()
        return await self._step(lease)

    async def tick(self) -> Role:
        """One heartbeat: renew our lease, or take an expired one over."""
        return await self._step(await self._read())

    async def check(self) -> bool:
        """Re-read the lease without writing; True when this device holds it."""
        self._observe(await self._read())
        return self.is_leader()

    async def ensure_leader(self) -> int:
        """The current term, after re-reading the lease.

        Raises:
            NotLeader: another device holds the lease (or nobody does).
        """
        if not await self.check():
            raise NotLeader(
                f"device {self.device_id} does not hold the leader lease"
                f" (term {self._term})"
            )
        return self._term

    async def run_heartbeat(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew or look for an expired lease every `heartbeat_s`, until cancelled."""
        if self._lease_expires_at is None:
            await self.start()
        task_status.started()
        while True:
            await anyio.sleep(self.heartbeat_s)
            try:
                await self.tick()
            except StorageError:
                # A busy or failing library.db must not stop the daemon: an
                # unrenewed lease simply expires, and appending re-checks it.
                logger.exception("leadership_heartbeat_failed", term=self._term)

    async def _step(self, lease: Lease | None) -> Role:
        if lease is None:
            self._observe(None)
        elif lease.holder_device_id == self.device_id:
            await self._renew(lease)
        elif lease.expired(self._clock()):
            await self._take_over(lease)
        else:
            self._observe(lease)
        return self._role

    async def _renew(self, lease: Lease) -> None:
        # Renewal matches the holder, not the term: another process of this
        # device may have renewed or re-taken the lease; it is still ours.
        await self._db_execute(
            "UPDATE sync_leadership SET lease_expires_at = ?"
            " WHERE library = ? AND holder_device_id = ?",
            (self._expiry(), self._library_key, self.device_id),
        )
        self._observe(await self._read())

    async def _take_over(self, lease: Lease) -> None:
        changed = await self._db_execute(
            "UPDATE sync_leadership SET holder_device_id = ?, term = term + 1,"
            " lease_expires_at = ? WHERE library = ? AND holder_device_id = ?"
            " AND term = ? AND lease_expires_at = ?",
            (
                self.device_id,
                self._expiry(),
                self._library_key,
                lease.holder_device_id,
                lease.term,
                lease.lease_expires_at,
            ),
        )
        fresh = await self._read()
        if changed:
            logger.info(
                "leadership_taken_over",
                previous=lease.holder_device_id,
                term=fresh.term if fresh else None,
            )
        self._observe(fresh)

    def _observe(self, lease: Lease | None) -> None:
        was = self._role
        if lease is None:
            self._role, self._lease_expires_at = Role.FOLLOWER, None
        else:
            holder = lease.holder_device_id == self.device_id
            self._role = Role.LEADER if holder else Role.FOLLOWER
            self._term = lease.term
            self._lease_expires_at = lease.lease_expires_at
        if was is not self._role:
            event = "leadership_acquired" if self.is_leader() else "leadership_lost"
            logger.info(event, device=self.device_id, term=self._term)

    async def _read(self) -> Lease | None:
        row = await self._db.fetch_one(
            "SELECT holder_device_id, term, lease_expires_at FROM sync_leadership"
            " WHERE library = ?",
            (self._library_key,),
        )
        if row is None:
            return None
        return Lease(row["holder_device_id"], int(row["term"]), row["lease_expires_at"])

    async def _created_here(self) -> bool:
        if self._is_creator is None:
            row = await self._db.fetch_one(
                "SELECT value FROM library_info WHERE key = 'created_by_device'"
            )
            self._is_creator = row is not None and row["value"] == self.device_id
        return self._is_creator

    async def _db_execute(self, sql: str, params: tuple[bytes | str | int, ...]) -> int:
        async with self._db.transaction() as tx:
            return await tx.execute(sql, params)

    def _expiry(self) -> str:
        return format_utc(self._clock() + timedelta(seconds=self.lease_s))


async def leader_info(library: Library) -> dict[str, object]:
    """The lease as `status` shows it, from this device's point of view.

    `{"role": "leader"|"follower", "term": int, "lease_expires_at": str|None}`;
    reads only, so it never changes who leads.
    """
    row = await library.db.fetch_one(
        "SELECT holder_device_id, term, lease_expires_at FROM sync_leadership"
        " WHERE library = ?",
        (library.uuid.bytes,),
    )
    if row is None:
        return {"role": Role.FOLLOWER.value, "term": 0, "lease_expires_at": None}
    holder = row["holder_device_id"] == str(library.device_id)
    return {
        "role": (Role.LEADER if holder else Role.FOLLOWER).value,
        "term": int(row["term"]),
        "lease_expires_at": row["lease_expires_at"],
    }
