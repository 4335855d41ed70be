"""What a location's filesystem keeps of names and mtimes (DESIGN.md Jobs).

Probed once per location, in `.conduitd/` (never indexed, never synced):
- mtime granularity: set an mtime with odd seconds and odd nanoseconds on a
  probe file and read it back; the smallest power of ten (or 2 s, FAT) that
  explains the loss is the granularity the resolver compares mtimes at, so a
  coarse target never loops on metadata updates;
- case folding: create `CaseProbe` and lstat `caseprobe`;
- normalisation: create a name in NFD and lstat its NFC form.

A root we may not write (read-only, or no `.conduitd/` yet) is judged by its
filesystem type from /proc/self/mounts instead. Blocking: run in a thread.
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from dataclasses import dataclass
from typing import Final

import structlog

logger = structlog.get_logger()

INTERNAL: Final = b".conduitd"
# An mtime with an odd number of seconds and nanoseconds in every digit.
PROBE_MTIME_NS: Final = 1_700_000_001_123_456_789
GRANULARITIES_NS: Final = (
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    2_000_000_000,
)
# Filesystems known to be coarse or to fold names, for roots we cannot probe.
_COARSE_NS: Final = {
    "vfat": 2_000_000_000,
    "msdos": 2_000_000_000,
    "fat": 2_000_000_000,
}
_CASE_FOLDING: Final = frozenset({"vfat", "msdos", "fat", "exfat", "ntfs3", "cifs"})
_NFD_NAME: Final = unicodedata.normalize("NFD", "probe-\u00e9").encode()
_NFC_NAME: Final = unicodedata.normalize("NFC", "probe-\u00e9").encode()


@dataclass(frozen=True, slots=True)
class FsTraits:
    """What a location's filesystem does to mtimes and names."""

    mtime_granularity_ns: int = 1
    case_insensitive: bool = False
    normalising: bool = False

    @property
    def folds_names(self) -> bool:
        return self.case_insensitive or self.normalising


def granularity_for(written_ns: int, read_ns: int) -> int:
    """The smallest granularity that explains reading `read_ns` back."""
    lost = abs(written_ns - read_ns)
    for granularity in GRANULARITIES_NS:
        if lost < granularity:
            return granularity
    return GRANULARITIES_NS[-1]


def probe_traits(root: bytes) -> FsTraits:
    """Probe `root`'s filesystem in `root/.conduitd/`, else judge it by type."""
    internal = os.path.join(root, INTERNAL)
    try:
        dir_fd = os.open(internal, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return traits_by_type(root)
    try:
        before = os.fstat(dir_fd)
        try:
            return FsTraits(
                mtime_granularity_ns=_probe_granularity(dir_fd),
                case_insensitive=_probe_alias(dir_fd, b"CaseProbe", b"caseprobe"),
                normalising=_probe_alias(dir_fd, _NFD_NAME, _NFC_NAME),
            )
        finally:
            # A run refused after probing must look untouched (DESIGN.md
            # Interfaces: exit 3, nothing touched): the probes leave no entry,
            # so give `.conduitd/` its times back too.
            with contextlib.suppress(OSError):
                os.utime(dir_fd, ns=(before.st_atime_ns, before.st_mtime_ns))
    except OSError as exc:  # read-only, full: judge by type, never fail a run
        logger.warning("fs_probe_failed", root=os.fsdecode(root), error=str(exc))
        return traits_by_type(root)
    finally:
        os.close(dir_fd)


def _probe_granularity(dir_fd: int) -> int:
    name = b"mtime-probe"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        os.utime(fd, ns=(PROBE_MTIME_NS, PROBE_MTIME_NS))
        read_ns = os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
    # Read back through a fresh lookup too: some filesystems keep the precise
    # value in the inode cache and round only what reaches the disk.
    read_ns = _farthest(read_ns, os.stat(name, dir_fd=dir_fd).st_mtime_ns)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    return granularity_for(PROBE_MTIME_NS, read_ns)


def _farthest(a: int, b: int) -> int:
    return a if abs(PROBE_MTIME_NS - a) >= abs(PROBE_MTIME_NS - b) else b


def _probe_alias(dir_fd: int, written: bytes, alias: bytes) -> bool:
    """Create `written`; True when `alias` (another name) finds the same file."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(alias, dir_fd=dir_fd)
    fd = os.open(
        written, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
    )
    try:
        made = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        seen = os.lstat(alias, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(written, dir_fd=dir_fd)
    return (seen.st_dev, seen.st_ino) == (made.st_dev, made.st_ino)


def traits_by_type(root: bytes) -> FsTraits:
    """Traits guessed from the filesystem type of the mount holding `root`."""
    fs_type = mount_type(root)
    return FsTraits(
        mtime_granularity_ns=_COARSE_NS.get(fs_type, 1),
        case_insensitive=fs_type in _CASE_FOLDING,
    )


def mount_type(root: bytes) -> str:
    """The type of the longest mount point above `root` ('' when unknown)."""
    path = os.fsdecode(os.path.realpath(root))
    best, best_type = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.readlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type
