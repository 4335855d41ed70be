"""Copy a trashed version back out of the trash (blocking, worker thread).

The version is copied, never moved: the trashed copy stays a safety net
until retention prunes it. The copy is built under a temporary name (in the
destination root's `.conduitd/tmp/`, or beside DEST for `restore --to`),
made durable, checked against the recorded content id, and only then renamed
into place. Whatever stands at the destination goes to the destination
root's trash first (hard link, or a rename for a directory); outside a root
nothing is ever replaced. Reads in the trash and writes in a root are
dir_fd-relative and never follow a symlink.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace

import blake3

from conduitd.errors import SafetyRefusal, TransferError
from conduitd.jobs import syscalls
from conduitd.jobs.paths import parent_of, split_synced
from conduitd.jobs.rootfs import (
    TMP_DIR,
    RootFs,
    set_mode_fd,
    set_mtime_fd,
    set_symlink_mtime,
)
from conduitd.jobs.trash import TrashedItem, TrashReason, link_to_trash, touched_dirs
from conduitd.jobs.trash_prune import is_trash_path
from conduitd.storage.models import EntryKind

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK_BYTES = 1 << 20


class VersionMissing(TransferError):
    """The trashed version is gone from the trash (pruned, or removed by hand)."""

    kind = "not_found"
    exit_code = 1


class VersionDamaged(TransferError):
    """The trashed file no longer hashes to the content id recorded for it."""

    kind = "content_mismatch"


class DestinationTaken(SafetyRefusal):
    """`restore --to DEST` outside a root never replaces what is there."""

    kind = "refused"


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore wrote; `displaced` is the version it moved to trash first."""

    size: int
    content_id: str | None
    displaced: TrashedItem | None = None


def restore_into_root(
    trash_root: RootFs,
    trash_rel: bytes,
    dest_root: RootFs,
    dest_rel: bytes,
    *,
    generation: int,
    content_id: str | None,
) -> RestoreReport:
    """Restore the trashed version at `trash_rel` to `dest_rel` of `dest_root`.

    An entry at `dest_rel` is put into `dest_root`'s trash of `generation`
    (reason `overwritten`) before the restored version takes its name.

    Raises:
        VersionMissing, VersionDamaged: the trashed version cannot serve.
        UnsafePath: `dest_rel` is the root or lies in `.conduitd`.
        OSError: the copy or the rename failed (nothing left behind).
    """
    split_synced(dest_rel)
    dest_root.ensure_internal(TMP_DIR)
    tmp_rel = dest_root.tmp_path_for(b"r")
    with dest_root.dir_fd(TMP_DIR) as tmp_dir_fd:
        written = _build_copy(
            trash_root, trash_rel, tmp_dir_fd, tmp_rel.rpartition(b"/")[2], content_id
        )
    try:
        dest_root.makedirs_for(dest_rel)
        displaced = _displace(dest_root, dest_rel, generation)
        dest_root.rename_within(tmp_rel, dest_rel, replace=displaced is not None)
        touched = {parent_of(dest_rel), TMP_DIR}
        touched.update(touched_dirs(displaced) if displaced else ())
        for directory in sorted(touched, key=len, reverse=True):
            dest_root.fsync_dir(directory)
    except BaseException:
        with suppress(OSError), dest_root.parent(tmp_rel) as (fd, name):
            _remove_partial(fd, name)
        raise
    return RestoreReport(written.size, written.content_id, displaced)


def restore_outside(
    trash_root: RootFs, trash_rel: bytes, dest: bytes, *, content_id: str | None
) -> RestoreReport:
    """Restore to `dest`, a path the user named outside every root.

    An existing directory `dest` receives the version under its own name.

    Raises:
        DestinationTaken: something already exists at the destination.
        VersionMissing, VersionDamaged: the trashed version cannot serve.
        OSError: the copy or the rename failed (nothing left behind).
    """
    if os.path.isdir(dest):
        dest = os.path.join(dest, trash_rel.rpartition(b"/")[2])
    parent, name = os.path.split(os.path.abspath(dest))
    if os.path.lexists(dest):
        raise DestinationTaken(
            f"{os.fsdecode(dest)} exists; restore --to never replaces"
        )
    dir_fd = os.open(parent or b"/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp_name = (
            b"." + name[:200] + b".conduitd-restore-" + secrets.token_hex(6).encode()
        )
        written = _build_copy(trash_root, trash_rel, dir_fd, tmp_name, content_id)
        try:
            syscalls.rename_noreplace(dir_fd, tmp_name, dir_fd, name)
            syscalls.fsync_fd(dir_fd)
        except FileExistsError:
            _remove_partial(dir_fd, tmp_name)
            raise DestinationTaken(
                f"{os.fsdecode(dest)} appeared meanwhile; restore --to never replaces"
            ) from None
        except BaseException:
            with suppress(OSError):
                _remove_partial(dir_fd, tmp_name)
            raise
    finally:
        os.close(dir_fd)
    return RestoreReport(written.size, written.content_id)


@dataclass(frozen=True, slots=True)
class _Written:
    size: int
    content_id: str | None


