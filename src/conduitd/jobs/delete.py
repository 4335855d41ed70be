"""Delete one entry after re-checking it: to trash, or permanently."""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass

from conduitd.crashpoints import crash_point
from conduitd.jobs.entries import matches
from conduitd.jobs.failures import (
    Side,
    UnreadableEntry,
    describe,
    path_failed,
)
from conduitd.jobs.paths import split_synced
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.trash import TrashedItem, TrashReason, move_to_trash
from conduitd.storage.models import EntryKind, EntryRow


class DeleteStrategy(enum.StrEnum):
    """The conduit's `delete` setting."""

    TRASH = "trash"
    PERMANENT = "permanent"


class DeleteStatus(enum.StrEnum):
    DELETED = "deleted"
    SKIPPED_CHANGED = "skipped_changed"
    SKIPPED_VANISHED = "skipped_vanished"
    SKIPPED_NOT_EMPTY = "skipped_not_empty"


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    """What became of one delete; `trashed` says where the version went."""

    relative_path: bytes
    kind: EntryKind
    status: DeleteStatus
    trashed: TrashedItem | None = None


def delete_entry(
    root: RootFs,
    rel: bytes,
    expected: EntryRow,
    *,
    generation: int,
    strategy: DeleteStrategy | str,
) -> DeleteOutcome:
    """Remove `rel` if it is still exactly `expected`; never unseen data.

    Files and symlinks go to trash (or are unlinked); a directory is removed
    only when empty, never recursively.

    Raises:
        UnreadableEntry: `expected` is flagged unreadable.
        PathFailed: an OS error, e.g. a parent swapped for a symlink (ELOOP).
    """
    split_synced(rel)
    strategy = DeleteStrategy(strategy)
    if expected.unreadable:
        raise UnreadableEntry(f"{describe(rel)}: flagged unreadable, not deleted")
    try:
        current = root.lstat(rel)
    except FileNotFoundError:
        return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_VANISHED)
    except OSError as exc:
        raise path_failed(Side.TARGET, rel, "lstat", exc) from exc
    if not matches(current, expected):
        return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_CHANGED)
    try:
        if expected.kind is EntryKind.DIRECTORY:
            return _remove_directory(root, rel)
        if strategy is DeleteStrategy.TRASH:
            return _trash(root, rel, expected, generation)
        return _unlink(root, rel, expected, generation)
    except FileNotFoundError:
        return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_VANISHED)
    except OSError as exc:
        raise path_failed(Side.TARGET, rel, "delete", exc) from exc


def _remove_directory(root: RootFs, rel: bytes) -> DeleteOutcome:
    try:
        root.rmdir(rel)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return DeleteOutcome(rel, EntryKind.DIRECTORY, DeleteStatus.SKIPPED_NOT_EMPTY)
    return DeleteOutcome(rel, EntryKind.DIRECTORY, DeleteStatus.DELETED)


def _trash(
    root: RootFs, rel: bytes, expected: EntryRow, generation: int
) -> DeleteOutcome:
    """Move into trash, then check that what moved is what we checked."""
    crash_point("delete.before_trash")
    item = move_to_trash(
        root, rel, generation, reason=TrashReason.DELETED, expected=expected
    )
    crash_point("delete.after_trash")
    if matches(root.lstat(item.trash_rel), expected):
        return DeleteOutcome(rel, expected.kind, DeleteStatus.DELETED, item)
    # Swapped between the check and the move: put it back if the name is free.
    try:
        root.rename_within(item.trash_rel, rel, replace=False)
    except OSError:
        return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_CHANGED, item)
    return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_CHANGED)


def _unlink(
    root: RootFs, rel: bytes, expected: EntryRow, generation: int
) -> DeleteOutcome:
    """Rename into tmp, check what moved, only then unlink (no swap window).

    What was swapped in goes back under its name, or into trash when the name
    was taken again meanwhile (never left in tmp, which is emptied at start).
    """
    tmp_rel = root.tmp_path_for(b"d")
    root.rename_within(rel, tmp_rel, replace=False)
    if matches(root.lstat(tmp_rel), expected):
        root.unlink(tmp_rel)
        return DeleteOutcome(rel, expected.kind, DeleteStatus.DELETED)
    try:
        root.rename_within(tmp_rel, rel, replace=False)
    except FileExistsError:
        item = move_to_trash(
            root, rel, generation, reason=TrashReason.DELETED, current_rel=tmp_rel
        )
        return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_CHANGED, item)
    return DeleteOutcome(rel, expected.kind, DeleteStatus.SKIPPED_CHANGED)
