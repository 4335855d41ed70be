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
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import blake3

from conduitd.index.marker import CONDUITD_DIR
from conduitd.storage.entries import (
    CONTENT_ID,
    CTIME_NS,
    INODE,
    KIND,
    MODE,
    MTIME_NS,
    SIZE,
    SYMLINK_TARGET,
    UNREADABLE,
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
    """A directory to list, with its fresh metadata.

    `old` is accepted for callers of the first version and ignored: the old
    rows come from the scan's row source.
    """

    relative_path: bytes
    values: EntryValues
    old: EntryValues | None = None


@dataclass(slots=True)
class Listing:
    """One directory as the walk saw it, not yet compared with the index."""

    task: DirTask
    # (child path, lstat result, symlink target for symlinks); emptied when the
    # listing matched its stored digest (nothing to compare)
    entries: list[tuple[bytes, os.stat_result, bytes | None]] = field(
        default_factory=list
    )
    unstatable: list[tuple[bytes, str]] = field(default_factory=list)
    error: str | None = None  # the directory could not be listed
    vanished: bool = False  # it was gone when its turn came
    # the children's names and metadata digested (see `child_term`); None
    # when a child is special, a mount point or could not be stat-ed
    digest: bytes | None = None
    same: bool = False  # digest equals the stored one: every child unchanged
    count: int = 0


# A listing digest is the sum (mod 2**256) of one BLAKE3 per child, so that a
# write of one child updates its parent's digest from the child's old and new
# rows alone (`digest_with`), and the listing order does not matter. A child's
# part: name length, symlink target length, kind, size, mtime_ns, ctime_ns,
# inode, mode, then the name and the target (the lengths make it unambiguous).
_DIGEST_ROW: Final = struct.Struct("<HHBqqqQq")
_DIGEST_BYTES: Final = 32
_DIGEST_MODULUS: Final = 1 << (8 * _DIGEST_BYTES)


def child_term(relative_path: bytes, values: EntryValues) -> int | None:
    """A child row's term in its parent's digest, as a listing that found it
    so computes it; None for a row a listing never vouches for (unreadable,
    a file not hashed, a kind no clean listing holds)."""
    kind = values[KIND]
    if values[UNREADABLE]:
        return None
    if kind == FILE:
        if values[CONTENT_ID] is None:
            return None
        target = b""
    elif kind == DIRECTORY:
        target = b""
    elif kind == SYMLINK:
        target = values[SYMLINK_TARGET] or b""
    else:
        return None
    name = relative_path[relative_path.rfind(b"/") + 1 :]
    part = _DIGEST_ROW.pack(
        len(name),
        len(target),
        kind,
        values[SIZE],
        values[MTIME_NS],
        values[CTIME_NS],
        values[INODE],
        values[MODE],
    )
    return int.from_bytes(blake3.blake3(part + name + target).digest(), "little")


def digest_with(digest: bytes, removed: Iterable[int], added: Iterable[int]) -> bytes:
    """`digest` without the terms of children's old rows, with their new ones."""
    total = int.from_bytes(digest, "little") - sum(removed) + sum(added)
    return (total % _DIGEST_MODULUS).to_bytes(_DIGEST_BYTES, "little")


def list_directories(
    root: bytes,
    tasks: Sequence[DirTask],
    root_dev: int,
    stored: Mapping[bytes, bytes | None],
) -> tuple[list[Listing], list[DirTask]]:
    """List directories (in a worker thread); return them and the
    subdirectories to list next (mount points are not among them).

    `stored` maps directories to the listing digest recorded by the last scan.
    """
    subdirs: list[DirTask] = []
    listings = [_list_one(root, task, root_dev, subdirs, stored) for task in tasks]
    return listings, subdirs


def _list_one(
    root: bytes,
    task: DirTask,
    root_dev: int,
    subdirs: list[DirTask],
    stored: Mapping[bytes, bytes | None],
) -> Listing:
    listing = Listing(task)
    rel = task.relative_path
    prefix = rel + b"/" if rel else b""
    try:
        with os.scandir(absolute(root, rel)) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        listing.vanished = True
        return listing
    except OSError as exc:
        listing.error = str(exc)
        return listing
    append = listing.entries.append
    pack = _DIGEST_ROW.pack
    term = blake3.blake3
    from_bytes = int.from_bytes
    total = 0
    clean = True
    for entry in entries:
        name = entry.name
        if name == CONDUITD_DIR:
            continue
        child = prefix + name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            listing.unstatable.append((child, str(exc)))
            clean = False
            continue
        mode = st.st_mode
        target = None
        if st.st_dev != root_dev:
            clean = False
        elif stat.S_ISREG(mode):
            part = pack(
                len(name),
                0,
                FILE,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                mode,
            )
            total += from_bytes(term(part + name).digest(), "little")
        elif stat.S_ISDIR(mode):
            subdirs.append(DirTask(child, values_from_stat(st, DIRECTORY, None)))
            part = pack(
                len(name),
                0,
                DIRECTORY,
                0,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                mode,
            )
            total += from_bytes(term(part + name).digest(), "little")
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                listing.unstatable.append((child, str(exc)))
                clean = False
                continue
            part = pack(
                len(name),
                len(target),
                SYMLINK,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                mode,
            )
            total += from_bytes(term(part + name + target).digest(), "little")
        else:
            clean = False
        append((child, st, target))
    listing.count = len(listing.entries)
    if clean:
        digest = (total % _DIGEST_MODULUS).to_bytes(_DIGEST_BYTES, "little")
        listing.digest = digest
        if stored.get(rel) == digest:
            listing.same = True
            listing.entries = []
    return listing


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
        # The root itself may be reached through a symlink (as scans do).
        st = os.lstat(path) if rel else os.stat(path)
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
