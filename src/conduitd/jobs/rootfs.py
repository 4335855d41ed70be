"""A handle on one endpoint root: every call below it is dir_fd-relative.

Walking to a parent opens each component with O_NOFOLLOW relative to the
previous directory, so a directory swapped for a symlink mid-run makes the walk
fail (ELOOP/ENOTDIR) instead of leading out of the root; a component on another
device (a mount point inside the root) fails with EXDEV and is not crossed.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Self

from conduitd.jobs import syscalls
from conduitd.jobs.paths import join_relative, split_relative
from conduitd.storage.models import EntryRow

INTERNAL_DIR = b".conduitd"
TMP_DIR = b".conduitd/tmp"
TRASH_DIR = b".conduitd/trash"
_INTERNAL_MODE = 0o700
_DEFAULT_DIR_MODE = 0o755

_CACHED_DIRS_MAX = 64  # directories one thread keeps open in cached_dirs()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in under a name must not hang the open.
_ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PATH_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class RootFs:
    """An open endpoint root; thread-safe for concurrent operations.

    Args:
        path: the root directory (opened once; symlinks in it are followed,
            nothing below it ever is).
        tmp_stem: what this object's temp names start with after their
            prefix (random by default; a forked copier gets one the parent
            can clean up after, see `remove_temps_of`).
    """

    def __init__(self, path: PathArg, *, tmp_stem: bytes | None = None) -> None:
        self.path = os.fsencode(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        opened = os.fstat(self._fd)
        self.st_dev, self.st_ino = opened.st_dev, opened.st_ino
        self._lock = threading.Lock()
        self._tmp_fd: int | None = None
        self._local = threading.local()  # `.dirs`: this thread's cached_dirs()
        # `.conduitd/...` directories made or found by this object: a commit
        # trashing 1,000 files made sure of each trash directory 1,000 times
        # (4,000 mkdir calls, 3,400 of them EEXIST; issue 5 bench).
        self._internal_dirs: set[bytes] = set()
        self._tmp_stem = tmp_stem or secrets.token_hex(8).encode()
        self._tmp_count = itertools.count()  # next() is atomic under the GIL

    def __repr__(self) -> str:
        return f"RootFs({os.fsdecode(self.path)!r})"

    def close(self) -> None:
        """Close the root (and the cached tmp directory) descriptors."""
        with self._lock:
            if self._tmp_fd is not None:
                os.close(self._tmp_fd)
                self._tmp_fd = None
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fileno(self) -> int:
        """The root directory's descriptor (owned by this object)."""
        if self._fd < 0:
            raise ValueError("RootFs is closed")
        return self._fd

    # -- walking ---------------------------------------------------------------

    def _walk(self, parts: tuple[bytes, ...], start: int | None = None) -> int:
        """Open the directory at `parts` (new fd), one no-follow step at a time,
        from the root or from `start` (an open directory, left open)."""
        fd = os.dup(self.fileno() if start is None else start)
        try:
            for part in parts:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
                if os.fstat(fd).st_dev != self.st_dev:
                    raise OSError(errno.EXDEV, "mount point inside the root", part)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_dir(self, rel: bytes) -> int:
        """A new descriptor for the directory `rel` (the caller closes it)."""
        return self._walk(split_relative(rel))

    @contextmanager
    def cached_dirs(self) -> Iterator[None]:
        """Within the block, this thread reuses the directories it walked to.

        Walking every component again for each file of a batch cost a third of
        a small-file copy's system calls (issue 5 bench). A cached descriptor
        still came from a no-follow walk, so a symlink swapped in later is
        never followed: the worst a concurrent rename can do is make a write
        land in the directory where the user moved it. Renames and removals
        through this object drop what they move from the cache.
        """
        if getattr(self._local, "dirs", None) is not None:
            yield  # nested: the outer block owns the cache
            return
        dirs = _DirCache()
        self._local.dirs = dirs
        try:
            yield
        finally:
            self._local.dirs = None
            dirs.close()

    def _cached(self) -> _DirCache | None:
        dirs: _DirCache | None = getattr(self._local, "dirs", None)
        return dirs

    def _uncache(self, rel: bytes) -> None:
        """Forget `rel` and what lies under it (it is being moved or removed)."""
        dirs = self._cached()
        if dirs is not None:
            dirs.forget(rel)

    def dir_fd(self, rel: bytes) -> _OpenDir:
        """The directory `rel`, open for the duration of a `with` block.

        (A class rather than `@contextmanager`: it runs several times for
        each copied file.)
        """
        if rel == TMP_DIR and self._tmp_fd is not None:
            return _OpenDir(self._tmp_fd, owned=False)
        dirs = self._cached()
        if dirs is not None:
            fd = dirs.get(rel)
            if fd is not None:
                return _OpenDir(fd, owned=False, cache=dirs)
            fd = self._open_below_cached(dirs, rel)
            if dirs.add(rel, fd):
                return _OpenDir(fd, owned=False, cache=dirs)
            return _OpenDir(fd, owned=True)
        return _OpenDir(self.open_dir(rel), owned=True)

    def _open_below_cached(self, dirs: _DirCache, rel: bytes) -> int:
        """`open_dir(rel)`, walking from its nearest cached ancestor: each new
        trash directory of a commit was walked to from the root (four levels
        down `.conduitd/trash/<generation>/`, issue 5 bench)."""
        parts = split_relative(rel)
        for depth in range(len(parts) - 1, 0, -1):
            start = dirs.get(join_relative(parts[:depth]))
            if start is not None:
                return self._walk(parts[depth:], start)
        return self._walk(parts)

    def parent(self, rel: bytes) -> _ParentDir:
        """The parent directory of `rel` (open) and the last component, for
        a `with` block."""
        parts = split_relative(rel)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "the root has no parent", "")
        return _ParentDir(self.dir_fd(join_relative(parts[:-1])), parts[-1])

    # -- single entries --------------------------------------------------------

    def lstat(self, rel: bytes) -> os.stat_result:
        """lstat of `rel` (the root itself for `b""`)."""
        if rel == b"":
            return os.fstat(self.fileno())
        with self.parent(rel) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def open_read(self, rel: bytes) -> int:
        """Open `rel` for reading without following a symlink (caller closes)."""
        with self.parent(rel) as (fd, name):
            return os.open(name, _ENTRY_FLAGS, dir_fd=fd)

    def open_nofollow(self, rel: bytes) -> int:
        """Open the entry `rel` itself: read-only when allowed, else O_PATH.

        A symlink yields an O_PATH descriptor on the link; fstat works on
        either kind, `set_mode_fd`/`set_mtime_fd` handle both.
        """
        with self.parent(rel) as (fd, name):
            try:
                return os.open(name, _ENTRY_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.ELOOP, errno.EPERM):
                    raise
                return os.open(name, _PATH_FLAGS, dir_fd=fd)

    def mkdir(self, rel: bytes, mode: int) -> None:
        """Create the directory `rel` with exactly `mode` (not left to the umask)."""
        with self.parent(rel) as (fd, name):
            _mkdir_at(fd, name, mode)

    def makedirs_for(
        self, rel: bytes, sources: Mapping[bytes, EntryRow] | None = None
    ) -> list[bytes]:
        """Create the missing parents of `rel`, parents first.

        Modes come from `sources` (relative path → the source's entry) or are
        0o755. Returns the relative paths created.
        """
        parts = split_relative(rel)[:-1]
        created: list[bytes] = []
        fd = os.dup(self.fileno())
        try:
            for depth, part in enumerate(parts, start=1):
                prefix = join_relative(parts[:depth])
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    source = (sources or {}).get(prefix)
                    mode = stat.S_IMODE(source.mode) if source else _DEFAULT_DIR_MODE
                    with suppress(FileExistsError):
                        _mkdir_at(fd, part, mode)
                        created.append(prefix)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        finally:
            os.close(fd)
        return created

    def readlink(self, rel: bytes) -> bytes:
        """The target of the symlink `rel`."""
        with self.parent(rel) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def symlink(self, target: bytes, rel: bytes) -> None:
        """Create the symlink `rel` pointing at `target` (never resolved here)."""
        with self.parent(rel) as (fd, name):
            os.symlink(target, name, dir_fd=fd)

    def unlink(self, rel: bytes) -> None:
        """Remove the non-directory `rel`."""
        with self.parent(rel) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmdir(self, rel: bytes) -> None:
        """Remove the empty directory `rel`."""
        self._uncache(rel)
        self._internal_dirs.discard(rel)
        with self.parent(rel) as (fd, name):
            os.rmdir(name, dir_fd=fd)

    def rename_within(self, src_rel: bytes, dst_rel: bytes, *, replace: bool) -> None:
        """Rename inside the root; without `replace`, fail if `dst_rel` exists."""
        self._uncache(src_rel)
        self._uncache(dst_rel)
        with self.parent(src_rel) as (sfd, sname), self.parent(dst_rel) as (dfd, dname):
            if replace:
                os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            else:
                syscalls.rename_noreplace(sfd, sname, dfd, dname)

    def link_within(self, src_rel: bytes, dst_rel: bytes) -> None:
        """Hard-link `src_rel` (a symlink itself, never its target) as `dst_rel`."""
        with self.parent(src_rel) as (sfd, sname), self.parent(dst_rel) as (dfd, dname):
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def chmod(self, rel: bytes, mode: int) -> None:
        """Set the mode bits of `rel` in place; a symlink is left alone (Linux)."""
        fd = self.open_nofollow(rel)
        try:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                set_mode_fd(fd, mode)
        finally:
            os.close(fd)

    def utime(self, rel: bytes, mtime_ns: int) -> None:
        """Set atime and mtime of `rel` itself (a symlink's own times)."""
        with self.parent(rel) as (fd, name):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                set_symlink_mtime(fd, name, mtime_ns)
                return
        entry_fd = self.open_nofollow(rel)
        try:
            set_mtime_fd(entry_fd, mtime_ns)
        finally:
            os.close(entry_fd)

    # -- durability ------------------------------------------------------------

    def fsync_dir(self, rel: bytes) -> None:
        """fsync the directory `rel` (its entries become durable)."""
        with self.dir_fd(rel) as fd:
            syscalls.fsync_fd(fd)

    def fsync_entry(self, rel: bytes) -> None:
        """fsync the file `rel`; a symlink's parent directory instead.

        A file we may not open (a copy whose mode lacks u+r) falls back to a
        global sync(2): rare, slow, correct.
        """
        try:
            fd = self.open_read(rel)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                with self.parent(rel) as (dir_fd, _name):
                    syscalls.fsync_fd(dir_fd)
                return
            if exc.errno not in (errno.EACCES, errno.EPERM):
                raise
            os.sync()
            return
        try:
            syscalls.fsync_fd(fd)
        finally:
            os.close(fd)

    def syncfs(self) -> bool:
        """syncfs(2) on this root's filesystem; False when unavailable."""
        return syscalls.syncfs(self.fileno())

    # -- the internal area -----------------------------------------------------

    def ensure_internal(self, rel: bytes) -> None:
        """Create `.conduitd/...` directories (mode 0o700) on demand.

        Once per object: a directory removed behind its back afterwards makes
        the next write into it fail; `forget_internal_dirs` then starts over.
        """
        if rel in self._internal_dirs:
            return
        parts = split_relative(rel)
        if parts[:1] != (INTERNAL_DIR,):
            raise ValueError(f"{rel!r} is not in {INTERNAL_DIR!r}")
        fd = os.dup(self.fileno())
        try:
            for part in parts:
                with suppress(FileExistsError):
                    _mkdir_at(fd, part, _INTERNAL_MODE)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        finally:
            os.close(fd)
        self._internal_dirs.add(rel)

    def known_internal_dir(self, rel: bytes) -> bool:
        """`rel` was made or found a directory by this object (see below)."""
        return rel in self._internal_dirs

    def note_internal_dir(self, rel: bytes) -> None:
        """Remember `rel` as a directory under `.conduitd` that exists."""
        self._internal_dirs.add(rel)

    def forget_internal_dirs(self) -> bool:
        """Forget them all, and this thread's cached descriptors under
        `.conduitd` (one may be of a directory removed since); False when
        there was nothing to forget."""
        known = bool(self._internal_dirs)
        self._internal_dirs.clear()
        self._uncache(INTERNAL_DIR)
        return known

    def _tmp_dir(self) -> int:
        with self._lock:
            if self._tmp_fd is None:
                self.ensure_internal(TMP_DIR)
                self._tmp_fd = self.open_dir(TMP_DIR)
            return self._tmp_fd

    def tmp_path_for(self, prefix: bytes = b"c") -> bytes:
        """A fresh, unique name in `.conduitd/tmp/` (ASCII, well under 255 bytes).

        Creates the tmp directory when missing; the name is not reserved, use
        O_EXCL (or a no-replace rename) when creating it.
        """
        self._tmp_dir()
        # A random stem per object and a counter: one getrandom(2) per temp
        # file was 2 % of a first mirror of 10k files (issue 5 bench). Names
        # need only be unique (O_EXCL settles a clash), not unpredictable:
        # `.conduitd/` is 0o700 and nothing is ever opened there by name
        # without O_EXCL or O_NOFOLLOW.
        return b"%s/%s-%s%x" % (TMP_DIR, prefix, self._tmp_stem, next(self._tmp_count))

    def create_temp(self, prefix: bytes = b"c") -> tuple[bytes, int]:
        """Create an empty temp file (mode 0o600, O_EXCL): its rel and a write fd."""
        tmp_fd = self._tmp_dir()
        while True:
            rel = self.tmp_path_for(prefix)
            try:
                fd = os.open(rel.rpartition(b"/")[2], _TEMP_FLAGS, 0o600, dir_fd=tmp_fd)
            except FileExistsError:
                continue
            return rel, fd

    def remove_temp(self, tmp_rel: bytes) -> None:
        """Drop a temp entry; already gone is fine."""
        if not tmp_rel.startswith(TMP_DIR + b"/"):
            raise ValueError(f"{tmp_rel!r} is not a temp path")
        with suppress(FileNotFoundError):
            self.unlink(tmp_rel)

    def remove_temps_of(self, stem: bytes) -> int:
        """Remove the temps an object made with `tmp_stem=stem`; count them.

        For a forked copier that was killed or died: whatever it left in
        `.conduitd/tmp/` is named `<prefix>-<stem><n>`.
        """
        return self._remove_in_tmp(
            lambda name: name.partition(b"-")[2].startswith(stem)
        )

    def clean_tmp(self) -> int:
        """Empty `.conduitd/tmp/` (crash recovery, before any run); count removed.

        Only call while no run writes this root.
        """
        return self._remove_in_tmp(lambda name: True)

    def _remove_in_tmp(self, chosen: Callable[[bytes], bool]) -> int:
        try:
            fd = self.open_dir(TMP_DIR)
        except FileNotFoundError:
            return 0
        removed = 0
        try:
            for name in os.listdir(fd):
                raw = os.fsencode(name)
                if not chosen(raw):
                    continue
                try:
                    os.unlink(raw, dir_fd=fd)
                except IsADirectoryError:
                    os.rmdir(raw, dir_fd=fd)
                except FileNotFoundError:
                    continue
                removed += 1
        finally:
            os.close(fd)
        return removed


