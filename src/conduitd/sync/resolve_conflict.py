"""`conduitd conflicts` and `conduitd resolve` (issue 6), with or without a daemon.

`resolve` applies the user's choice for one pending conflict in a generation
of its own, through the jobs (the overwritten version goes to trash): `source`
or `target` copies that side's version over the other, `both` keeps both as
`create_conflict_file` does (the newer keeps the name, tie: the source). It
refuses (exit 3) and touches nothing when either side changed since the
conflict was detected: the path is re-read on both sides first and compared
with what the conflict recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from conduitd.config import ConduitConfig
from conduitd.config.enums import ConflictStrategy, SyncMode
from conduitd.errors import SafetyRefusal, UsageError
from conduitd.storage.conduits import ConduitManager, GenerationRecord
from conduitd.storage.conflicts import (
    ConflictRecord,
    ConflictRepository,
    ConflictSide,
    ConflictStatus,
    Resolution,
)
from conduitd.storage.database import Database
from conduitd.storage.models import EntryRow
from conduitd.storage.transactions import LoggedTransaction
from conduitd.sync.conflicts import ConflictResolver, Settlement, taken_in
from conduitd.sync.operations import Conflict, ConflictReason
from conduitd.sync.service import FileSyncService, Snapshot
from conduitd.timeutil import utc_now
from conduitd.wire import path_json

logger = structlog.get_logger()

JsonObject = dict[str, Any]

_STRATEGY: Final = {
    Resolution.SOURCE: ConflictStrategy.SOURCE_WINS,
    Resolution.TARGET: ConflictStrategy.TARGET_WINS,
    Resolution.BOTH: ConflictStrategy.CREATE_CONFLICT_FILE,
}


class ConflictChanged(SafetyRefusal):
    """A side of the conflict changed since detection: nothing was touched."""

    kind = "conflict_changed"


@dataclass(frozen=True, slots=True)
class ResolveOutcome:
    """The generation a `resolve` ran, and whether the conflict is now resolved."""

    conflict_id: int
    conduit: str
    keep: Resolution
    generation: GenerationRecord
    resolved: bool


# --- listing ------------------------------------------------------------------


def conflict_document(record: ConflictRecord, conduit: str) -> JsonObject:
    """One conflict as DESIGN.md Interfaces shows it (`conflicts --json`)."""
    return {
        "id": record.id,
        "conduit": conduit,
        **path_json(record.relative_path),
        "status": record.status.value,
        "detected_generation": record.detected_generation,
        "source": _side_document(record.source),
        "target": _side_document(record.target),
        "resolution": None if record.resolution is None else record.resolution.value,
        "resolved_at": record.resolved_at,
    }


def _side_document(side: ConflictSide) -> JsonObject:
    return {
        "kind": None if side.kind is None else side.kind.name.lower(),
        "size": side.size,
        "mtime_ns": side.mtime_ns,
        "content_id": side.content_id,
    }


async def list_conflicts(db: Database, name: str | None = None) -> list[JsonObject]:
    """Every conflict (of one conduit when `name` is given), oldest first.

    Raises:
        UsageError: no conduit of that name has run here.
    """
    names = {record.id: record.name for record in await ConduitManager(db).list_all()}
    conduit_id = None
    if name is not None:
        matching = [i for i, n in names.items() if n == name]
        if not matching:
            raise UsageError(f"no conduit named {name!r} has run here")
        conduit_id = matching[0]
    records = await ConflictRepository(db).list(conduit_id)
    return [conflict_document(r, names[r.conduit_id]) for r in records]


# --- resolving ----------------------------------------------------------------


async def resolve_conflict(
    service: FileSyncService,
    conflict_id: int,
    keep: Resolution,
    *,
    current: Mapping[str, ConduitConfig] | None = None,
) -> ResolveOutcome:
    """Apply `keep` to a pending conflict in a generation of its own.

    The conflict is marked resolved in the transaction that completes the
    generation, and only when the settlement's copies all landed; otherwise it
    stays pending and the next `resolve` or run sees the path as it is then.

    Args:
        current: the conduits' current configs by name (the daemon's, after a
            reload); default: the service's config.

    Raises:
        UsageError: no such conflict, it is not pending, or its conduit is no
            longer a configured bidirectional conduit.
        ConflictChanged: either side changed since detection (exit 3).
        SafetyRefusal: the conduit is disabled, paused or an endpoint fails
            its checks (exit 3).
    """
    record = await service.conflict_rows.get(conflict_id)
    if record is None:
        raise UsageError(f"no conflict {conflict_id}")
    if record.status is not ConflictStatus.PENDING:
        raise UsageError(
            f"conflict {conflict_id} is already resolved"
            f" (kept {record.resolution.value if record.resolution else '?'})"
        )
    configs = current or {c.name: c for c in service.config.conduits}
    conduit = await _conduit_config(service, record, configs)
    path = record.relative_path
    resolved = False

    def settle(snapshot: Snapshot) -> tuple[Settlement, ...]:
        return (settle_choice(record, snapshot, keep),)

    async def mark(tx: LoggedTransaction, generation: GenerationRecord) -> None:
        nonlocal resolved
        counts = generation.counts
        if counts.errors_encountered or counts.files_skipped:
            return  # something did not land: the user's choice is not in place
        await service.conflict_rows.resolve(tx, conflict_id, keep)
        resolved = True

    name = conduit.name
    generation = await service.settle_now(
        name, (path,), settle, on_complete=mark, conduit=conduit
    )
    logger.info(
        "conflict_resolved" if resolved else "conflict_resolution_incomplete",
        conduit=name,
        conflict=conflict_id,
        keep=keep.value,
        generation=generation.generation,
    )
    return ResolveOutcome(conflict_id, name, keep, generation, resolved)


async def _conduit_config(
    service: FileSyncService,
    record: ConflictRecord,
    configs: Mapping[str, ConduitConfig],
) -> ConduitConfig:
    conduit = await service.conduits.get(record.conduit_id)
    if conduit is None:
        raise UsageError(f"conflict {record.id} names no known conduit")
    current = configs.get(conduit.name)
    if current is None or current.mode is not SyncMode.BIDIRECTIONAL:
        raise UsageError(
            f"conflict {record.id} belongs to {conduit.name!r}, which is no longer"
            " a configured bidirectional conduit"
        )
    return current


def settle_choice(
    record: ConflictRecord, snapshot: Snapshot, keep: Resolution
) -> Settlement:
    """The copies that apply `keep`, if both sides are as the conflict recorded.

    Raises:
        ConflictChanged: a side differs from what the conflict recorded.
    """
    path = record.relative_path
    source, target = snapshot.source.get(path), snapshot.target.get(path)
    for side, now, then in (
        ("source", source, record.source),
        ("target", target, record.target),
    ):
        if not _unchanged(now, then):
            raise ConflictChanged(
                f"conflict {record.id}: the {side} of {path_json(path)['path']} changed"
                " since the conflict was detected; nothing was touched (sync again"
                " to see it as it is now)"
            )
    if source is None or target is None:
        raise ConflictChanged(
            f"conflict {record.id}: one side is absent; sync again instead"
        )
    reason = (
        ConflictReason.BOTH_ADDED
        if snapshot.baseline.get(path) is None
        else ConflictReason.BOTH_MODIFIED
    )
    conflict = Conflict(path, source, target, snapshot.baseline.get(path), reason)
    taken = taken_in(snapshot.source.keys(), snapshot.target.keys())
    return ConflictResolver(_STRATEGY[keep]).settle(conflict, utc_now(), taken)


def _unchanged(entry: EntryRow | None, recorded: ConflictSide) -> bool:
    if entry is None or recorded.kind is None:
        return entry is None and recorded.kind is None
    return (
        entry.kind == recorded.kind
        and entry.size == recorded.size
        and entry.mtime_ns == recorded.mtime_ns
        and entry.content_id == recorded.content_id
        and not entry.unreadable
    )
