"""Replay property: A's whole log applied to an empty B reproduces A's records.

Random sequences of conduit, location, generation and conflict changes run on
library A through the real repositories and the TransactionManager. Then:
replaying A's log into empty B yields equal syncable records (excluded fields
aside), replaying again changes nothing, and a vacuumed log replays to the
same records too.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from hypothesis import given
from hypothesis import strategies as st

from conduitd.config.enums import SyncMode
from conduitd.storage.conduits import (
    ConduitManager,
    ConduitSettings,
    GenerationCounts,
    GenerationStatus,
)
from conduitd.storage.conflicts import (
    ConflictRepository,
    ConflictSide,
    ConflictStatus,
    Resolution,
)
from conduitd.storage.database import Database
from conduitd.storage.library import Library, open_library
from conduitd.storage.locations import ensure_location, list_locations
from conduitd.storage.models import EntryKind
from conduitd.storage.replay import replay_log
from conduitd.storage.synclog import SyncLogDb
from conduitd.storage.transactions import LoggedTransaction, open_transaction_manager

NAMES = ("photos", "notes", "music")
PATHS = 4


@dataclass(frozen=True)
class Op:
    kind: str
    a: int
    b: int
    c: int


ops = st.builds(
    Op,
    kind=st.sampled_from(
        [
            "location",
            "conduit",
            "conduit",
            "retarget",
            "disable",
            "pause",
            "error",
            "generation",
            "generation",
            "finish",
            "verify",
            "interrupt",
            "conflict",
            "resolve",
            "bulk",
        ]
    ),
    a=st.integers(0, 2),
    b=st.integers(0, PATHS - 1),
    c=st.integers(0, PATHS - 1),
)
# Several operations may share one transaction.
scripts = st.lists(st.lists(ops, min_size=1, max_size=4), max_size=12)

PATH_NAMES = [b"a.txt", b"dir/caf\xe9", "é/ü".encode(), b"x\xff"]


async def apply(tx: LoggedTransaction, library: Library, op: Op) -> None:
    manager = ConduitManager(library.db)
    device = str(library.device_id)
    name = NAMES[op.a]
    row = await tx.fetch_one("SELECT id FROM sync_conduit WHERE name = ?", (name,))
    conduit_id = None if row is None else int(row["id"])
    if op.kind == "location":
        await ensure_location(tx, device, Path(f"/data/{op.b}"))
    elif op.kind in ("conduit", "retarget") and op.b != op.c:
        source, _ = await ensure_location(tx, device, Path(f"/data/{op.b}"))
        target, _ = await ensure_location(tx, device, Path(f"/data/{op.c}"))
        settings = ConduitSettings(
            name=name,
            source_entry_id=source.entry_id,
            target_entry_id=target.entry_id,
            sync_mode=list(SyncMode)[op.b % 3],
            enabled=True,
            schedule=["manual", "instant", "interval:5m", "cron:0 3 * * *"][op.c],
            use_index_rules=op.b % 2 == 0,
            parallel_transfers=1 + op.c,
            bandwidth_limit_mbps=None if op.b == 0 else op.b * 10,
        )
        if conduit_id is None:
            await manager.create(tx, settings)
        else:
            await manager.update_settings(tx, conduit_id, settings)
    elif conduit_id is None:
        return
    elif op.kind == "disable":
        await manager.disable(tx, conduit_id)
    elif op.kind == "pause":
        await manager.set_paused(tx, conduit_id, op.b % 2 == 0)
    elif op.kind == "error":
        await manager.set_error(tx, conduit_id, None if op.b == 0 else f"error {op.b}")
    elif op.kind == "generation":
        generation = await manager.create_generation(tx, conduit_id)
        counts = GenerationCounts(files_copied=op.b, bytes_transferred=op.c * 1000)
        await manager.record_counts(tx, generation.id, counts)
    elif op.kind in ("finish", "verify"):
        last = await tx.fetch_one(
            "SELECT id FROM sync_generation WHERE conduit_id = ?"
            " ORDER BY generation DESC LIMIT 1",
            (conduit_id,),
        )
        if last is None:
            return
        if op.kind == "finish":
            status = [GenerationStatus.COMPLETED, GenerationStatus.REFUSED][op.b % 2]
            error = None if op.c == 0 else "oops"
            await manager.complete_generation(tx, int(last["id"]), status, error)
        else:
            verified = op.b % 2 == 0
            state = "verified" if verified else "failed:remaining"
            await manager.set_verification(
                tx, int(last["id"]), state, verified=verified
            )
    elif op.kind == "interrupt":
        await manager.interrupt_unfinished(tx)
    elif op.kind == "conflict":
        await ConflictRepository(library.db).create(
            tx,
            conduit_id=conduit_id,
            relative_path=PATH_NAMES[op.b],
            detected_generation=op.c,
            source=ConflictSide(EntryKind.FILE, op.b, op.c, "a" * 64),
            target=ConflictSide() if op.c == 0 else ConflictSide(EntryKind.DIRECTORY),
        )
    elif op.kind == "resolve":
        pending = await tx.fetch_one(
            "SELECT id FROM sync_conflict WHERE conduit_id = ? AND status = ?",
            (conduit_id, ConflictStatus.PENDING.value),
        )
        if pending is not None:
            resolution = list(Resolution)[op.b % 3]
            await ConflictRepository(library.db).resolve(
                tx, int(pending["id"]), resolution
            )
    elif op.kind == "bulk":
        await tx.log_bulk("entry", 1000 + op.b, {"location": str(uuid.uuid4())})


async def snapshot(db: Database) -> dict[str, dict[str, str]]:
    """Every syncable record's sync JSON, by model and uuid."""
    manager = ConduitManager(db)
    conduits = await manager.list_all()
    generations = [g for c in conduits for g in await manager.generations(c.id)]
    return {
        "location": {str(r.uuid): r.to_sync_json() for r in await list_locations(db)},
        "conduit": {str(r.uuid): r.to_sync_json() for r in conduits},
        "generation": {str(r.record_uuid): r.to_sync_json() for r in generations},
        "conflict": {
            str(r.uuid): r.to_sync_json() for r in await ConflictRepository(db).list()
        },
    }


async def scenario(script: list[list[Op]], root: Path) -> None:
    a = await open_library(root / "a")
    b = await open_library(root / "b")
    c = await open_library(root / "c")
    try:
        tm = await open_transaction_manager(a)
        for batch in script:
            async with tm.transaction() as tx:
                for op in batch:
                    await apply(tx, a, op)
        await tm.flushed()
        expected = await snapshot(a.db)
        assert await tm.pending_count() == 0

        report = await replay_log(SyncLogDb(a.sync_db), b.db, batch=7)
        assert report.last_sequence == await tm.log.latest_sequence()
        assert await snapshot(b.db) == expected
        again = await replay_log(SyncLogDb(a.sync_db), b.db)
        assert again.applied == 0
        assert await snapshot(b.db) == expected

        await tm.log.vacuum_old_entries(datetime.now(UTC) + timedelta(days=1))
        await replay_log(SyncLogDb(a.sync_db), c.db, batch=5)
        assert await snapshot(c.db) == expected
    finally:
        for library in (a, b, c):
            await library.close()


@given(scripts)
def test_replaying_the_whole_log_reproduces_the_syncable_records(
    script: list[list[Op]],
) -> None:
    with tempfile.TemporaryDirectory() as root:
        anyio.run(scenario, script, Path(root))
