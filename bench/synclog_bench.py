"""Sync log benchmark (issue 3): appends, fetches, entry size, logged-write cost.

Run:  /work/venv/bin/python bench/synclog_bench.py [--entries 100000] [--rounds 5]

Reports, each a median over interleaved rounds (BENCHMARKING.md):
- appends/s, single (`SyncLogDb.append`, one transaction each) and batched
  (`append_many` of 1,000), and the drainer's rate (outbox -> sync.db,
  including the outbox delete);
- `fetch_since` of 10k entries out of a log of `--entries`;
- bytes per entry: JSON payload, and on-disk size of `sync_log` with its
  indexes (dbstat), for a realistic mix of records;
- a logged write against the same write unlogged: one conflict row per
  transaction (single) and 500 per transaction (batched), both committing with
  fsync (synchronous=FULL) on the same database. Targets: >= 20k appended
  entries/s batched; a logged batch write within 1.3x of the unlogged one.
Everything runs in a fresh directory under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from conduitd.config.enums import SyncMode
from conduitd.logs import configure_logging
from conduitd.storage.conduits import (
    GENERATION_SELECT,
    ConduitManager,
    ConduitSettings,
    GenerationCounts,
    GenerationRecord,
)
from conduitd.storage.conflicts import (
    ConflictRecord,
    ConflictSide,
    ConflictStatus,
)
from conduitd.storage.library import Library, open_library
from conduitd.storage.locations import ensure_location
from conduitd.storage.models import EntryKind
from conduitd.storage.syncable import ChangeType, Syncable
from conduitd.storage.synclog import NewLogEntry, SyncLogDb
from conduitd.storage.transactions import (
    TransactionManager,
    open_transaction_manager,
)
from conduitd.timeutil import utc_now_text

BATCH = 1000
WRITE_BATCH = 500


class Guard:
    async def ensure_leader(self) -> int:
        return 1


def _order(round_no: int, *pairs: tuple[bool, str]) -> tuple[tuple[bool, str], ...]:
    return pairs if round_no % 2 == 0 else pairs[::-1]


def median_s(samples: Sequence[float]) -> float:
    return statistics.median(samples)


_cpu: list[float] = []  # process CPU time (all threads) of the last `timed` call


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    """Wall time of `action`; its process CPU time goes to `_cpu[-1]`.

    CPU time (the event loop and aiosqlite's thread) is steadier than wall time
    on a shared machine, but leaves out waiting for fsync.
    """
    cpu = time.process_time()
    start = time.perf_counter()
    await action()
    wall = time.perf_counter() - start
    _cpu.append(time.process_time() - cpu)
    return wall


def log_entry(i: int, data: str) -> NewLogEntry:
    return NewLogEntry(
        device_id="5f0c6f53-5d3c-4b8e-9d87-1f1f4a3b2c10",
        timestamp=utc_now_text(),
        model_type="generation",
        record_id=str(uuid.uuid4()),
        change_type=ChangeType.UPDATE,
        version=i,
        data=data,
    )


async def bench_appends(library: Library, rounds: int, total: int) -> dict[str, float]:
    log = SyncLogDb(library.sync_db, Guard())
    # A realistic payload: a conflict record's sync JSON (~570 bytes).
    sample = conflict_records(1, uuid.uuid4(), 1)[0].to_sync_json()
    single: list[float] = []
    batched: list[float] = []
    for _ in range(rounds):

        async def one_by_one() -> None:
            for i in range(500):
                await log.append(log_entry(i, sample))

        single.append(500 / await timed(one_by_one))

        async def in_batches() -> None:
            for start in range(0, total // rounds, BATCH):
                await log.append_many(
                    [log_entry(start + i, sample) for i in range(BATCH)]
                )

        batched.append((total // rounds) / await timed(in_batches))
    latest = await log.latest_sequence()
    fetch: list[float] = []
    for r in range(rounds * 3):
        since = (latest - 10_000) * r // (rounds * 3)
        fetch.append(await timed(lambda s=since: log.fetch_since(s, 10_000)))
    return {
        "append_single_per_s": median_s(single),
        "append_batched_per_s": median_s(batched),
        "fetch_since_10k_ms": median_s(fetch) * 1000,
        "log_entries": float(latest),
    }


def conflict_records(
    conduit_id: int, conduit_uuid: uuid.UUID, n: int
) -> list[ConflictRecord]:
    now = utc_now_text()
    return [
        ConflictRecord(
            id=0,
            uuid=uuid.uuid4(),
            conduit_id=conduit_id,
            conduit_uuid=conduit_uuid,
            relative_path=f"photos/2024/img_{i:06d}.jpg".encode(),
            detected_generation=7,
            detected_at=now,
            status=ConflictStatus.PENDING,
            source=ConflictSide(
                EntryKind.FILE, 123_456, 1_700_000_000_000_000_000, "a" * 64
            ),
            target=ConflictSide(
                EntryKind.FILE, 123_999, 1_700_000_100_000_000_000, "b" * 64
            ),
            resolution=None,
            resolved_at=None,
            version=1,
        )
        for i in range(n)
    ]


_INSERT = (
    "INSERT INTO sync_conflict (uuid, conduit_id, relative_path, detected_generation,"
    " detected_at, status, source_kind, source_size, source_mtime_ns,"
    " source_content_id, target_kind, target_size, target_mtime_ns,"
    " target_content_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def conflict_row(r: ConflictRecord) -> tuple[object, ...]:
    s, t = r.source, r.target
    return (
        r.uuid.bytes,
        r.conduit_id,
        r.relative_path,
        r.detected_generation,
        r.detected_at,
        r.status.value,
        s.kind,
        s.size,
        s.mtime_ns,
        s.content_id,
        t.kind,
        t.size,
        t.mtime_ns,
        t.content_id,
    )


async def write(
    tm: TransactionManager, records: list[ConflictRecord], *, logged: bool
) -> None:
    rows = [conflict_row(r) for r in records]
    if logged:
        async with tm.transaction() as tx:
            if len(rows) == 1:
                await tx.execute(_INSERT, rows[0])  # type: ignore[arg-type]
                await tx.log_change(records[0], ChangeType.INSERT)
            else:
                await tx.execute_many(_INSERT, rows)  # type: ignore[arg-type]
                await tx.log_batch(records, ChangeType.INSERT)
    else:
        async with tm.library.db.transaction() as tx:
            if len(rows) == 1:
                await tx.execute(_INSERT, rows[0])  # type: ignore[arg-type]
            else:
                await tx.execute_many(_INSERT, rows)  # type: ignore[arg-type]


_COUNTS_UPDATE = (
    "UPDATE sync_generation SET files_copied = ?, metadata_updated = ?,"
    " files_deleted = ?, conflicts_resolved = ?, conflicts_pending = ?,"
    " files_skipped = ?, bytes_transferred = ?, errors_encountered = ?,"
    " version = version + 1 WHERE id = ?"
)


def _write_figures(
    wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> dict[str, float]:
    ss, sl, bs, bl = (median_s(wall[k]) for k in ("ss", "sl", "bs", "bl"))
    css, csl, cbs, cbl = (median_s(cpu[k]) for k in ("ss", "sl", "bs", "bl"))
    return {
        "single_unlogged_ms": ss * 1000,
        "single_logged_ms": sl * 1000,
        "single_ratio": sl / ss,
        "single_cpu_ratio": csl / css,
        "batch_unlogged_ms": bs * 1000,
        "batch_logged_ms": bl * 1000,
        "batch_ratio": bl / bs,
        "batch_cpu_ratio": cbl / cbs,
    }


async def repository_write(
    tm: TransactionManager, generation_ids: list[int], n: int, *, logged: bool
) -> None:
    """What `ConduitManager.record_counts` does per generation, with or without
    its log entry: the UPDATE, the read-back of the record, and (logged) the
    outbox row."""
    manager = ConduitManager(tm.library.db)
    counts = GenerationCounts(files_copied=n, bytes_transferred=n * 1000)
    if logged:
        async with tm.transaction() as tx:
            for gid in generation_ids:
                await manager.record_counts(tx, gid, counts)
        return
    async with tm.library.db.transaction() as tx:
        for gid in generation_ids:
            await tx.execute(
                _COUNTS_UPDATE,
                (
                    counts.files_copied,
                    counts.metadata_updated,
                    counts.files_deleted,
                    counts.conflicts_resolved,
                    counts.conflicts_pending,
                    counts.files_skipped,
                    counts.bytes_transferred,
                    counts.errors_encountered,
                    gid,
                ),
            )
            row = await tx.fetch_one(f"{GENERATION_SELECT} WHERE g.id = ?", (gid,))
            assert row is not None
            GenerationRecord.from_row(row)


async def bench_repository_writes(
    tm: TransactionManager, conduit_id: int, rounds: int
) -> dict[str, float]:
    manager = ConduitManager(tm.library.db)
    async with tm.transaction() as tx:
        ids = [
            (await manager.create_generation(tx, conduit_id)).id
            for _ in range(WRITE_BATCH)
        ]
    await tm.flushed()
    results: dict[str, list[float]] = {k: [] for k in ("ss", "sl", "bs", "bl")}
    cpu: dict[str, list[float]] = {k: [] for k in ("ss", "sl", "bs", "bl")}
    for r in range(rounds):
        # ABBA order: drift on a shared machine hits both sides alike.
        for logged, key in _order(r, (False, "ss"), (True, "sl")):

            async def singles(logged: bool = logged, r: int = r) -> None:
                for gid in ids[:100]:
                    await repository_write(tm, [gid], r, logged=logged)

            results[key].append(await timed(singles) / 100)
            cpu[key].append(_cpu[-1] / 100)
        for logged, key in _order(r, (False, "bs"), (True, "bl")):

            async def batches(logged: bool = logged, r: int = r) -> None:
                for _ in range(4):
                    await repository_write(tm, ids, r, logged=logged)

            results[key].append(await timed(batches) / 4)
            cpu[key].append(_cpu[-1] / 4)
        await tm.flushed()
    return _write_figures(results, cpu)


async def bench_logged_writes(
    tm: TransactionManager, conduit: tuple[int, uuid.UUID], rounds: int
) -> dict[str, float]:
    results: dict[str, list[float]] = {k: [] for k in ("ss", "sl", "bs", "bl")}
    cpu: dict[str, list[float]] = {k: [] for k in ("ss", "sl", "bs", "bl")}
    singles, batches = 200, 10
    for r in range(rounds):
        for logged, key in _order(r, (False, "ss"), (True, "sl")):
            records = conflict_records(*conduit, singles)

            async def one_per_tx(
                records: list[ConflictRecord] = records, logged: bool = logged
            ) -> None:
                for record in records:
                    await write(tm, [record], logged=logged)

            results[key].append(await timed(one_per_tx) / singles)
            cpu[key].append(_cpu[-1] / singles)
        for logged, key in _order(r, (False, "bs"), (True, "bl")):
            groups = [conflict_records(*conduit, WRITE_BATCH) for _ in range(batches)]

            async def batched(
                groups: list[list[ConflictRecord]] = groups, logged: bool = logged
            ) -> None:
                for group in groups:
                    await write(tm, group, logged=logged)

            results[key].append(await timed(batched) / batches)
            cpu[key].append(_cpu[-1] / batches)
        await tm.flushed()
    return _write_figures(results, cpu)


async def realistic_records(
    tm: TransactionManager,
) -> tuple[int, uuid.UUID, list[Syncable]]:
    library = tm.library
    manager = ConduitManager(library.db)
    async with tm.transaction() as tx:
        source, _ = await ensure_location(
            tx, str(library.device_id), Path("/home/me/Photos")
        )
        target, _ = await ensure_location(
            tx, str(library.device_id), Path("/mnt/backup/Photos")
        )
        conduit = await manager.create(
            tx,
            ConduitSettings(
                "photos",
                source.entry_id,
                target.entry_id,
                SyncMode.MIRROR,
                True,
                "interval:5m",
                True,
                3,
                None,
            ),
        )
    records: list[Syncable] = [source, target, conduit]
    for _ in range(
        20
    ):  # a run: conduit + generation updates, as ConduitManager logs them
        async with tm.transaction() as tx:
            generation = await manager.create_generation(tx, conduit.id)
            records.append(generation)
    await tm.flushed()
    return conduit.id, conduit.uuid, records


async def bench_drain_and_size(tm: TransactionManager, total: int) -> dict[str, float]:
    conduit_id, conduit_uuid, records = await realistic_records(tm)
    mix: list[Syncable] = [*records, *conflict_records(conduit_id, conduit_uuid, 20)]
    start_seq = await tm.log.latest_sequence()
    for start in range(0, total, BATCH):
        async with tm.transaction() as tx:
            await tx.log_batch(
                [mix[(start + i) % len(mix)] for i in range(BATCH)], ChangeType.UPDATE
            )
    drain_s = await timed(tm.flushed)
    count = await tm.log.latest_sequence() - start_seq
    payload = await tm.library.sync_db.fetch_one(
        "SELECT AVG(LENGTH(data)), AVG(LENGTH(record_id) + LENGTH(device_id)"
        " + LENGTH(timestamp) + LENGTH(model_type) + LENGTH(change_type)"
        " + LENGTH(origin)) FROM sync_log WHERE sequence > ?",
        (start_seq,),
    )
    assert payload is not None
    on_disk = await tm.library.sync_db.fetch_one(
        "SELECT SUM(CASE WHEN name = 'sync_log' THEN pgsize ELSE 0 END),"
        " SUM(CASE WHEN name = 'sync_log' THEN 0 ELSE pgsize END) FROM dbstat"
        " WHERE name = 'sync_log' OR name LIKE 'idx_sync_log%'"
        " OR name LIKE 'sqlite_autoindex_sync_log%'"
    )
    assert on_disk is not None
    entries = await tm.log.count()
    return {
        "drain_per_s": count / drain_s,
        "data_bytes_per_entry": float(payload[0]),
        "row_text_bytes_per_entry": float(payload[0] + payload[1]),
        "table_bytes_per_entry": float(on_disk[0] or 0) / entries,
        "index_bytes_per_entry": float(on_disk[1] or 0) / entries,
    }


async def main(entries: int, rounds: int) -> None:
    configure_logging("error")
    root = Path(tempfile.mkdtemp(prefix="synclog-bench-"))
    try:
        library = await open_library(root / "appends")
        try:
            appends = await bench_appends(library, rounds, entries)
        finally:
            await library.close()
        library = await open_library(root / "writes")
        try:
            tm = await open_transaction_manager(library)
            drain = await bench_drain_and_size(tm, entries)
            conduit = await ConduitManager(library.db).get_by_name("photos")
            assert conduit is not None
            writes = await bench_logged_writes(tm, (conduit.id, conduit.uuid), rounds)
            repo = await bench_repository_writes(tm, conduit.id, rounds)
            tm.close()
        finally:
            await library.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"sync log benchmark ({entries} entries, {rounds} rounds, medians)")
    print(
        f"  append, single (1 tx each)     {appends['append_single_per_s']:>10,.0f} entries/s"
    )
    print(
        f"  append, batched ({BATCH}/tx)     {appends['append_batched_per_s']:>10,.0f} entries/s   target >= 20,000"
    )
    print(f"  drain outbox -> sync.db        {drain['drain_per_s']:>10,.0f} entries/s")
    print(
        f"  fetch_since, 10k entries       {appends['fetch_since_10k_ms']:>10.1f} ms   (log of {appends['log_entries']:,.0f})"
    )
    print(f"  bytes/entry: data JSON         {drain['data_bytes_per_entry']:>10.0f}")
    print(
        f"  bytes/entry: row text          {drain['row_text_bytes_per_entry']:>10.0f}"
    )
    print(f"  bytes/entry: on disk, table    {drain['table_bytes_per_entry']:>10.0f}")
    print(
        f"  bytes/entry: on disk, indexes  {drain['index_bytes_per_entry']:>10.0f}"
        "   (seed estimate ~200 in all)"
    )
    for title, figures in (
        ("repository write (record_counts: UPDATE + read-back)", repo),
        ("raw write (prepared INSERT rows, executemany)", writes),
    ):
        print(f"  {title}")
        print(
            f"    single, unlogged / logged    {figures['single_unlogged_ms']:>7.3f} / {figures['single_logged_ms']:.3f} ms   ratio {figures['single_ratio']:.2f}x (cpu {figures['single_cpu_ratio']:.2f}x)"
        )
        print(
            f"    {WRITE_BATCH}/tx, unlogged / logged    {figures['batch_unlogged_ms']:>7.3f} / {figures['batch_logged_ms']:.3f} ms   ratio {figures['batch_ratio']:.2f}x (cpu {figures['batch_cpu_ratio']:.2f}x)   target <= 1.3x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    anyio.run(main, args.entries, args.rounds)
