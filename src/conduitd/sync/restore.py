"""`trash list` and `restore` (issue 9), for the daemon and the one-shot path.

A restore puts a trashed version back where it will survive the next run:
on the source of a mirror or selective conduit (the run then propagates it to
the target), on the side it was removed from for a bidirectional one, or at
a DEST the user names. Whatever stands at a destination inside a root goes
to that root's trash first, with a `sync_trash` row; outside a root nothing
is ever replaced. The trashed version itself stays in the trash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog

from conduitd.config import ConduitConfig, Config
from conduitd.errors import ConduitdError, TransferError, UsageError
from conduitd.jobs.paths import is_within
from conduitd.jobs.restore import RestoreReport, restore_into_root, restore_outside
from conduitd.jobs.rootfs import RootFs
from conduitd.storage.conduits import ConduitManager, ConduitRecord
from conduitd.storage.library import Library
from conduitd.storage.transactions import TransactionManager
from conduitd.storage.trash_rows import (
    TrashReason,
    TrashRow,
    list_trashed,
    record_trashed,
)
from conduitd.sync.trash_retention import restore_side, root_path
from conduitd.wire import path_json, path_text

logger = structlog.get_logger()

JsonObject = dict[str, Any]


class NothingToRestore(ConduitdError):
    """No trashed version matches the request."""

    kind = "not_found"
    exit_code = 1


class RestoreFailed(TransferError):
    """The copy out of the trash failed (permissions, a full disk, I/O)."""

    kind = "restore_failed"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a restore writes: a root and a path in it, or a path outside."""

    root_side: str | None
    root: Path | None
    relative_path: bytes
    outside: bytes | None = None

    def text(self) -> str:
        if self.outside is not None:
            return os.fsdecode(self.outside)
        assert self.root is not None  # a root destination names its root
        return os.fsdecode(os.path.join(bytes(self.root), self.relative_path))


def trash_row_document(conduit: str, row: TrashRow) -> JsonObject:
    """One `trash list` object (DESIGN.md Interfaces)."""
    return {
        "conduit": conduit,
        "generation": row.generation,
        "root": row.root,
        **path_json(row.relative_path),
        "reason": row.reason.value,
        "size": row.size,
        "mtime_ns": row.mtime_ns,
        "content_id": row.content_id,
        "trashed_at": row.trashed_at,
    }


async def trash_list_document(
    library: Library, config: Config, name: str, path: bytes | None
) -> list[JsonObject]:
    """`trash list NAME [PATH] --json`: trashed versions, newest first."""
    config.conduit(name)
    record = await ConduitManager(library.db).get_by_name(name)
    if record is None:
        return []
    rows = await list_trashed(library.db, record.id, path or None)
    return [trash_row_document(name, row) for row in rows]


def trash_list_lines(document: list[JsonObject]) -> list[str]:
    if not document:
        return ["no trashed versions"]
    return [
        f"{d['generation']:>5}  {d['trashed_at']}  {d['root']:<6} {d['reason']:<11}"
        f" {d['size']:>12}  {d['path']}"
        for d in document
    ]


def choose_version(
    rows: list[TrashRow], path: bytes, generation: int | None
) -> tuple[TrashRow, bytes]:
    """The version to restore and the trash path to read it from.

    Exact rows first (newest, or the one of `generation`); else a trashed
    directory that contained `path` (its file is read from inside it).

    Raises:
        NothingToRestore: no trashed version matches.
    """
    candidates = [r for r in rows if generation is None or r.generation == generation]
    for row in candidates:  # newest first, as list_trashed orders them
        if row.relative_path == path:
            return row, row.trash_path
    for row in candidates:
        if row.relative_path and is_within(path, row.relative_path):
            rest = path[len(row.relative_path) :]
            return row, row.trash_path + rest
    which = f" in generation {generation}" if generation is not None else ""
    raise NothingToRestore(f"no trashed version of {path_text(path)!r}{which}")


