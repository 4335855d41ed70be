"""The jobs' error types, and the one place OSError becomes a TransferError."""

from __future__ import annotations

import enum
import errno
import os
from types import TracebackType

from conduitd.errors import TransferError

# Errors that say the destination filesystem as a whole is in trouble: every
# delete of the generation is cancelled when a write fails with one of them.
SYSTEMIC_ERRNOS: frozenset[int] = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
)

# A walk that meets one of these found the tree different from the index
# (a parent became a symlink or a file, or the entry vanished).
_SHAPE_ERRNOS: frozenset[int] = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


class Side(enum.StrEnum):
    """Which end of a transfer an error happened on."""

    SOURCE = "source"
    TARGET = "target"


class SourceChanged(TransferError):
    """The source no longer matches its index entry; the path is skipped."""

    kind = "source_changed"


class TargetChanged(TransferError):
    """The target no longer matches what was resolved; the path is skipped."""

    kind = "target_changed"


class ContentMismatch(TransferError):
    """What landed in the temp file does not hash to the expected content_id."""

    kind = "content_mismatch"


class UnreadableEntry(TransferError):
    """An entry flagged unreadable (or under one) is never deleted or overwritten."""

    kind = "unreadable_entry"


class PathFailed(TransferError):
    """An OS error on one path, with the side it happened on."""

    kind = "path_failed"

    def __init__(self, message: str, *, side: Side, errno_: int | None) -> None:
        super().__init__(message)
        self.side = side
        self.errno = errno_

    @property
    def systemic(self) -> bool:
        """True when the destination filesystem itself is failing (ENOSPC, EIO...)."""
        return self.side is Side.TARGET and self.errno in SYSTEMIC_ERRNOS


def describe(rel: bytes) -> str:
    """A path for a message: decoded with surrogateescape, never failing."""
    return os.fsdecode(rel) if rel else "."


def is_systemic(exc: BaseException) -> bool:
    """True for an error that cancels every delete of the generation.

    A bare OSError (not translated) is taken as a destination error: when in
    doubt the deletes wait for the next run.
    """
    if isinstance(exc, PathFailed):
        return exc.systemic
    return isinstance(exc, OSError) and exc.errno in SYSTEMIC_ERRNOS


def path_failed(side: Side, rel: bytes, action: str, exc: OSError) -> PathFailed:
    """The PathFailed for an OSError met while doing `action` on `rel`."""
    return PathFailed(
        f"{describe(rel)}: {action} failed: {exc.strerror}",
        side=side,
        errno_=exc.errno,
    )


class translated:  # lower case: used like the function it replaced
    """Turn an OSError into a PathFailed (or SourceChanged for a reshaped source).

    A class, not `@contextmanager`: a copy enters eight of these per file,
    and the generator machinery cost ~30 us of each small file's copy.
    """

    __slots__ = ("action", "rel", "side")

    def __init__(self, side: Side, rel: bytes, action: str) -> None:
        self.side, self.rel, self.action = side, rel, action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, OSError):
            return
        if self.side is Side.SOURCE and exc.errno in _SHAPE_ERRNOS:
            raise SourceChanged(
                f"{describe(self.rel)}: source changed ({exc.strerror})"
            ) from exc
        raise path_failed(self.side, self.rel, self.action, exc) from exc