def clean_root_tmp(path: PathArg) -> int:
    """Empty `.conduitd/tmp/` of the root at `path`; count removed.

    Crash recovery at start, while nothing writes the root. A missing or
    unreadable root counts 0: the run's own checks refuse it later.
    """
    try:
        with RootFs(path) as root:
            return root.clean_tmp()
    except OSError:
        return 0


def _mkdir_at(dir_fd: int, name: bytes, mode: int) -> None:
    """mkdir then an explicit chmod, so the umask never decides the mode."""
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        os.fchmod(fd, stat.S_IMODE(mode))
    finally:
        os.close(fd)


def set_mode_fd(fd: int, mode: int) -> None:
    """fchmod, also for an O_PATH descriptor (through /proc/self/fd)."""
    try:
        os.fchmod(fd, stat.S_IMODE(mode))
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(mode))


def set_mtime_fd(fd: int, mtime_ns: int) -> None:
    """atime = mtime = `mtime_ns`, also for an O_PATH descriptor."""
    try:
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
        os.utime(f"/proc/self/fd/{fd}", ns=(mtime_ns, mtime_ns))


def set_symlink_mtime(dir_fd: int, name: bytes, mtime_ns: int) -> None:
    """A symlink's own atime/mtime (utimensat with AT_SYMLINK_NOFOLLOW)."""
    os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