def destination_for(
    conduit: ConduitConfig, row: TrashRow, path: bytes, dest: Path | None
) -> Destination:
    """Where the version goes: the default side, or inside/outside a root."""
    if dest is None:
        side = restore_side(conduit, row.root)
        return Destination(side, root_path(conduit, side), path)
    absolute = Path(os.path.abspath(os.path.expanduser(dest)))
    parent = Path(os.path.realpath(absolute.parent))
    where = parent / absolute.name
    if where.is_dir() and not where.is_symlink():
        where = where / os.fsdecode(path.rpartition(b"/")[2])
    for side in ("source", "target"):
        root = root_path(conduit, side)
        if where != root and where.is_relative_to(root):
            return Destination(side, root, os.fsencode(where.relative_to(root)))
    return Destination(None, None, b"", outside=os.fsencode(where))


async def restore_version(
    library: Library,
    tm: TransactionManager,
    config: Config,
    name: str,
    path: bytes,
    *,
    generation: int | None = None,
    dest: Path | None = None,
) -> JsonObject:
    """Restore one trashed version; returns what was done (the CLI prints it).

    Raises:
        UsageError: unknown conduit, or a path that is not relative.
        NothingToRestore: no such trashed version.
        SafetyRefusal: DEST outside a root already exists (exit 3).
        TransferError: the trashed copy is gone or damaged, or the copy
            failed (RestoreFailed: permissions, a full disk, I/O).
    """
    conduit = config.conduit(name)
    record = await ConduitManager(library.db).get_by_name(name)
    if record is None:
        raise NothingToRestore(f"conduit {name!r} has no trash yet")
    if not path:
        raise UsageError("name the path to restore, relative to the conduit's roots")
    row, trash_rel = choose_version(
        await list_trashed(library.db, record.id), path, generation
    )
    where = destination_for(conduit, row, path, dest)
    try:
        report = await anyio.to_thread.run_sync(
            _restore_blocking, conduit, row, trash_rel, where, record.sync_generation
        )
    except OSError as exc:
        raise RestoreFailed(f"cannot restore to {where.text()}: {exc}") from exc
    displaced = await _record_displaced(tm, record, where, report)
    logger.info(
        "version_restored",
        conduit=name,
        path=path_text(path),
        generation=row.generation,
        restored_to=where.text(),
        displaced=displaced is not None,
    )
    return {
        "conduit": name,
        **path_json(path),
        "generation": row.generation,
        "root": where.root_side,
        "restored_to": where.text(),
        "size": report.size,
        "content_id": report.content_id,
        "displaced": trash_row_document(name, displaced) if displaced else None,
    }


def _restore_blocking(
    conduit: ConduitConfig,
    row: TrashRow,
    trash_rel: bytes,
    where: Destination,
    generation: int,
) -> RestoreReport:
    content_id = row.content_id if trash_rel == row.trash_path else None
    with RootFs(root_path(conduit, row.root)) as trash_root:
        if where.outside is not None:
            return restore_outside(
                trash_root, trash_rel, where.outside, content_id=content_id
            )
        assert where.root is not None  # not outside: inside a root
        with RootFs(where.root) as dest_root:
            return restore_into_root(
                trash_root,
                trash_rel,
                dest_root,
                where.relative_path,
                generation=generation,
                content_id=content_id,
            )


async def _record_displaced(
    tm: TransactionManager,
    record: ConduitRecord,
    where: Destination,
    report: RestoreReport,
) -> TrashRow | None:
    item = report.displaced
    if item is None or where.root_side is None:
        return None
    row = TrashRow(
        conduit_id=record.id,
        generation=record.sync_generation,
        root=where.root_side,
        relative_path=item.relative_path,
        trash_path=item.trash_rel,
        reason=TrashReason.OVERWRITTEN,
        size=item.size,
        mtime_ns=item.mtime_ns,
        content_id=item.content_id,
    )
    async with tm.transaction() as tx:
        await record_trashed(tx, [row])
    stored = await list_trashed(tm.library.db, record.id, item.relative_path)
    return next(
        (r for r in stored if (r.root, r.trash_path) == (row.root, row.trash_path)),
        row,
    )
