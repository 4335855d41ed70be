"""`<root>/.conduitd/marker`: which library and location a root belongs to.

Blocking file I/O; callers run these functions in worker threads. The marker is
JSON `{"library": uuid, "location": uuid, "device": uuid}` written atomically
(temp file, fsync, rename, directory fsync). A marker naming another library or
location is never overwritten by a scan: it means the index was lost (DESIGN.md
Data, Safety), and only `conduitd.index.Indexer.clear_index_lost` replaces it
after a union run.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import os
import uuid
from dataclasses import dataclass
from typing import Final

CONDUITD_DIR: Final = b".conduitd"
MARKER_NAME: Final = b"marker"
MARKER_RELATIVE: Final = CONDUITD_DIR + b"/" + MARKER_NAME
# Temp names carry a token so that a barrier can recognise its own write in the
# watcher's events: `marker.<token>.tmp`.
MARKER_TMP_PREFIX: Final = b"marker."
MARKER_TMP_SUFFIX: Final = b".tmp"
_MAX_MARKER_BYTES: Final = 4096

# errnos that mean "this root cannot be written": no marker, identity by st_dev.
READ_ONLY_ERRNOS: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class MarkerStatus(enum.StrEnum):
    """What a root's marker says about it, for the sync engine's safety checks."""

    OK = "ok"  # names this library and this location
    MISSING = "missing"  # no marker file
    FOREIGN = "foreign"  # names another library or location, or is corrupt
    UNREADABLE = "unreadable"  # exists but cannot be read


@dataclass(frozen=True, slots=True)
class Marker:
    library: uuid.UUID
    location: uuid.UUID
    device: uuid.UUID

    def to_json(self) -> bytes:
        doc = {
            "library": str(self.library),
            "location": str(self.location),
            "device": str(self.device),
        }
        return (json.dumps(doc) + "\n").encode()


@dataclass(frozen=True, slots=True)
class MarkerRead:
    """The outcome of reading a marker: `marker` is set only when it parsed."""

    exists: bool
    marker: Marker | None = None
    error: str | None = None

    @property
    def unreadable(self) -> bool:
        return self.exists and self.marker is None and self.error == "unreadable"


def marker_path(root: bytes) -> bytes:
    return os.path.join(root, MARKER_RELATIVE)


def read_marker(root: bytes) -> MarkerRead:
    """Read `<root>/.conduitd/marker` without following a symlinked marker."""
    try:
        fd = os.open(marker_path(root), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return MarkerRead(exists=False)
    except NotADirectoryError:
        return MarkerRead(exists=True, error="corrupt")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return MarkerRead(exists=True, error="corrupt")
        return MarkerRead(exists=True, error="unreadable")
    try:
        raw = os.read(fd, _MAX_MARKER_BYTES)
    except OSError:
        return MarkerRead(exists=True, error="unreadable")
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw)
        marker = Marker(
            library=uuid.UUID(doc["library"]),
            location=uuid.UUID(doc["location"]),
            device=uuid.UUID(doc["device"]),
        )
    except (ValueError, KeyError, TypeError):
        return MarkerRead(exists=True, error="corrupt")
    return MarkerRead(exists=True, marker=marker)


def classify_marker(
    read: MarkerRead, library: uuid.UUID, location: uuid.UUID
) -> MarkerStatus:
    """Judge a marker against the library and location expected at this root."""
    if not read.exists:
        return MarkerStatus.MISSING
    if read.marker is None:
        return MarkerStatus.UNREADABLE if read.unreadable else MarkerStatus.FOREIGN
    if read.marker.library != library or read.marker.location != location:
        return MarkerStatus.FOREIGN
    return MarkerStatus.OK


def marker_status(
    root: bytes | os.PathLike[str] | str, location: uuid.UUID, library: uuid.UUID
) -> MarkerStatus:
    """Read and judge a root's marker (blocking; `Indexer.marker_status` is the
    async form)."""
    return classify_marker(read_marker(os.fsencode(root)), library, location)


def write_marker(root: bytes, marker: Marker, token: str | None = None) -> None:
    """Write the marker atomically; never creates the root itself.

    Args:
        token: goes into the temp file's name, so that a watcher can tell which
            rewrite it is seeing (barriers).

    Raises:
        OSError: the root is missing, read-only, or the write failed.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(errno.ENOENT, "root is missing", os.fsdecode(root))
    directory = os.path.join(root, CONDUITD_DIR)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o755)
    name = MARKER_TMP_PREFIX + (token or uuid.uuid4().hex).encode() + MARKER_TMP_SUFFIX
    tmp = os.path.join(directory, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644)
    try:
        try:
            os.write(fd, marker.to_json())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(directory, MARKER_NAME))
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rewrite_marker(root: bytes, token: str) -> bool:
    """Rewrite the existing marker with the same bytes (a barrier's probe).

    Returns False when there is no marker to rewrite or the root is read-only.
    """
    path = marker_path(root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        content = os.read(fd, _MAX_MARKER_BYTES)
    finally:
        os.close(fd)
    directory = os.path.join(root, CONDUITD_DIR)
    tmp = os.path.join(
        directory, MARKER_TMP_PREFIX + token.encode() + MARKER_TMP_SUFFIX
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except OSError as exc:
        if exc.errno in READ_ONLY_ERRNOS:
            return False
        raise
    try:
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return True


def barrier_token(name: bytes) -> str | None:
    """The token of a `marker.<token>.tmp` name, else None."""
    if name.startswith(MARKER_TMP_PREFIX) and name.endswith(MARKER_TMP_SUFFIX):
        token = name[len(MARKER_TMP_PREFIX) : -len(MARKER_TMP_SUFFIX)]
        return token.decode("ascii", "replace") or None
    return None


def _unlink_quietly(path: bytes) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
