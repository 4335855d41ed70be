"""Compare directory listings with the index rows (worker threads).

A listing whose digest equals the one stored with its directory row is
unchanged as a whole: its children's rows are neither loaded nor compared. For
the others, the children's rows are loaded by path and compared one by one:
files whose size, mtime_ns, ctime_ns or inode changed are hashed, other changes
are written as they are, rows without a listed path have vanished.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from conduitd.index.walk import (
    DIRECTORY,
    FILE,
    SYMLINK,
    DirTask,
    Listing,
    ScanWarning,
    flagged,
    same_metadata,
    values_from_stat,
)
from conduitd.storage.entries import (
    CONTENT_ID,
    CTIME_NS,
    INODE,
    KIND,
    MODE,
    MTIME_NS,
    SIZE,
    UNREADABLE,
    EntryValues,
    parent_path,
)


@dataclass(slots=True)
class ListingResult:
    """What a comparison of listings with the index found."""

    # path -> (values, old row or None); rows whose metadata changed
    upserts: dict[bytes, tuple[EntryValues, EntryValues | None]] = field(
        default_factory=dict
    )
    # files to hash: (path, listed values, old row or None)
    to_hash: list[tuple[bytes, EntryValues, EntryValues | None]] = field(
        default_factory=list
    )
    removed: list[bytes] = field(default_factory=list)
    # directories whose rows go with everything under them
    removed_subtrees: list[bytes] = field(default_factory=list)
    # directories that became something else: the subtree goes, the path stays
    replaced_subtrees: list[bytes] = field(default_factory=list)
    # vanished before any row was written: nothing to delete
    forgotten: list[bytes] = field(default_factory=list)
    # listing digests to store (None: forget the stored one)
    digests: dict[bytes, bytes | None] = field(default_factory=dict)
    # directories with a child that is not cleanly indexed: no digest for them
    dirty: set[bytes] = field(default_factory=set)
    unchanged: int = 0
    unreadable: int = 0
    skipped: int = 0
    warnings: list[ScanWarning] = field(default_factory=list)


class Planner:
    """Plans the rows of one walk. One call at a time, in walk order.

    Args:
        directories: the directory rows of the walked subtree, with their stored
            listing digests (from the index, or empty for an in-memory scan).
    """

    def __init__(
        self, root_dev: int, directories: dict[bytes, tuple[EntryValues, bytes | None]]
    ) -> None:
        self.root_dev = root_dev
        self.directories = directories
        self.stored = {path: digest for path, (_v, digest) in directories.items()}

    def plan_start(self, task: DirTask, old_row: EntryValues | None) -> ListingResult:
        """The walk's first directory: its own row."""
        result = ListingResult()
        self._plan_directory(task.relative_path, task.values, old_row, result)
        return result

    def plan(
        self, listings: Sequence[Listing], old: dict[bytes, EntryValues]
    ) -> ListingResult:
        """Compare listings with `old`, the rows of their children (consumed:
        what is left afterwards has vanished)."""
        result = ListingResult()
        for listing in listings:
            self._plan_listing(listing, old, result)
        for path, row in old.items():
            if row[KIND] == DIRECTORY:
                result.removed_subtrees.append(path)
            else:
                result.removed.append(path)
        return result

    def _plan_listing(
        self, listing: Listing, old: dict[bytes, EntryValues], result: ListingResult
    ) -> None:
        task = listing.task
        rel = task.relative_path
        known = self.directories.get(rel)
        dir_row = known[0] if known is not None else None
        if listing.vanished:
            if dir_row is not None:
                result.removed_subtrees.append(rel)
            else:
                result.forgotten.append(rel)
            return
        if listing.error is not None:
            _keep_unreadable_dir(task, dir_row, result, listing.error)
            if known is not None and known[1] is not None:
                result.digests[rel] = None
            return
        if listing.same:
            result.unchanged += listing.count
            return
        if listing.digest != self.stored.get(rel):
            result.digests[rel] = listing.digest
        # A narrowed listing holds only the children of the buckets that changed.
        result.unchanged += listing.count - len(listing.entries)
        pop = old.pop
        root_dev = self.root_dev
        for child, st, target in listing.entries:
            old_row = pop(child, None)
            mode = st.st_mode
            if (
                old_row is not None
                and old_row[KIND] == DIRECTORY
                and not stat.S_ISDIR(mode)
            ):
                result.replaced_subtrees.append(child)
            if st.st_dev != root_dev:
                _skip_mount_point(child, st, old_row, result)
            elif stat.S_ISREG(mode):
                # `needs_hash`, inlined: this loop runs once per changed file.
                if (
                    old_row is not None
                    and old_row[KIND] == FILE
                    and old_row[UNREADABLE] == 0
                    and old_row[SIZE] == st.st_size
                    and old_row[MTIME_NS] == st.st_mtime_ns
                    and old_row[CTIME_NS] == st.st_ctime_ns
                    and old_row[INODE] == st.st_ino
                    and old_row[CONTENT_ID] is not None
                ):
                    if old_row[MODE] == mode:
                        result.unchanged += 1
                    else:
                        new = (*old_row[:MODE], mode, *old_row[CONTENT_ID:])
                        result.upserts[child] = (new, old_row)
                else:
                    listed = values_from_stat(st, FILE, None)
                    result.to_hash.append((child, listed, old_row))
            elif stat.S_ISDIR(mode):
                values = values_from_stat(st, DIRECTORY, None)
                self._plan_directory(child, values, old_row, result)
            elif stat.S_ISLNK(mode):
                values = values_from_stat(st, SYMLINK, target)
                if (
                    old_row is None
                    or old_row[UNREADABLE]
                    or not same_metadata(old_row, values)
                ):
                    result.upserts[child] = (values, old_row)
                else:
                    result.unchanged += 1
            else:
                result.skipped += 1
                result.warnings.append(
                    ScanWarning("special_file_skipped", child, _kind(mode))
                )
                if old_row is not None and old_row[KIND] != DIRECTORY:
                    result.removed.append(child)
        for child, detail in listing.unstatable:
            _keep_unstatable(child, pop(child, None), result, detail)

    def _plan_directory(
        self,
        path: bytes,
        values: EntryValues,
        old_row: EntryValues | None,
        result: ListingResult,
    ) -> None:
        if old_row is not None and old_row[KIND] == DIRECTORY:
            self.directories.setdefault(path, (old_row, None))
        if old_row is None or old_row[UNREADABLE] or not same_metadata(old_row, values):
            result.upserts[path] = (values, old_row)
        else:
            result.unchanged += 1


