"""Remove trashed versions from a root's `.conduitd/trash/` (blocking, worker thread).

Only paths inside the trash are ever removed; every call is dir_fd-relative
and no symlink is followed (a trashed symlink is removed, not its target). A
trashed directory is removed with its whole subtree; read-only directories in
it are made writable first, so an unprivileged daemon can prune them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field

from conduitd.jobs.paths import parent_of, split_relative
from conduitd.jobs.rootfs import INTERNAL_DIR, TRASH_DIR, RootFs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class PruneReport:
    """What `prune_trashed` did: removed (or already gone), and what failed."""

    removed: list[bytes] = field(default_factory=list)
    failed: list[tuple[bytes, str]] = field(default_factory=list)


def is_trash_path(rel: bytes) -> bool:
    """True for `.conduitd/trash/<generation>/<something>` (never the trash itself)."""
    parts = split_relative(rel)
    return (
        len(parts) >= 4
        and parts[:2] == tuple(split_relative(TRASH_DIR))
        and parts[2].isdigit()
    )


def prune_trashed(root_path: bytes, trash_rels: Iterable[bytes]) -> PruneReport:
    """Remove each trashed version, then the trash directories left empty.

    A version already gone counts as removed (its row may go). A root that
    cannot be opened fails every path.
    """
    report = PruneReport()
    wanted = list(trash_rels)
    try:
        root = RootFs(root_path)
    except OSError as exc:
        report.failed.extend((rel, os.strerror(exc.errno or 0)) for rel in wanted)
        return report
    with root:
        if not _has_internal_dir(root):
            # No `.conduitd` here: an unmounted disk's empty mount point, say.
            # Its trash is elsewhere; its rows must not be taken for gone.
            report.failed.extend((rel, "no .conduitd in this root") for rel in wanted)
            return report
        parents: set[bytes] = set()
        for rel in wanted:
            try:
                remove_trashed(root, rel)
            except (OSError, ValueError) as exc:
                report.failed.append((rel, str(exc)))
                continue
            report.removed.append(rel)
            parents.add(parent_of(rel))
        remove_empty_trash_dirs(root, parents)
    return report


def remove_trashed(root: RootFs, rel: bytes) -> None:
    """Remove one trashed entry (a file, symlink or directory tree) if present.

    Raises:
        ValueError: `rel` is not inside `.conduitd/trash/<generation>/`.
        OSError: the entry could not be removed.
    """
    if not is_trash_path(rel):
        raise ValueError(f"{rel!r} is not a trashed version")
    try:
        with root.parent(rel) as (dir_fd, name):
            _remove_at(dir_fd, name)
    except FileNotFoundError:
        return  # already gone: nothing to remove


def remove_empty_trash_dirs(root: RootFs, dirs: Iterable[bytes]) -> None:
    """rmdir each directory and its parents up to `.conduitd/trash` while empty."""
    for start in sorted(set(dirs), key=len, reverse=True):
        current = start
        while current != TRASH_DIR and current.startswith(TRASH_DIR + b"/"):
            try:
                root.rmdir(current)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT,):
                    break  # not empty (or not ours to remove): stop climbing
            current = parent_of(current)


def _has_internal_dir(root: RootFs) -> bool:
    try:
        return stat.S_ISDIR(root.lstat(INTERNAL_DIR).st_mode)
    except OSError:
        return False


def _remove_at(dir_fd: int, name: bytes) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_dev != st.st_dev:
            raise OSError(errno.EXDEV, "mount point inside the trash", name)
        with suppress(OSError):  # make the directory's entries removable
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        for child in os.listdir(fd):
            _remove_at(fd, os.fsencode(child))
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
