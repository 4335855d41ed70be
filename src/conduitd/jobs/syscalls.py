"""Linux system calls the os module lacks: syncfs and renameat2(NOREPLACE)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import sys
from collections.abc import Callable

_RENAME_NOREPLACE = 1


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    return function


_syncfs = _libc_function("syncfs")
_renameat2 = _libc_function("renameat2")
if _renameat2 is not None:
    _renameat2.argtypes = [  # type: ignore[attr-defined]  # ctypes function object
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
if _syncfs is not None:
    _syncfs.argtypes = [ctypes.c_int]  # type: ignore[attr-defined]  # ctypes function object


def have_syncfs() -> bool:
    """True when syncfs(2) is available (Linux; `os.syncfs` where Python has it)."""
    return hasattr(os, "syncfs") or _syncfs is not None


def syncfs(fd: int) -> bool:
    """Flush the whole filesystem holding `fd`; False when syncfs is unavailable.

    Since Linux 5.8 syncfs reports writeback errors, so an error here means
    data may not have reached the disk.

    Raises:
        OSError: the filesystem reported an error.
    """
    native: Callable[[int], None] | None = getattr(os, "syncfs", None)
    if native is not None:
        native(fd)
        return True
    if _syncfs is None:
        return False
    if _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


def fsync_fd(fd: int) -> None:
    """fsync, with F_FULLFSYNC on macOS (plain fsync does not reach the platter)."""
    if sys.platform == "darwin":
        full_fsync: int | None = getattr(fcntl, "F_FULLFSYNC", None)
        if full_fsync is not None:
            fcntl.fcntl(fd, full_fsync)
            return
    os.fsync(fd)


def rename_noreplace(src_dir_fd: int, src: bytes, dst_dir_fd: int, dst: bytes) -> None:
    """Rename, failing with EEXIST (FileExistsError) when `dst` exists.

    renameat2(RENAME_NOREPLACE) where the kernel and filesystem support it;
    else link + unlink for non-directories (atomic no-replace as well); else
    a check then a rename (racy, last resort).
    """
    if _renameat2 is not None:
        if _renameat2(src_dir_fd, src, dst_dir_fd, dst, _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), os.fsdecode(dst))
    st = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.link(
                src,
                dst,
                src_dir_fd=src_dir_fd,
                dst_dir_fd=dst_dir_fd,
                follow_symlinks=False,
            )
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        else:
            os.unlink(src, dir_fd=src_dir_fd)
            return
    try:
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(dst))
