"""The per-root trash: `.conduitd/trash/<generation>/<relative path>`.

Moves are renames (or hard links) inside the root, so trashing is instant and
trash never leaves the root's filesystem.
"""

from __future__ import annotations

import enum
import errno
import itertools
import os
from collections.abc import Container, Iterator
from dataclasses import dataclass

from conduitd.jobs.entries import kind_of, matches
from conduitd.jobs.paths import (
    NAME_MAX_BYTES,
    join_relative,
    parent_of,
    split_relative,
)
from conduitd.jobs.rootfs import TRASH_DIR, RootFs
from conduitd.storage.models import EntryKind, EntryRow

# link(2) cannot serve: not supported here, too many links, a mount between.
_LINK_FALLBACK_ERRNOS = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.EACCES}
)


class TrashReason(enum.StrEnum):
    """Why a version went to trash (`sync_trash.reason`)."""

    DELETED = "deleted"
    OVERWRITTEN = "overwritten"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class TrashedItem:
    """One version put into trash; what a `sync_trash` row records.

    `vacated` is True when the original name was renamed away (a move), False
    when the version was hard-linked and the original name still holds it.
    """

    relative_path: bytes
    trash_rel: bytes
    reason: TrashReason
    kind: EntryKind
    size: int
    mtime_ns: int
    content_id: str | None
    inode: int
    vacated: bool


def numbered_name(name: bytes, n: int) -> bytes:
    """`a.txt` → `a~1.txt`, `Makefile` → `Makefile~1` (suffix as PurePath's).

    The stem is shortened when the result would exceed 255 bytes.
    """
    if n == 0:
        return name
    dot = name.rfind(b".")
    stem, suffix = (name[:dot], name[dot:]) if 0 < dot < len(name) - 1 else (name, b"")
    mark = b"~%d" % n
    room = NAME_MAX_BYTES - len(mark) - len(suffix)
    if room < 1:
        stem, suffix = name, b""
        room = NAME_MAX_BYTES - len(mark)
    return stem[:room] + mark + suffix


def generation_dir(generation: int) -> bytes:
    """`.conduitd/trash/<generation>`."""
    if generation < 0:
        raise ValueError("generation must be >= 0")
    return TRASH_DIR + b"/" + str(generation).encode()


def trash_relative_path(generation: int, rel: bytes, taken: Container[bytes]) -> bytes:
    """Where `rel` goes in this generation's trash, avoiding names in `taken`."""
    parts = split_relative(rel)
    if not parts:
        raise ValueError("the root itself cannot be trashed")
    base = generation_dir(generation) + b"/"
    parent = join_relative(parts[:-1])
    prefix = base + parent + b"/" if parent else base
    for n in itertools.count():
        candidate = prefix + numbered_name(parts[-1], n)
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable")


def move_to_trash(
    root: RootFs,
    rel: bytes,
    generation: int,
    *,
    reason: TrashReason = TrashReason.DELETED,
    expected: EntryRow | None = None,
    current_rel: bytes | None = None,
) -> TrashedItem:
    """Rename `rel` into trash (files, symlinks and whole directories).

    The returned item describes what was moved (lstat in trash after the move);
    compare its inode with what you checked before to detect a swap.
    `current_rel`: the entry is filed as `rel` but sits there now (a temp name).
    """
    try:
        return _move_to_trash(root, rel, generation, reason, expected, current_rel)
    except FileNotFoundError:
        if not root.forget_internal_dirs():
            raise
        # A trash directory this run made was removed behind its back.
        return _move_to_trash(root, rel, generation, reason, expected, current_rel)


def _move_to_trash(
    root: RootFs,
    rel: bytes,
    generation: int,
    reason: TrashReason,
    expected: EntryRow | None,
    current_rel: bytes | None,
) -> TrashedItem:
    for candidate in _candidates(root, rel, generation):
        try:
            root.rename_within(current_rel or rel, candidate, replace=False)
        except FileExistsError:
            continue
        except OSError as exc:  # a non-empty directory in the way: next name
            if exc.errno != errno.ENOTEMPTY:
                raise
            continue
        return _describe(root, rel, candidate, reason, expected, vacated=True)
    raise AssertionError("unreachable")


