"""Validation of relative paths from any source (index, resolver, user)."""

from __future__ import annotations

from conduitd.errors import UnsafePath

NAME_MAX_BYTES = 255

# conduitd's own area inside every root; never synced at any depth.
INTERNAL_NAME = b".conduitd"


def split_relative(rel: bytes) -> tuple[bytes, ...]:
    """Split a root-relative path into components; `b""` is the root itself.

    Raises:
        UnsafePath: absolute, empty or `.`/`..` components, NUL bytes, or a
            component longer than 255 bytes.
    """
    if not isinstance(rel, bytes):
        raise UnsafePath(f"{rel!r}: relative paths are bytes")
    if rel == b"":
        return ()
    if b"\0" in rel:
        raise UnsafePath(f"{rel!r}: NUL byte in path")
    if rel.startswith(b"/"):
        raise UnsafePath(f"{rel!r}: absolute path")
    parts = tuple(rel.split(b"/"))
    # Membership and max() run in C: this runs several times per copied file.
    if b"" in parts or b"." in parts or b".." in parts:
        raise UnsafePath(f"{rel!r}: empty, '.' or '..' component")
    if len(rel) > NAME_MAX_BYTES and max(map(len, parts)) > NAME_MAX_BYTES:
        raise UnsafePath(f"{rel!r}: component longer than {NAME_MAX_BYTES} bytes")
    return parts


def split_synced(rel: bytes) -> tuple[bytes, ...]:
    """Split a path a job may touch: also refuses the root and `.conduitd`.

    Raises:
        UnsafePath: as `split_relative`, or the path is the root itself or
            lies in a `.conduitd` directory (never synced at any depth).
    """
    parts = split_relative(rel)
    if not parts:
        raise UnsafePath("the root itself is never written or deleted by a job")
    if INTERNAL_NAME in parts:
        raise UnsafePath(f"{rel!r}: inside conduitd's own .conduitd area")
    return parts


def join_relative(parts: tuple[bytes, ...]) -> bytes:
    """The inverse of `split_relative`."""
    return b"/".join(parts)


def parent_of(rel: bytes) -> bytes:
    """The parent of a root-relative path (`b""` for a top-level name)."""
    head, _, _ = rel.rpartition(b"/")
    return head


def depth_of(rel: bytes) -> int:
    """Number of components (the root is 0)."""
    return 0 if rel == b"" else rel.count(b"/") + 1


def is_within(rel: bytes, ancestor: bytes) -> bool:
    """True when `rel` is `ancestor` or lies below it."""
    return ancestor == b"" or rel == ancestor or rel.startswith(ancestor + b"/")
