"""What a resolution asks the jobs to do: copies, metadata updates, deletes."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from conduitd.storage.models import BaselineRow, EntryKind, EntryRow


class Direction(enum.StrEnum):
    """Which root an operation reads from and which it writes to."""

    SOURCE_TO_TARGET = "source_to_target"
    TARGET_TO_SOURCE = "target_to_source"


class Side(enum.StrEnum):
    """One endpoint of a conduit; also the label in conflict copy names."""

    SOURCE = "source"
    TARGET = "target"


class ConflictReason(enum.StrEnum):
    """Why a path could not be settled by the three-way rules alone."""

    BOTH_MODIFIED = "both_modified"
    BOTH_ADDED = "both_added"
    KIND = "kind"


def path_depth(relative_path: bytes) -> int:
    """Number of components of a relative path (`b""`, the root, has 0)."""
    return relative_path.count(b"/") + 1 if relative_path else 0


@dataclass(frozen=True, slots=True)
class CopyOp:
    """Write the "from" side's entry over the "to" side.

    `source` is the entry to copy (on the "from" side of the op's direction, which
    is the conduit's target for `target_to_source` ops). `target` is what the index
    says is at the destination now (None: nothing); the jobs re-check the
    destination against it before replacing anything. `dest_relative_path` names
    the destination when it differs from `relative_path` (conflict copies).

    A copy whose `target` is a directory and whose `source` is not replaces the
    whole subtree: the jobs move it into trash as one; the resolver guarantees that
    nothing beneath it is ignored, unreadable or still wanted, and emits no
    DeleteOp under it.
    """

    relative_path: bytes
    source: EntryRow
    target: EntryRow | None
    dest_relative_path: bytes | None = None

    @property
    def dest_path(self) -> bytes:
        """Where the copy lands on the "to" side."""
        return (
            self.relative_path
            if self.dest_relative_path is None
            else self.dest_relative_path
        )

    @property
    def is_conflict_copy(self) -> bool:
        """True for a copy under another name (it only ever creates a new path)."""
        return self.dest_relative_path is not None

    @property
    def changes_kind(self) -> bool:
        """True when the destination holds an entry of another kind."""
        return self.target is not None and self.target.kind != self.source.kind

    @property
    def replaces_directory(self) -> bool:
        """True when a directory (and its subtree) gives way to a non-directory."""
        return (
            self.target is not None
            and self.target.kind is EntryKind.DIRECTORY
            and self.source.kind is not EntryKind.DIRECTORY
        )


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """Set mode and mtime of `target` to those of `source`; no data is copied."""

    relative_path: bytes
    source: EntryRow
    target: EntryRow


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Remove `target` (to trash), provided it still matches its index entry."""

    relative_path: bytes
    target: EntryRow


def _copy_order(op: CopyOp) -> tuple[bool, int, bytes]:
    return (not op.is_conflict_copy, path_depth(op.dest_path), op.dest_path)


def _delete_order(op: DeleteOp) -> tuple[int, bytes]:
    return (-path_depth(op.relative_path), op.relative_path)


@dataclass(frozen=True, slots=True)
class DirectionalOps:
    """The operations of one direction, in the order the jobs run them.

    Copies are conflict copies first (see SyncOperations), then parents first
    (by depth, then path); updates by path; deletes children first (deepest
    first), so directories are created before their contents and removed after
    them. Build with `DirectionalOps.of` to get that order.
    """

    to_copy: tuple[CopyOp, ...] = ()
    to_update: tuple[UpdateOp, ...] = ()
    to_delete: tuple[DeleteOp, ...] = ()

    @classmethod
    def of(
        cls,
        copies: Iterable[CopyOp] = (),
        updates: Iterable[UpdateOp] = (),
        deletes: Iterable[DeleteOp] = (),
    ) -> DirectionalOps:
        """Operations in execution order, whatever order they come in."""
        return cls(
            to_copy=tuple(sorted(copies, key=_copy_order)),
            to_update=tuple(sorted(updates, key=lambda op: op.relative_path)),
            to_delete=tuple(sorted(deletes, key=_delete_order)),
        )

    def is_empty(self) -> bool:
        return not (self.to_copy or self.to_update or self.to_delete)

    def merged(self, copies: Iterable[CopyOp]) -> DirectionalOps:
        """These operations plus more copies, reordered."""
        return DirectionalOps.of(
            (*self.to_copy, *copies), self.to_update, self.to_delete
        )

    def count_files_copied(self) -> int:
        """Non-directory entries written (the generation's `files_copied`)."""
        return sum(op.source.kind is not EntryKind.DIRECTORY for op in self.to_copy)

    def count_files_deleted(self) -> int:
        """Non-directory entries removed by DeleteOps (`files_deleted`)."""
        return sum(op.target.kind is not EntryKind.DIRECTORY for op in self.to_delete)

    def bytes_to_copy(self) -> int:
        """Sum of the sizes of regular files copied (`bytes_transferred`)."""
        return sum(
            op.source.size for op in self.to_copy if op.source.kind is EntryKind.FILE
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """A path both sides changed in ways the three-way rules cannot merge."""

    relative_path: bytes
    source: EntryRow | None
    target: EntryRow | None
    baseline: BaselineRow | None
    reason: ConflictReason


@dataclass(frozen=True, slots=True)
class Held:
    """A path the resolver deliberately left alone, and why (for the logs).

    Reasons: `unreadable` (an unreadable entry, or one under an unreadable
    directory, on either side), `occupied` (a directory that cannot give way
    because something beneath it stays), `parent` (the destination's parent is
    not a directory and will not become one).
    """

    relative_path: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class SyncOperations:
    """Everything one resolution found, for both directions.

    `target_to_source` is None for one-way modes. `within_source` and
    `within_target` are copies inside one root (conflict copies of that root's
    own version, read from `relative_path` and written to `dest_relative_path`).

    Phases: (1) every conflict copy (`is_conflict_copy`: the within copies and
    the conflict copies at the head of each direction's `to_copy`); they create
    new names only and read versions that phase 2 may overwrite, so all of them
    finish first; (2) the other copies of both directions; (3) updates;
    (4) deletes.

    `baseline_updates` are the agreed states of paths already equal on both
    sides whose baseline row is missing or stale (the service turns them into
    BaselineRows with `to_baseline`); `baseline_deletes` are paths whose baseline
    row must go (absent on both sides, now ignored, or, in a union run, not
    agreed on: the old baseline is not trusted). Paths with operations or
    conflicts get neither: the service writes their baseline from the final state
    after the run (see `resolver.agreed_entry`). Held paths keep their row.
    """

    source_to_target: DirectionalOps
    target_to_source: DirectionalOps | None = None
    conflicts: tuple[Conflict, ...] = ()
    union: bool = False
    within_source: tuple[CopyOp, ...] = ()
    within_target: tuple[CopyOp, ...] = ()
    baseline_updates: tuple[EntryRow, ...] = ()
    baseline_deletes: tuple[bytes, ...] = ()
    held: tuple[Held, ...] = ()

    def directions(self) -> Iterator[tuple[Direction, DirectionalOps]]:
        """Each direction present with its operations."""
        yield Direction.SOURCE_TO_TARGET, self.source_to_target
        if self.target_to_source is not None:
            yield Direction.TARGET_TO_SOURCE, self.target_to_source

    def is_empty(self, *, count_conflicts: bool = True) -> bool:
        """True when nothing is left to do (held paths and baseline rows aside)."""
        if self.within_source or self.within_target:
            return False
        if count_conflicts and self.conflicts:
            return False
        return all(ops.is_empty() for _, ops in self.directions())

    def count_files_copied(self) -> int:
        within = (*self.within_source, *self.within_target)
        return sum(ops.count_files_copied() for _, ops in self.directions()) + sum(
            op.source.kind is not EntryKind.DIRECTORY for op in within
        )

    def count_updates(self) -> int:
        return sum(len(ops.to_update) for _, ops in self.directions())

    def count_files_deleted(self) -> int:
        return sum(ops.count_files_deleted() for _, ops in self.directions())

    def bytes_to_copy(self) -> int:
        within = (*self.within_source, *self.within_target)
        return sum(ops.bytes_to_copy() for _, ops in self.directions()) + sum(
            op.source.size for op in within if op.source.kind is EntryKind.FILE
        )


def to_baseline(entry: EntryRow, generation: int) -> BaselineRow:
    """The baseline row recording `entry` as agreed in `generation`."""
    return BaselineRow(
        relative_path=entry.relative_path,
        kind=entry.kind,
        size=entry.size,
        mtime_ns=entry.mtime_ns,
        mode=entry.mode,
        content_id=entry.content_id,
        symlink_target=entry.symlink_target,
        generation=generation,
    )
