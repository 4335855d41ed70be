"""Row types shared by the index, the resolver and the jobs."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryKind(enum.IntEnum):
    """What an index entry is; stored as the integer in `entry.kind`."""

    FILE = 0
    DIRECTORY = 1
    SYMLINK = 2


@dataclass(frozen=True, slots=True)
class EntryRow:
    """One indexed path under a location root, as the index last saw it.

    `relative_path` is bytes (os.fsencode), `b""` for the root itself, components
    joined with `b"/"`. `content_id` is 64 lowercase hex BLAKE3 for files, None
    otherwise. `unreadable` rows keep their last known metadata.
    """

    relative_path: bytes
    kind: EntryKind
    size: int
    mtime_ns: int
    mode: int
    content_id: str | None = None
    symlink_target: bytes | None = None
    unreadable: bool = False
    inode: int = 0
    ctime_ns: int = 0


@dataclass(frozen=True, slots=True)
class BaselineRow:
    """The state both sides of a conduit agreed on for one path after a run."""

    relative_path: bytes
    kind: EntryKind
    size: int
    mtime_ns: int
    mode: int
    content_id: str | None
    symlink_target: bytes | None
    generation: int
