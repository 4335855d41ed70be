"""BLAKE3 content ids of files, read without following symlinks (worker threads).

Per small file, opening it dominates (BENCHMARKING.md): read it whole in one
call. Large files are read in 1 MiB chunks into a reused buffer; from
`PARALLEL_HASH_BYTES` up, BLAKE3 may hash each chunk on several threads. No mmap:
a file truncated while mapped kills the process with SIGBUS.

The row of a hashed file takes its metadata from `fstat` on the open file,
before reading: if the file changes while it is read, the next scan sees a
metadata change and hashes it again (the watcher also reports it).
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import blake3

from conduitd.storage.entries import EntryValues
from conduitd.storage.models import EntryKind

# 1 MiB chunks stay in cache between read and hash: on the bench machine this
# hashes a warm file as fast as BLAKE3 hashes the same bytes held in memory;
# 4 MiB chunks were 15-40 % slower (bench/index_bench.py).
CHUNK_BYTES: Final = 1 << 20
PARALLEL_HASH_BYTES: Final = 16 << 20
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

_buffers = threading.local()


class HashStatus(enum.Enum):
    OK = "ok"
    VANISHED = "vanished"  # gone before it could be opened
    UNREADABLE = "unreadable"  # permission denied or I/O error
    NOT_REGULAR = "not_regular"  # replaced by a symlink, fifo, directory...


@dataclass(frozen=True, slots=True)
class HashOutcome:
    relative_path: bytes
    status: HashStatus
    values: EntryValues | None = None  # set when OK
    error: str | None = None


def hash_bytes(data: bytes) -> str:
    """The content id of bytes held in memory (64 lowercase hex)."""
    return blake3.blake3(data).hexdigest()


def hash_files(root: bytes, paths: Sequence[bytes], root_dev: int) -> list[HashOutcome]:
    """Hash files under `root` (one worker-thread call per batch)."""
    return [hash_file(root, rel, root_dev) for rel in paths]


def hash_file(root: bytes, relative_path: bytes, root_dev: int) -> HashOutcome:
    path = root + b"/" + relative_path if relative_path else root
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return HashOutcome(relative_path, HashStatus.VANISHED)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return HashOutcome(relative_path, HashStatus.NOT_REGULAR)
        return HashOutcome(relative_path, HashStatus.UNREADABLE, error=str(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != root_dev:
            return HashOutcome(relative_path, HashStatus.NOT_REGULAR)
        content_id = _hash_fd(fd, st.st_size)
    except OSError as exc:
        # One file's failure (EACCES, EIO...) never fails the scan: its row is
        # kept, flagged unreadable.
        return HashOutcome(relative_path, HashStatus.UNREADABLE, error=str(exc))
    finally:
        os.close(fd)
    values: EntryValues = (
        int(EntryKind.FILE),
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_mode,
        content_id,
        None,
        0,
    )
    return HashOutcome(relative_path, HashStatus.OK, values)


def _hash_fd(fd: int, size: int) -> str:
    if size < CHUNK_BYTES:
        data = os.read(fd, size + 1)
        if len(data) <= size:  # a short read of a regular file is its end
            return blake3.blake3(data).hexdigest()
        hasher = blake3.blake3(data)
        return _hash_rest(fd, hasher, CHUNK_BYTES)
    if size >= PARALLEL_HASH_BYTES:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        return _hash_rest(fd, hasher, CHUNK_BYTES)
    return _hash_rest(fd, blake3.blake3(), CHUNK_BYTES)


def _hash_rest(fd: int, hasher: blake3.blake3, chunk_bytes: int) -> str:
    buffer = _buffer(chunk_bytes)
    view = memoryview(buffer)
    while True:
        count = os.readv(fd, [buffer])
        if not count:
            return hasher.hexdigest()
        hasher.update(view[:count])


def _buffer(size: int) -> bytearray:
    # One buffer per thread and size: worker threads hash one file at a time.
    key = f"b{size}"
    buffer: bytearray | None = getattr(_buffers, key, None)
    if buffer is None:
        buffer = bytearray(size)
        setattr(_buffers, key, buffer)
    return buffer
