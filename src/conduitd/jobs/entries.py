"""Comparing what is on disk now with what the index saw."""

from __future__ import annotations

import os
import stat

from conduitd.storage.models import EntryKind, EntryRow


def kind_of(st: os.stat_result) -> EntryKind | None:
    """The EntryKind of an lstat result; None for sockets, devices, FIFOs."""
    if stat.S_ISREG(st.st_mode):
        return EntryKind.FILE
    if stat.S_ISDIR(st.st_mode):
        return EntryKind.DIRECTORY
    if stat.S_ISLNK(st.st_mode):
        return EntryKind.SYMLINK
    return None


def matches(st: os.stat_result, entry: EntryRow) -> bool:
    """True when the lstat result is still the entry the index saw.

    Kind and inode (when known) always; size and mtime_ns for files and
    symlinks. A directory's size and mtime move with its children, so they are
    not compared.
    """
    if kind_of(st) is not entry.kind:
        return False
    if entry.inode and st.st_ino != entry.inode:
        return False
    if entry.kind is EntryKind.DIRECTORY:
        return True
    return st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns
