"""`sync --dry-run`: the plan from an in-memory scan; nothing is written anywhere.

No marker, no `.conduitd/`, no library rows, not even a state dir: the index
rows of an existing library are read through a read-only SQLite connection
(so unchanged files need not be hashed again), and both trees are scanned in
memory with the index's own scanner.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from conduitd.config import ConduitConfig, SyncMode
from conduitd.index.marker import MarkerStatus, classify_marker, read_marker
from conduitd.index.probes import traits_by_type
from conduitd.index.scanner import ChangeSet, TreeScanner
from conduitd.index.walk import DIRECTORY, DirTask, values_from_stat
from conduitd.storage.entries import EntryValues, entry_row, is_within
from conduitd.storage.library import LIBRARY_DB
from conduitd.storage.models import BaselineRow, EntryKind, EntryRow
from conduitd.storage.state_dir import LIBRARIES_DIR
from conduitd.sync.brakes import check_delete_ratio, check_empty_source
from conduitd.sync.endpoints import ensure_roots
from conduitd.sync.planning import plan_document
from conduitd.sync.resolver import (
    resolve_bidirectional,
    resolve_mirror,
    resolve_selective,
)
from conduitd.sync.rules import IndexRules
from conduitd.sync.space import check_free_space

_VALUES_SQL = (
    "SELECT e.relative_path, e.kind, e.size, e.mtime_ns, e.ctime_ns, e.inode, e.mode,"
    " e.content_id, e.symlink_target, e.unreadable FROM entry e"
    " JOIN location l ON l.id = e.location_id WHERE l.path = ?"
)
_BASELINE_SQL = (
    "SELECT b.relative_path, b.kind, b.size, b.mtime_ns, b.mode, b.content_id,"
    " b.symlink_target, b.generation FROM sync_baseline b"
    " JOIN sync_conduit c ON c.id = b.conduit_id WHERE c.name = ?"
)
_LOCATION_SQL = "SELECT uuid, has_marker, index_lost FROM location WHERE path = ?"
_CONDUIT_SQL = "SELECT sync_generation, paused FROM sync_conduit WHERE name = ?"
_LIBRARY_SQL = "SELECT value FROM library_info WHERE key = 'library_uuid'"


@dataclass(frozen=True, slots=True)
class _Location:
    uuid: uuid.UUID
    has_marker: bool
    index_lost: bool


@dataclass(slots=True)
class _Known:
    """What an existing library says of a conduit (nothing without one)."""

    source: dict[bytes, EntryValues] = field(default_factory=dict)
    target: dict[bytes, EntryValues] = field(default_factory=dict)
    baseline: dict[bytes, BaselineRow] = field(default_factory=dict)
    library: uuid.UUID | None = None
    locations: list[_Location | None] = field(default_factory=lambda: [None, None])
    generation: int = 0
    paused: bool = False


def _library_db(state_dir: Path) -> Path | None:
    root = state_dir / LIBRARIES_DIR
    if not root.is_dir():
        return None
    found = [p / LIBRARY_DB for p in root.iterdir() if (p / LIBRARY_DB).is_file()]
    return found[0] if len(found) == 1 else None


def _read_known(state_dir: Path, conduit: ConduitConfig) -> _Known:
    db = _library_db(state_dir)
    known = _Known()
    if db is None:
        return known
    # A read-only connection to a WAL database creates `-wal` and `-shm` files
    # and leaves them behind: with no WAL in use (no other process has the
    # library open), read it as immutable so that nothing is created at all.
    live = db.with_name(db.name + "-wal").exists()
    conn = sqlite3.connect(
        f"file:{db}?mode=ro{'' if live else '&immutable=1'}", uri=True
    )
    try:
        for side, root in enumerate((conduit.source, conduit.target)):
            rows = conn.execute(_VALUES_SQL, (os.fsencode(root),)).fetchall()
            (known.source, known.target)[side].update(
                {bytes(r[0]): tuple(r[1:]) for r in rows}
            )
            row = conn.execute(_LOCATION_SQL, (os.fsencode(root),)).fetchone()
            if row is not None:
                known.locations[side] = _Location(
                    uuid.UUID(bytes=bytes(row[0])), bool(row[1]), bool(row[2])
                )
        known.baseline = {
            bytes(r[0]): BaselineRow(
                bytes(r[0]), EntryKind(r[1]), r[2], r[3], r[4], r[5], r[6], r[7]
            )
            for r in conn.execute(_BASELINE_SQL, (conduit.name,))
        }
        row = conn.execute(_CONDUIT_SQL, (conduit.name,)).fetchone()
        if row is not None:
            known.generation, known.paused = int(row[0]), bool(row[1])
        row = conn.execute(_LIBRARY_SQL).fetchone()
        known.library = uuid.UUID(row[0]) if row is not None else None
    except sqlite3.Error:
        return _Known()
    finally:
        conn.close()
    return known


def _judge_markers(conduit: ConduitConfig, known: _Known) -> tuple[str | None, bool]:
    """(refusal, union) as the real run's root checks would find them.

    A marker the library does not know means a lost index (a union run); a
    marker that vanished from a root that had one means an unmounted disk.
    """
    union = False
    for root, location in zip(conduit.roots, known.locations, strict=True):
        found = read_marker(os.fsencode(root))
        if found.unreadable:
            return f"the marker of {root} cannot be read", False
        if location is None or known.library is None:
            union = union or found.exists
            continue
        status = classify_marker(found, known.library, location.uuid)
        if status is MarkerStatus.MISSING and location.has_marker:
            return f"the marker of {root} vanished: unmounted?", False
        union = union or location.index_lost or status is MarkerStatus.FOREIGN
    return None, union


async def scan_in_memory(
    root: Path, known: dict[bytes, EntryValues], limiter: anyio.CapacityLimiter
) -> dict[bytes, EntryRow]:
    """What a scan of `root` would record, computed without writing anything."""
    raw = os.fsencode(root)
    try:
        st = await anyio.to_thread.run_sync(os.lstat, raw)
    except FileNotFoundError:
        return {}
    changes = ChangeSet()
    start = DirTask(b"", values_from_stat(st, DIRECTORY, None), known.get(b""))
    await TreeScanner(limiter).collect(raw, st.st_dev, start, dict(known), changes)
    values = dict(known)
    for path in changes.removed:
        values.pop(path, None)
    for prefix in changes.removed_subtrees:
        for path in [p for p in values if is_within(p, prefix)]:
            del values[path]
    values.update(changes.upserts)
    return {path: entry_row(path, v) for path, v in values.items()}


async def preview(
    state_dir: Path, conduit: ConduitConfig, *, force: bool, first_run: bool
) -> dict[str, Any]:
    """The `sync --dry-run --json` document for one conduit."""
    known = await anyio.to_thread.run_sync(_read_known, state_dir, conduit)
    await ensure_roots(
        conduit, first_run=first_run and known.generation == 0, dry_run=True
    )
    baseline = known.baseline
    refused, union = await anyio.to_thread.run_sync(_judge_markers, conduit, known)
    if not conduit.enabled:
        refused = f"conduit {conduit.name!r} is disabled"
    elif known.paused:
        refused = f"conduit {conduit.name!r} is paused"
    limiter = anyio.CapacityLimiter(4)
    source = await scan_in_memory(conduit.source, known.source, limiter)
    target = await scan_in_memory(conduit.target, known.target, limiter)
    include = conduit.include if conduit.mode is SyncMode.SELECTIVE else ()
    rules = IndexRules(conduit.ignore, include, use_index_rules=conduit.use_index_rules)
    two_way = conduit.mode is SyncMode.BIDIRECTIONAL
    # A dry run writes nothing, not even a probe: judge filesystems by type.
    sides = (conduit.source, conduit.target) if two_way else (conduit.target,)
    granularity_ns = max(
        traits_by_type(os.fsencode(p)).mtime_granularity_ns for p in sides
    )
    if two_way:
        union = union or not baseline
        ops = resolve_bidirectional(
            source,
            target,
            baseline,
            rules,
            union=union,
            mtime_granularity_ns=granularity_ns,
        )
    elif conduit.mode is SyncMode.SELECTIVE:
        ops = resolve_selective(
            source,
            target,
            rules,
            now_ns=time.time_ns(),
            recent_s=conduit.recent_s,
            union=union,
            mtime_granularity_ns=granularity_ns,
        )
    else:
        ops = resolve_mirror(
            source, target, rules, union=union, mtime_granularity_ns=granularity_ns
        )
    refused = (
        refused
        or check_empty_source(
            source,
            target,
            rules,
            bidirectional=two_way,
            first_sync=two_way and union,
        )
        or check_delete_ratio(
            ops, target, rules, conduit.max_delete_percent, force, source=source
        )
        or await check_free_space(
            conduit, ops, await anyio.to_thread.run_sync(_existing_roots, conduit)
        )
    )
    return plan_document(conduit.name, ops, refused)


def _existing_roots(conduit: ConduitConfig) -> dict[str, Path]:
    """Each side's root, or for a target a first run would create, its parent
    (the filesystem it would be made on)."""
    target = conduit.target
    if not target.is_dir():
        target = target.parent
    return {"source": conduit.source, "target": target}
