"""Metadata-only updates: mode and mtime_ns in place (same inode, no data)."""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass

from conduitd.jobs.entries import matches
from conduitd.jobs.failures import Side, UnreadableEntry, describe, path_failed
from conduitd.jobs.paths import split_synced
from conduitd.jobs.rootfs import RootFs, set_mode_fd, set_mtime_fd, set_symlink_mtime
from conduitd.storage.models import EntryKind, EntryRow


class MetadataStatus(enum.StrEnum):
    UPDATED = "updated"
    SKIPPED_CHANGED = "skipped_changed"
    SKIPPED_VANISHED = "skipped_vanished"


@dataclass(frozen=True, slots=True)
class MetadataOutcome:
    relative_path: bytes
    status: MetadataStatus


def update_metadata(
    root: RootFs, rel: bytes, source: EntryRow, expected_target: EntryRow
) -> MetadataOutcome:
    """Give the target `rel` the source's mode and mtime_ns, in place.

    The target must still be `expected_target` (kind, inode, size, and for
    non-directories mtime_ns): the check and the change use one descriptor,
    so a swapped-in entry is never touched.

    Raises:
        UnreadableEntry: the target is flagged unreadable.
        PathFailed: an OS error on the target.
    """
    split_synced(rel)
    if expected_target.unreadable:
        raise UnreadableEntry(f"{describe(rel)}: flagged unreadable, not updated")
    try:
        if expected_target.kind is EntryKind.SYMLINK:
            return _update_symlink(root, rel, source, expected_target)
        fd = root.open_nofollow(rel)
    except FileNotFoundError:
        return MetadataOutcome(rel, MetadataStatus.SKIPPED_VANISHED)
    except OSError as exc:
        raise path_failed(Side.TARGET, rel, "open", exc) from exc
    try:
        if not matches(os.fstat(fd), expected_target):
            return MetadataOutcome(rel, MetadataStatus.SKIPPED_CHANGED)
        set_mode_fd(fd, stat.S_IMODE(source.mode))
        set_mtime_fd(fd, source.mtime_ns)
    except OSError as exc:
        raise path_failed(Side.TARGET, rel, "set metadata", exc) from exc
    finally:
        os.close(fd)
    return MetadataOutcome(rel, MetadataStatus.UPDATED)


def _update_symlink(
    root: RootFs, rel: bytes, source: EntryRow, expected_target: EntryRow
) -> MetadataOutcome:
    """A symlink's mtime (Linux has no symlink modes)."""
    with root.parent(rel) as (dir_fd, name):
        current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not matches(current, expected_target):
            return MetadataOutcome(rel, MetadataStatus.SKIPPED_CHANGED)
        set_symlink_mtime(dir_fd, name, source.mtime_ns)
    return MetadataOutcome(rel, MetadataStatus.UPDATED)
