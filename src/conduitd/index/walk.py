"""Listing directories and probing paths under a root (worker threads).

Everything here is blocking and runs in `anyio.to_thread.run_sync`, one call per
batch of directories or paths. Paths are bytes end to end. Symlinks are never
followed: entries are lstat-ed, and a probed path whose ancestor is not a real
directory is dropped (watchfiles follows directory symlinks, so it reports
paths through them).

`mode` in an entry is `st_mode` as lstat returns it: file-type bits plus
permission bits (`stat.S_IMODE(mode)` is the part jobs set). Directories record
size 0 (their st_size is filesystem noise).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from conduitd.index.marker import CONDUITD_DIR
from conduitd.storage.entries import (
    CTIME_NS,
    INODE,
    KIND,
    MTIME_NS,
    SIZE,
    SYMLINK_TARGET,
    EntryValues,
)
from conduitd.storage.models import EntryKind

FILE: Final = int(EntryKind.FILE)
DIRECTORY: Final = int(EntryKind.DIRECTORY)
SYMLINK: Final = int(EntryKind.SYMLINK)


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def absolute(root: bytes, relative_path: bytes) -> bytes:
    return root + b"/" + relative_path if relative_path else root


def is_conduitd_path(relative_path: bytes) -> bool:
    """True for `.conduitd` (any kind) and anything under it, at any depth."""
    return CONDUITD_DIR in relative_path.split(b"/")


def values_from_stat(
    st: os.stat_result, kind: int, target: bytes | None
) -> EntryValues:
    size = 0 if kind == DIRECTORY else st.st_size
    return (
        kind,
        size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_mode,
        None,
        target,
        0,
    )


def flagged(values: EntryValues) -> EntryValues:
    """The same row marked unreadable (its last known metadata is kept)."""
    return (*values[:8], 1)


def same_metadata(old: EntryValues, new: EntryValues) -> bool:
    """Equal kind, size, mtime, ctime, inode, mode and symlink target."""
    return old[:6] == new[:6] and old[SYMLINK_TARGET] == new[SYMLINK_TARGET]


def needs_hash(old: EntryValues | None, new: EntryValues) -> bool:
    """A file is (re)hashed when new, unreadable before, or its size, mtime_ns,
    ctime_ns or inode changed (issue 4)."""
    return (
        old is None
        or old[KIND] != FILE
        or old[8] != 0
        or old[6] is None
        or old[SIZE] != new[SIZE]
        or old[MTIME_NS] != new[MTIME_NS]
        or old[CTIME_NS] != new[CTIME_NS]
        or old[INODE] != new[INODE]
    )


@dataclass(slots=True)
class ScanWarning:
    event: str
    relative_path: bytes
    detail: str


@dataclass(slots=True)
class DirTask:
    """A directory to list: its path, its fresh values and its old row."""

    relative_path: bytes
    values: EntryValues
    old: EntryValues | None


@dataclass(slots=True)
class ListingResult:
    """What one worker call found; merged on the event loop."""

    # path -> (values, old row or None); rows whose metadata changed
    upserts: dict[bytes, tuple[EntryValues, EntryValues | None]] = field(
        default_factory=dict
    )
    # files to hash: (path, listed values, old row or None)
    to_hash: list[tuple[bytes, EntryValues, EntryValues | None]] = field(
        default_factory=list
    )
    subdirs: list[DirTask] = field(default_factory=list)
    # directories whose old subtree rows must be kept as they are
    kept_subtrees: list[bytes] = field(default_factory=list)
    # listed earlier, gone now: (path, had a row)
    vanished: list[tuple[bytes, bool]] = field(default_factory=list)
    unchanged: int = 0
    unreadable: int = 0
    skipped: int = 0
    warnings: list[ScanWarning] = field(default_factory=list)


def list_directories(
    root: bytes,
    tasks: Sequence[DirTask],
    root_dev: int,
    old: dict[bytes, EntryValues],
) -> ListingResult:
    """List directories, compare each child with its old row, plan the work.

    `old` is shared by the scan's workers: each child's row is popped from it
    (atomic under the GIL), so what remains after the walk has vanished, except
    under `kept_subtrees`.
    """
    result = ListingResult()
    for task in tasks:
        _list_one(root, task, root_dev, old, result)
    return result


def _list_one(
    root: bytes,
    task: DirTask,
    root_dev: int,
    old: dict[bytes, EntryValues],
    result: ListingResult,
) -> None:
    rel = task.relative_path
    try:
        with os.scandir(absolute(root, rel)) as entries:
            children = [(e.name, e) for e in entries]
    except (FileNotFoundError, NotADirectoryError):
        result.vanished.append((rel, task.old is not None))
        return
    except OSError as exc:
        _keep_unreadable_dir(task, result, str(exc))
        return
    for name, entry in children:
        if name == CONDUITD_DIR:
            continue
        child = join(rel, name)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _keep_unstatable(child, old.pop(child, None), result, str(exc))
            continue
        _plan_child(root, child, st, root_dev, old.pop(child, None), result)


def _keep_unreadable_dir(task: DirTask, result: ListingResult, detail: str) -> None:
    base = task.old if task.old is not None else task.values
    if task.old is None or task.old[8] == 0:
        result.upserts[task.relative_path] = (flagged(base), task.old)
    result.kept_subtrees.append(task.relative_path)
    result.unreadable += 1
    result.warnings.append(
        ScanWarning("directory_unreadable", task.relative_path, detail)
    )


def _keep_unstatable(
    child: bytes, old_row: EntryValues | None, result: ListingResult, detail: str
) -> None:
    result.unreadable += 1
    result.warnings.append(ScanWarning("entry_unreadable", child, detail))
    if old_row is None:
        return
    if old_row[8] == 0:
        result.upserts[child] = (flagged(old_row), old_row)
    if old_row[KIND] == DIRECTORY:
        result.kept_subtrees.append(child)


def _plan_child(
    root: bytes,
    child: bytes,
    st: os.stat_result,
    root_dev: int,
    old_row: EntryValues | None,
    result: ListingResult,
) -> None:
    mode = st.st_mode
    if st.st_dev != root_dev:
        _skip_mount_point(child, st, old_row, result)
        return
    if stat.S_ISREG(mode):
        new = values_from_stat(st, FILE, None)
        if needs_hash(old_row, new):
            result.to_hash.append((child, new, old_row))
        elif old_row is not None and old_row[:6] != new[:6]:
            result.upserts[child] = ((*new[:6], old_row[6], None, 0), old_row)
        else:
            result.unchanged += 1
        return
    if stat.S_ISDIR(mode):
        new = values_from_stat(st, DIRECTORY, None)
        result.subdirs.append(DirTask(child, new, old_row))
    elif stat.S_ISLNK(mode):
        try:
            target = os.readlink(absolute(root, child))
        except FileNotFoundError:
            return
        except OSError as exc:
            _keep_unstatable(child, old_row, result, str(exc))
            return
        new = values_from_stat(st, SYMLINK, target)
    else:
        result.skipped += 1
        result.warnings.append(ScanWarning("special_file_skipped", child, _kind(mode)))
        if old_row is not None:  # a file or directory became a fifo, socket...
            result.vanished.append((child, True))
        return
    if old_row is None or not same_metadata(old_row, new) or old_row[8] != 0:
        result.upserts[child] = (new, old_row)
    else:
        result.unchanged += 1


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
        if old_row is None or old_row[8] == 0:
            result.upserts[child] = (flagged(base), old_row)
        result.kept_subtrees.append(child)
    elif old_row is not None and old_row[8] == 0:
        result.upserts[child] = (flagged(old_row), old_row)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "unknown"


@dataclass(slots=True)
class Probe:
    """What lstat says about one path reported by the watcher."""

    relative_path: bytes
    values: EntryValues | None  # None: gone, special, or not reachable
    state: str  # "present" | "gone" | "special" | "unreadable" | "mount"


def probe_paths(root: bytes, paths: Sequence[bytes], root_dev: int) -> list[Probe]:
    """lstat each path, checking that every ancestor is a real directory."""
    ancestors: dict[bytes, bool] = {b"": True}
    probes = []
    for rel in paths:
        if not _ancestors_are_directories(root, rel, root_dev, ancestors):
            probes.append(Probe(rel, None, "gone"))
            continue
        probes.append(_probe_one(root, rel, root_dev))
    return probes


def _ancestors_are_directories(
    root: bytes, rel: bytes, root_dev: int, cache: dict[bytes, bool]
) -> bool:
    parts = rel.split(b"/")
    current = b""
    for part in parts[:-1]:
        current = join(current, part)
        known = cache.get(current)
        if known is None:
            try:
                st = os.lstat(absolute(root, current))
                known = stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev
            except OSError:
                known = False
            cache[current] = known
        if not known:
            return False
    return True


def _probe_one(root: bytes, rel: bytes, root_dev: int) -> Probe:
    path = absolute(root, rel)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return Probe(rel, None, "gone")
    except OSError:
        return Probe(rel, None, "unreadable")
    mode = st.st_mode
    if st.st_dev != root_dev:
        return Probe(rel, values_from_stat(st, DIRECTORY, None), "mount")
    if stat.S_ISREG(mode):
        return Probe(rel, values_from_stat(st, FILE, None), "present")
    if stat.S_ISDIR(mode):
        return Probe(rel, values_from_stat(st, DIRECTORY, None), "present")
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            return Probe(rel, None, "gone")
        except OSError:
            return Probe(rel, None, "unreadable")
        return Probe(rel, values_from_stat(st, SYMLINK, target), "present")
    return Probe(rel, None, "special")


def stat_root(root: bytes) -> os.stat_result | None:
    """stat the root itself (a symlinked root path is followed, once)."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st if stat.S_ISDIR(st.st_mode) else None
