"""The group commit: temp files durable → old versions to trash → renames →
directories durable. Only then may the caller commit the batch's rows, so the
database never runs ahead of the disk (DESIGN.md "Jobs and durability").
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from conduitd.crashpoints import crash_point, fail_point
from conduitd.errors import TransferError
from conduitd.jobs.copy import TempFile
from conduitd.jobs.entries import matches
from conduitd.jobs.failures import PathFailed, Side, TargetChanged, describe
from conduitd.jobs.paths import parent_of, split_synced
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.trash import (
    TrashedItem,
    TrashReason,
    link_to_trash,
    move_to_trash,
    touched_dirs,
)
from conduitd.storage.models import EntryKind, EntryRow

_FSYNC_WORKERS = 8


class Durability(enum.StrEnum):
    """How a batch is made durable."""

    SYNCFS = "syncfs"  # one syncfs(2) per step; per-file fsync where unavailable
    FSYNC = "fsync"  # fsync each temp file (worker threads) and each directory


class ReplaceStatus(enum.StrEnum):
    REPLACED = "replaced"
    SKIPPED_TARGET_CHANGED = "skipped_target_changed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PendingReplace:
    """A temp file to put in place of `final_rel`, as resolution saw the target."""

    temp: TempFile
    final_rel: bytes
    expected_target: EntryRow | None
    trash_reason: TrashReason = TrashReason.OVERWRITTEN


@dataclass(frozen=True, slots=True)
class ReplaceOutcome:
    """What became of one PendingReplace (same order as the batch).

    `trashed` is set whenever an old version went to trash, whatever the
    status: the caller records a `sync_trash` row for it.
    """

    final_rel: bytes
    status: ReplaceStatus
    trashed: TrashedItem | None = None
    error: TransferError | None = None


class DurabilityError(TransferError):
    """fsync/syncfs of the batch's temp files failed; nothing was put in place.

    The temps are dropped; the caller copies the `items` again from scratch.
    """

    kind = "durability"

    def __init__(
        self, message: str, *, items: Sequence[PendingReplace], errno_: int | None
    ) -> None:
        super().__init__(message)
        self.items = tuple(items)
        self.errno = errno_


@dataclass(slots=True)
class _Slot:
    """Working state of one item during the commit."""

    item: PendingReplace
    outcome: ReplaceOutcome | None = None
    trashed: TrashedItem | None = None
    vacated: bool = False
    touched: set[bytes] = field(default_factory=set)


def commit_batch(
    dst: RootFs,
    items: Sequence[PendingReplace],
    *,
    generation: int,
    trash: bool,
    durable: Durability,
) -> list[ReplaceOutcome]:
    """Put a batch of verified temp files in place, durably.

    Raises:
        DurabilityError: making the temp files durable failed (temps dropped).
        PathFailed: making the directories durable failed after the renames;
            nothing of the batch may be recorded as synced.
    """
    with dst.cached_dirs():
        return _commit(dst, items, generation=generation, trash=trash, durable=durable)


def _commit(
    dst: RootFs,
    items: Sequence[PendingReplace],
    *,
    generation: int,
    trash: bool,
    durable: Durability,
) -> list[ReplaceOutcome]:
    _sync_temps(dst, items, durable)
    crash_point("commit.after_durable")
    slots = [_Slot(item) for item in items]
    for slot in slots:
        _guarded(dst, slot, lambda s: _stage_old_version(dst, s, generation, trash))
    trash_dirs = {d for s in slots if s.trashed for d in touched_dirs(s.trashed)}
    if trash_dirs:  # old versions safe in trash before anything is replaced
        try:
            _sync_dirs(dst, trash_dirs, durable)
        except PathFailed as exc:
            return [_roll_back(dst, slot, exc) for slot in slots]
    for slot in slots:
        _guarded(dst, slot, lambda s: _put_in_place(dst, s))
    touched = {d for s in slots for d in s.touched}
    _sync_dirs(dst, touched, durable)
    crash_point("commit.after_dir_fsync")
    return [_finish(slot) for slot in slots]


def _sync_temps(
    dst: RootFs, items: Sequence[PendingReplace], durable: Durability
) -> None:
    try:
        if durable is Durability.SYNCFS and dst.syncfs():
            fail_point("commit.sync_temps")  # as if syncfs had reported EIO
            return
        pending = [i.temp.tmp_rel for i in items if not i.temp.synced]
        if pending:
            with ThreadPoolExecutor(min(_FSYNC_WORKERS, len(pending))) as pool:
                for _ in pool.map(dst.fsync_entry, pending):
                    pass
        fail_point("commit.sync_temps")
    except OSError as exc:
        drop_temps(dst, items)
        raise DurabilityError(
            f"making {len(items)} copied files durable failed: {exc.strerror}",
            items=items,
            errno_=exc.errno,
        ) from exc


def _sync_dirs(dst: RootFs, dirs: Iterable[bytes], durable: Durability) -> None:
    with _translated_sync():
        if durable is Durability.SYNCFS and dst.syncfs():
            return
        for rel in sorted(dirs):
            dst.fsync_dir(rel)


@contextmanager
def _translated_sync() -> Iterator[None]:
    """OSError while syncing directories → PathFailed (systemic on the target)."""
    try:
        yield
    except OSError as exc:
        raise PathFailed(
            f"making directories durable failed: {exc.strerror}",
            side=Side.TARGET,
            errno_=exc.errno,
        ) from exc


_Step = Callable[[_Slot], None]


def _guarded(dst: RootFs, slot: _Slot, step: _Step) -> None:
    """Run one step for a slot still pending; a failure settles the slot."""
    if slot.outcome is not None:
        return
    rel = slot.item.final_rel
    try:
        step(slot)
    except TargetChanged as exc:
        slot.outcome = ReplaceOutcome(
            rel, ReplaceStatus.SKIPPED_TARGET_CHANGED, error=exc
        )
    except TransferError as exc:
        slot.outcome = ReplaceOutcome(rel, ReplaceStatus.FAILED, error=exc)
    except OSError as exc:
        error = PathFailed(
            f"{describe(rel)}: replace failed: {exc.strerror}",
            side=Side.TARGET,
            errno_=exc.errno,
        )
        slot.outcome = ReplaceOutcome(rel, ReplaceStatus.FAILED, error=error)
    if slot.outcome is not None:
        with suppress(OSError):
            dst.remove_temp(slot.item.temp.tmp_rel)


def _stage_old_version(dst: RootFs, slot: _Slot, generation: int, trash: bool) -> None:
    """Re-check the target; put the old version in trash (or out of the way)."""
    item = slot.item
    split_synced(item.final_rel)
    expected = item.expected_target
    if expected is None:
        # Nothing to stage; the no-replace rename into place is the re-check:
        # whatever appeared there meanwhile makes it fail (TargetChanged).
        return
    current = _lstat_or_none(dst, item.final_rel)
    if current is None or not matches(current, expected):
        raise TargetChanged(
            f"{describe(item.final_rel)}: target changed since resolution"
        )
    if expected.unreadable:
        raise TargetChanged(f"{describe(item.final_rel)}: target flagged unreadable")
    kind_change = expected.kind is not item.temp.kind
    if trash and not kind_change:
        slot.trashed = link_to_trash(
            dst,
            item.final_rel,
            generation,
            reason=item.trash_reason,
            expected=expected,
            seen=current,
        )
    elif expected.kind is EntryKind.DIRECTORY:
        _clear_directory(dst, slot, generation)
    elif trash:
        slot.trashed = move_to_trash(
            dst, item.final_rel, generation, reason=item.trash_reason, expected=expected
        )
    slot.vacated = slot.trashed is not None and slot.trashed.vacated


def _clear_directory(dst: RootFs, slot: _Slot, generation: int) -> None:
    """A directory replaced by a file: rmdir when empty, else into trash.

    Even under `permanent`, a non-empty directory is never removed recursively:
    it goes to trash (its children were not re-checked one by one).
    """
    rel = slot.item.final_rel
    try:
        dst.rmdir(rel)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        slot.trashed = move_to_trash(
            dst,
            rel,
            generation,
            reason=slot.item.trash_reason,
            expected=slot.item.expected_target,
        )
        return
    slot.vacated = True


def _put_in_place(dst: RootFs, slot: _Slot) -> None:
    """os.replace the temp over the final name (no-replace where it must be new)."""
    item, trashed = slot.item, slot.trashed
    rel = item.final_rel
    if trashed is not None and not trashed.vacated:
        current = _lstat_or_none(dst, rel)
        if current is None or current.st_ino != trashed.inode:
            with suppress(OSError):  # our link holds a version the user replaced
                dst.unlink(trashed.trash_rel)
            slot.trashed = None
            raise TargetChanged(f"{describe(rel)}: target replaced during the commit")
    must_be_new = item.expected_target is None or slot.vacated
    try:
        dst.rename_within(item.temp.tmp_rel, rel, replace=not must_be_new)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOENT):
            raise
        raise TargetChanged(
            f"{describe(rel)}: target appeared or its directory vanished"
        ) from exc
    crash_point("commit.after_rename")
    slot.touched.add(parent_of(rel))
    if trashed is not None:
        slot.touched.update(touched_dirs(trashed))


def _roll_back(dst: RootFs, slot: _Slot, exc: PathFailed) -> ReplaceOutcome:
    """The trash could not be made durable: undo the staging, fail the item."""
    with suppress(OSError):
        dst.remove_temp(slot.item.temp.tmp_rel)
    if slot.outcome is not None:
        return _finish(slot)
    trashed = slot.trashed
    if trashed is not None:
        with suppress(OSError):
            if trashed.vacated:
                dst.rename_within(
                    trashed.trash_rel, trashed.relative_path, replace=False
                )
            else:
                dst.unlink(trashed.trash_rel)
            trashed = None
    return ReplaceOutcome(slot.item.final_rel, ReplaceStatus.FAILED, trashed, exc)


def _finish(slot: _Slot) -> ReplaceOutcome:
    if slot.outcome is not None:
        if slot.trashed is not None:
            return ReplaceOutcome(
                slot.outcome.final_rel,
                slot.outcome.status,
                slot.trashed,
                slot.outcome.error,
            )
        return slot.outcome
    return ReplaceOutcome(slot.item.final_rel, ReplaceStatus.REPLACED, slot.trashed)


def _lstat_or_none(dst: RootFs, rel: bytes) -> os.stat_result | None:
    try:
        return dst.lstat(rel)
    except FileNotFoundError:
        return None


def drop_temps(dst: RootFs, items: Iterable[PendingReplace]) -> None:
    """Remove the batch's temp files (already gone is fine)."""
    for item in items:
        with suppress(OSError):
            dst.remove_temp(item.temp.tmp_rel)
