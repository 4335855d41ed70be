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
from pathlib import Path
from typing import Any

import anyio

from conduitd.config import ConduitConfig, SyncMode
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


def _library_db(state_dir: Path) -> Path | None:
    root = state_dir / LIBRARIES_DIR
    if not root.is_dir():
        return None
    found = [p / LIBRARY_DB for p in root.iterdir() if (p / LIBRARY_DB).is_file()]
    return found[0] if len(found) == 1 else None


def _read_known(
    state_dir: Path, conduit: ConduitConfig
) -> tuple[
    dict[bytes, EntryValues], dict[bytes, EntryValues], dict[bytes, BaselineRow]
]:
    db = _library_db(state_dir)
    if db is None:
        return {}, {}, {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        sides = []
        for root in (conduit.source, conduit.target):
            rows = conn.execute(_VALUES_SQL, (os.fsencode(root),)).fetchall()
            sides.append({bytes(r[0]): tuple(r[1:]) for r in rows})
        baseline = {
            bytes(r[0]): BaselineRow(
                bytes(r[0]), EntryKind(r[1]), r[2], r[3], r[4], r[5], r[6], r[7]
            )
            for r in conn.execute(_BASELINE_SQL, (conduit.name,))
        }
    except sqlite3.Error:
        return {}, {}, {}
    finally:
        conn.close()
    return sides[0], sides[1], baseline


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
    await ensure_roots(conduit, first_run=first_run, dry_run=True)
    known_source, known_target, baseline = await anyio.to_thread.run_sync(
        _read_known, state_dir, conduit
    )
    limiter = anyio.CapacityLimiter(4)
    source = await scan_in_memory(conduit.source, known_source, limiter)
    target = await scan_in_memory(conduit.target, known_target, limiter)
    include = conduit.include if conduit.mode is SyncMode.SELECTIVE else ()
    rules = IndexRules(conduit.ignore, include, use_index_rules=conduit.use_index_rules)
    two_way = conduit.mode is SyncMode.BIDIRECTIONAL
    if two_way:
        ops = resolve_bidirectional(source, target, baseline, rules, union=not baseline)
    elif conduit.mode is SyncMode.SELECTIVE:
        ops = resolve_selective(
            source, target, rules, now_ns=time.time_ns(), recent_s=conduit.recent_s
        )
    else:
        ops = resolve_mirror(source, target, rules)
    refused = check_empty_source(
        source,
        target,
        rules,
        bidirectional=two_way,
        first_sync=two_way and not baseline,
    ) or check_delete_ratio(
        ops, target, rules, conduit.max_delete_percent, force, source=source
    )
    return plan_document(conduit.name, ops, refused)
