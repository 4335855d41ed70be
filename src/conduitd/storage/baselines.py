"""`sync_baseline`: per conduit and path, the state both sides agreed on."""

from __future__ import annotations

from collections.abc import Iterable

from conduitd.storage.database import Database, Transaction
from conduitd.storage.models import BaselineRow, EntryKind


async def load_baseline(db: Database, conduit_id: int) -> dict[bytes, BaselineRow]:
    rows = await db.fetch_all(
        "SELECT relative_path, kind, size, mtime_ns, mode, content_id, symlink_target,"
        " generation FROM sync_baseline WHERE conduit_id = ?",
        (conduit_id,),
    )
    return {
        bytes(r["relative_path"]): BaselineRow(
            relative_path=bytes(r["relative_path"]),
            kind=EntryKind(r["kind"]),
            size=r["size"],
            mtime_ns=r["mtime_ns"],
            mode=r["mode"],
            content_id=r["content_id"],
            symlink_target=(
                bytes(r["symlink_target"]) if r["symlink_target"] is not None else None
            ),
            generation=r["generation"],
        )
        for r in rows
    }


async def load_baseline_subset(
    db: Database, conduit_id: int, paths: Iterable[bytes]
) -> dict[bytes, BaselineRow]:
    """Baseline rows of `paths` and their subtrees (incremental resolution)."""
    if not any(paths):
        return {}
    whole = await load_baseline(db, conduit_id)
    prefixes = tuple(p + b"/" for p in paths if p)
    wanted = set(paths)
    return {
        path: row
        for path, row in whole.items()
        if path in wanted or path.startswith(prefixes)
    }


async def has_any_baseline(db: Database, conduit_id: int) -> bool:
    row = await db.fetch_one(
        "SELECT EXISTS (SELECT 1 FROM sync_baseline WHERE conduit_id = ?)",
        (conduit_id,),
    )
    return bool(row and row[0])


async def replace_baseline_paths(
    tx: Transaction,
    conduit_id: int,
    upserts: Iterable[BaselineRow],
    deletes: Iterable[bytes],
) -> None:
    """Upsert agreed rows and drop the paths that no longer exist on either side."""
    await tx.execute_many(
        "DELETE FROM sync_baseline WHERE conduit_id = ? AND relative_path = ?",
        [(conduit_id, path) for path in deletes],
    )
    await tx.execute_many(
        "INSERT INTO sync_baseline (conduit_id, relative_path, kind, content_id, size,"
        " mtime_ns, mode, symlink_target, generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (conduit_id, relative_path) DO UPDATE SET kind = excluded.kind,"
        " content_id = excluded.content_id, size = excluded.size,"
        " mtime_ns = excluded.mtime_ns, mode = excluded.mode,"
        " symlink_target = excluded.symlink_target, generation = excluded.generation",
        [
            (
                conduit_id,
                row.relative_path,
                int(row.kind),
                row.content_id,
                row.size,
                row.mtime_ns,
                row.mode,
                row.symlink_target,
                row.generation,
            )
            for row in upserts
        ],
    )


async def clear_baseline(tx: Transaction, conduit_id: int) -> None:
    await tx.execute("DELETE FROM sync_baseline WHERE conduit_id = ?", (conduit_id,))