def _keep_unreadable_dir(
    task: DirTask, old_row: EntryValues | None, result: ListingResult, detail: str
) -> None:
    # Its subtree rows are not loaded, so none is deleted: an unreadable
    # directory never looks emptied.
    # Always planned: it overrides what its parent's listing planned for it (a
    # row equal to the old one is not written).
    base = old_row if old_row is not None else task.values
    result.upserts[task.relative_path] = (flagged(base), old_row)
    result.dirty.add(parent_path(task.relative_path))
    result.unreadable += 1
    result.warnings.append(
        ScanWarning("directory_unreadable", task.relative_path, detail)
    )


def _keep_unstatable(
    child: bytes, old_row: EntryValues | None, result: ListingResult, detail: str
) -> None:
    result.unreadable += 1
    result.warnings.append(ScanWarning("entry_unreadable", child, detail))
    if old_row is not None and old_row[UNREADABLE] == 0:
        result.upserts[child] = (flagged(old_row), old_row)


def _skip_mount_point(
    child: bytes, st: os.stat_result, old_row: EntryValues | None, result: ListingResult
) -> None:
    # Not crossed (DESIGN.md Jobs): a directory is recorded, flagged unreadable,
    # so that nothing under it is ever deleted or overwritten on either side.
    result.skipped += 1
    result.warnings.append(
        ScanWarning("mount_point_skipped", child, f"st_dev {st.st_dev}")
    )
    if stat.S_ISDIR(st.st_mode):
        base = old_row if old_row is not None else values_from_stat(st, DIRECTORY, None)
        if old_row is None or old_row[UNREADABLE] == 0:
            result.upserts[child] = (flagged(base), old_row)
    elif old_row is not None and old_row[UNREADABLE] == 0:
        result.upserts[child] = (flagged(old_row), old_row)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "unknown"