def link_to_trash(
    root: RootFs,
    rel: bytes,
    generation: int,
    *,
    reason: TrashReason = TrashReason.OVERWRITTEN,
    expected: EntryRow | None = None,
    seen: os.stat_result | None = None,
) -> TrashedItem:
    """Hard-link the version at `rel` into trash, leaving `rel` in place.

    Directories, and filesystems where link(2) cannot serve, fall back to
    `move_to_trash` (the item then says `vacated`). `seen`: the caller's
    lstat of `rel` a moment ago, to choose between the two (a directory
    swapped in since cannot be linked: it is moved, so nothing is lost).
    """
    if kind_of(seen or root.lstat(rel)) is EntryKind.DIRECTORY:
        return move_to_trash(root, rel, generation, reason=reason, expected=expected)
    try:
        return _link_to_trash(root, rel, generation, reason, expected)
    except FileNotFoundError:
        if not root.forget_internal_dirs():
            raise
        # A trash directory this run made was removed behind its back.
        return _link_to_trash(root, rel, generation, reason, expected)


def _link_to_trash(
    root: RootFs,
    rel: bytes,
    generation: int,
    reason: TrashReason,
    expected: EntryRow | None,
) -> TrashedItem:
    for candidate in _candidates(root, rel, generation):
        try:
            root.link_within(rel, candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _LINK_FALLBACK_ERRNOS:
                raise
            return move_to_trash(
                root, rel, generation, reason=reason, expected=expected
            )
        return _describe(root, rel, candidate, reason, expected, vacated=False)
    raise AssertionError("unreachable")


def _candidates(root: RootFs, rel: bytes, generation: int) -> Iterator[bytes]:
    """Trash names for `rel`, `~1`, `~2`... after the first; parents created."""
    parts = split_relative(rel)
    if not parts:
        raise ValueError("the root itself cannot be trashed")
    parent = _ensure_trash_parent(root, generation, parts[:-1])
    for n in itertools.count():
        yield parent + b"/" + numbered_name(parts[-1], n)


def _ensure_trash_parent(
    root: RootFs, generation: int, parts: tuple[bytes, ...]
) -> bytes:
    """Create the trash directories mirroring `parts`; return their path.

    A component already taken by a non-directory in trash (a file trashed
    earlier in this generation) is numbered like a name (`dir~1`).
    """
    current = generation_dir(generation)
    root.ensure_internal(current)
    for part in parts:
        for n in itertools.count():
            candidate = current + b"/" + numbered_name(part, n)
            if root.known_internal_dir(candidate):
                current = candidate
                break
            try:
                root.mkdir(candidate, 0o700)
            except FileExistsError:
                if kind_of(root.lstat(candidate)) is not EntryKind.DIRECTORY:
                    continue  # a file trashed earlier: the next number
            root.note_internal_dir(candidate)
            current = candidate
            break
    return current


def _describe(
    root: RootFs,
    rel: bytes,
    trash_rel: bytes,
    reason: TrashReason,
    expected: EntryRow | None,
    *,
    vacated: bool,
) -> TrashedItem:
    st = root.lstat(trash_rel)
    kind = kind_of(st) or EntryKind.FILE
    content_id = expected.content_id if expected and matches(st, expected) else None
    return TrashedItem(
        relative_path=rel,
        trash_rel=trash_rel,
        reason=reason,
        kind=kind,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        content_id=content_id,
        inode=st.st_ino,
        vacated=vacated,
    )


def touched_dirs(item: TrashedItem) -> list[bytes]:
    """The directories whose entries changed when `item` went to trash.

    The trash directories up to `.conduitd` (any may have been created), and
    the original parent when the entry was moved away.
    """
    parent = parent_of(item.trash_rel)
    dirs = [parent]
    while b"/" in parent:
        parent = parent_of(parent)
        dirs.append(parent)
    if item.vacated:
        dirs.append(parent_of(item.relative_path))
    return dirs