def _build_copy(
    trash_root: RootFs,
    trash_rel: bytes,
    dst_dir_fd: int,
    tmp_name: bytes,
    content_id: str | None,
) -> _Written:
    """Copy the trashed entry to `tmp_name` in `dst_dir_fd`; durable and checked."""
    if not is_trash_path(trash_rel):
        raise ValueError(f"{trash_rel!r} is not a trashed version")
    try:
        with trash_root.parent(trash_rel) as (src_dir_fd, src_name):
            try:
                written = _copy_entry(src_dir_fd, src_name, dst_dir_fd, tmp_name)
            except BaseException:
                with suppress(OSError):
                    _remove_partial(dst_dir_fd, tmp_name)
                raise
    except FileNotFoundError:
        raise VersionMissing(
            f"{os.fsdecode(trash_rel)} is no longer in the trash (pruned?)"
        ) from None
    if content_id is not None and written.content_id not in (None, content_id):
        with suppress(OSError):
            _remove_partial(dst_dir_fd, tmp_name)
        raise VersionDamaged(
            f"{os.fsdecode(trash_rel)} hashes to {written.content_id}, "
            f"recorded {content_id}; not restored"
        )
    return written


def _copy_entry(
    src_dir_fd: int, name: bytes, dst_dir_fd: int, dst_name: bytes
) -> _Written:
    st = os.stat(name, dir_fd=src_dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=src_dir_fd)
        os.symlink(target, dst_name, dir_fd=dst_dir_fd)
        set_symlink_mtime(dst_dir_fd, dst_name, st.st_mtime_ns)
        return _Written(len(target), None)
    if stat.S_ISDIR(st.st_mode):
        return _copy_tree(src_dir_fd, name, st, dst_dir_fd, dst_name)
    if stat.S_ISREG(st.st_mode):
        return _copy_file(src_dir_fd, name, dst_dir_fd, dst_name)
    raise TransferError(f"{os.fsdecode(name)}: not a file, symlink or directory")


def _copy_file(
    src_dir_fd: int, name: bytes, dst_dir_fd: int, dst_name: bytes
) -> _Written:
    src_fd = os.open(name, _READ_FLAGS, dir_fd=src_dir_fd)
    try:
        st = os.fstat(src_fd)
        dst_fd = os.open(dst_name, _CREATE_FLAGS, 0o600, dir_fd=dst_dir_fd)
        try:
            hasher = blake3.blake3()
            size = 0
            while chunk := os.read(src_fd, _CHUNK_BYTES):
                hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst_fd, view) :]
                size += len(chunk)
            set_mode_fd(dst_fd, stat.S_IMODE(st.st_mode))
            set_mtime_fd(dst_fd, st.st_mtime_ns)
            syscalls.fsync_fd(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return _Written(size, hasher.hexdigest())


def _copy_tree(
    src_parent_fd: int,
    name: bytes,
    st: os.stat_result,
    dst_parent_fd: int,
    dst_name: bytes,
) -> _Written:
    """A trashed directory, with everything in it (mount points are not crossed)."""
    os.mkdir(dst_name, 0o700, dir_fd=dst_parent_fd)
    size = 0
    with (
        _open_dir(src_parent_fd, name) as src_fd,
        _open_dir(dst_parent_fd, dst_name) as dst_fd,
    ):
        for child in sorted(os.fsencode(n) for n in os.listdir(src_fd)):
            child_st = os.stat(child, dir_fd=src_fd, follow_symlinks=False)
            if child_st.st_dev != st.st_dev:
                continue  # a mount point inside the trash: never crossed
            size += _copy_entry(src_fd, child, dst_fd, child).size
        set_mode_fd(dst_fd, stat.S_IMODE(st.st_mode))
        set_mtime_fd(dst_fd, st.st_mtime_ns)
        syscalls.fsync_fd(dst_fd)
    return _Written(size, None)


@contextmanager
def _open_dir(parent_fd: int, name: bytes) -> Iterator[int]:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _displace(root: RootFs, rel: bytes, generation: int) -> TrashedItem | None:
    """Put what stands at `rel` into trash; None when nothing is there.

    The trashed file's content id is computed from the trashed copy itself,
    so its `sync_trash` row can be verified when it is restored in turn.
    """
    try:
        root.lstat(rel)
    except FileNotFoundError:
        return None
    item = link_to_trash(root, rel, generation, reason=TrashReason.OVERWRITTEN)
    if item.kind is not EntryKind.FILE:
        return item
    fd = root.open_read(item.trash_rel)
    try:
        hasher = blake3.blake3()
        while chunk := os.read(fd, _CHUNK_BYTES):
            hasher.update(chunk)
    finally:
        os.close(fd)
    return replace(item, content_id=hasher.hexdigest())


def _remove_partial(dir_fd: int, name: bytes) -> None:
    """Remove a half-built copy (a file, a symlink or a directory tree)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        with _open_dir(dir_fd, name) as fd:
            os.fchmod(fd, stat.S_IRWXU)
            for child in os.listdir(fd):
                _remove_partial(fd, os.fsencode(child))
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