class _OpenDir:
    """A directory descriptor for a `with` block; closed at its end if owned,
    held in its cache (not evicted) until then if cached."""

    __slots__ = ("cache", "fd", "owned")

    def __init__(self, fd: int, *, owned: bool, cache: _DirCache | None = None) -> None:
        self.fd, self.owned, self.cache = fd, owned, cache
        if cache is not None:
            cache.hold(fd)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            os.close(self.fd)
        elif self.cache is not None:
            self.cache.release(self.fd)


class _ParentDir:
    """`RootFs.parent`'s result: (directory descriptor, last component)."""

    __slots__ = ("directory", "name")

    def __init__(self, directory: _OpenDir, name: bytes) -> None:
        self.directory, self.name = directory, name

    def __enter__(self) -> tuple[int, bytes]:
        return self.directory.__enter__(), self.name

    def __exit__(self, *exc: object) -> None:
        self.directory.__exit__()


class _DirCache:
    """One thread's open directories inside `RootFs.cached_dirs()`, least
    recently used first.

    A descriptor is closed early only when no `_OpenDir` holds it (`held`):
    one handed out may still be in use, e.g. by the other half of a rename,
    and a closed number is reused by the next open, for another directory.
    Evicting the least recently used keeps a batch that walks its paths in
    order (each step of a commit does) hitting the cache past its size: with
    no eviction, a 1 %-changed run's commit over ~1,300 directories walked
    every path from the root again (issue 5 bench).
    `prefixes` holds every cached path and its ancestors, so that `forget`
    of a path with nothing cached at or under it costs one set lookup.
    Forgotten descriptors (`retired`) are closed when the block ends.
    """

    __slots__ = ("fds", "held", "prefixes", "retired")

    def __init__(self) -> None:
        self.fds: OrderedDict[bytes, int] = OrderedDict()
        self.held: dict[int, int] = {}
        self.prefixes: set[bytes] = set()
        self.retired: list[int] = []

    def get(self, rel: bytes) -> int | None:
        fd = self.fds.get(rel)
        if fd is not None:
            self.fds.move_to_end(rel)
        return fd

    def add(self, rel: bytes, fd: int) -> bool:
        """Keep `fd` open for the rest of the block; False when every cached
        descriptor is held (the caller then closes `fd` itself)."""
        if len(self.fds) >= _CACHED_DIRS_MAX and not self._evict_one():
            return False
        self.fds[rel] = fd
        while rel and rel not in self.prefixes:
            self.prefixes.add(rel)
            rel = rel.rpartition(b"/")[0]
        return True

    def _evict_one(self) -> bool:
        for rel, fd in self.fds.items():
            if fd not in self.held:
                del self.fds[rel]
                os.close(fd)
                return True
        return False

    def hold(self, fd: int) -> None:
        self.held[fd] = self.held.get(fd, 0) + 1

    def release(self, fd: int) -> None:
        left = self.held[fd] - 1
        if left:
            self.held[fd] = left
        else:
            del self.held[fd]

    def forget(self, rel: bytes) -> None:
        if rel not in self.prefixes:
            return
        under = rel + b"/"
        for key in [k for k in self.fds if k == rel or k.startswith(under)]:
            self.retired.append(self.fds.pop(key))
        # The whole subtree: a prefix left under `rel` would stop `add` from
        # recording `rel` again above a path cached later, and the next
        # `forget(rel)` would then miss that path.
        self.prefixes = {
            p for p in self.prefixes if p != rel and not p.startswith(under)
        }

    def close(self) -> None:
        for fd in (*self.fds.values(), *self.retired):
            with suppress(OSError):
                os.close(fd)
        self.fds.clear()
        self.held.clear()
        self.prefixes.clear()
        self.retired.clear()
