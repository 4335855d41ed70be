"""The endpoint checks every run passes before it may write (DESIGN.md Safety)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from conduitd.config import ConduitConfig, SyncMode
from conduitd.errors import SafetyRefusal
from conduitd.index.indexer import Indexer
from conduitd.index.marker import MarkerStatus
from conduitd.storage.agreement import Agreement
from conduitd.storage.locations import LocationRecord, LocationState
from conduitd.sync.operations import Side

INDEX_READY_TIMEOUT_S = 60.0


class IndexNotReady(SafetyRefusal):
    kind = "index_not_ready"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Both locations of a conduit as they stand when the run may start."""

    source: LocationRecord
    target: LocationRecord
    # Set by a one-shot run's scans: the index versions before them and every
    # path they wrote on either side (None when a scan could not tell).
    versions_before_scans: Agreement | None = None
    scanned_paths: frozenset[bytes] | None = None

    @property
    def index_lost(self) -> bool:
        return self.source.index_lost or self.target.index_lost

    def of(self, side: Side) -> LocationRecord:
        return self.source if side is Side.SOURCE else self.target


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


async def ensure_roots(
    conduit: ConduitConfig, *, first_run: bool, dry_run: bool
) -> bool:
    """Refuse a missing source; create a missing target only on a first run.
    True when the target was created.

    A missing source is never created: an absent source is far more often an
    unmounted disk than a wish. In bidirectional mode either side may be the
    empty one of a first sync, so only the target is ever created.
    """
    source_ok = await anyio.to_thread.run_sync(_is_dir, conduit.source)
    if not source_ok:
        raise SafetyRefusal(
            f"source {conduit.source} of conduit {conduit.name!r} is missing or not"
            " a directory; conduitd never creates a source (is a disk unmounted?)"
        )
    if await anyio.to_thread.run_sync(_is_dir, conduit.target):
        return False
    parent_ok = await anyio.to_thread.run_sync(_is_dir, conduit.target.parent)
    if not (first_run and parent_ok):
        raise SafetyRefusal(
            f"target {conduit.target} of conduit {conduit.name!r} is missing; it is"
            " created only on a conduit's first run and only under an existing"
            " directory"
        )
    if dry_run:
        return False
    await anyio.to_thread.run_sync(_make_target, conduit.target)
    return True


def exists_in(*roots: Path) -> Callable[[bytes], bool]:
    """Whether a relative path names anything under any of `roots` (blocking:
    an lstat each)."""
    raw = [os.fsencode(root) for root in roots]

    def exists(relative_path: bytes) -> bool:
        return any(os.path.lexists(root + b"/" + relative_path) for root in raw)

    return exists


def _make_target(target: Path) -> None:
    os.mkdir(target, 0o755)


async def wait_ready(
    indexer: Indexer, location_id: int, timeout_s: float = INDEX_READY_TIMEOUT_S
) -> LocationRecord:
    """The location once its index is `ready`, else refuse after `timeout_s`."""
    with anyio.move_on_after(timeout_s):
        while True:
            record = await indexer.location(location_id)
            if record.state is LocationState.READY:
                return record
            if record.state is LocationState.UNMOUNTED:
                raise SafetyRefusal(
                    f"{record.path} is unmounted (its marker vanished or its device"
                    " changed); nothing is synced until it comes back"
                )
            await anyio.sleep(0.1)
    raise IndexNotReady(
        f"the index of {record.path} is not ready after {timeout_s:.0f}s"
    )


async def check_identity(indexer: Indexer, record: LocationRecord) -> None:
    """Refuse a root that is not the one indexed (marker gone, device swapped)."""
    if record.state is LocationState.UNMOUNTED:
        raise SafetyRefusal(
            f"{record.path} is unmounted (missing, marker vanished or device"
            " changed); nothing is synced until it comes back"
        )
    if record.state is not LocationState.READY:
        raise IndexNotReady(f"the index of {record.path} is {record.state.value}")
    status = await indexer.marker_status(record.id)
    if status is MarkerStatus.MISSING and record.has_marker:
        raise SafetyRefusal(f"the marker of {record.path} vanished: unmounted?")
    if status is MarkerStatus.UNREADABLE:
        raise SafetyRefusal(f"the marker of {record.path} cannot be read")


def is_two_way(conduit: ConduitConfig) -> bool:
    return conduit.mode is SyncMode.BIDIRECTIONAL
