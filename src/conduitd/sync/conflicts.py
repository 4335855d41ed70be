"""Settling conflicts: a strategy turns each Conflict into concrete copies."""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from conduitd.config.enums import ConflictStrategy
from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.operations import (
    Conflict,
    ConflictReason,
    CopyOp,
    DirectionalOps,
    Side,
    SyncOperations,
)

Taken = Callable[[bytes], bool]

MAX_NAME_BYTES = 255


def _nothing_taken(relative_path: bytes) -> bool:
    return False


def taken_in(*path_sets: Collection[bytes]) -> Taken:
    """A `taken` test: the path exists in any of these maps or sets."""
    return lambda relative_path: any(relative_path in paths for paths in path_sets)


class Resolution(enum.StrEnum):
    """Which version a settled conflict kept (`sync_conflict.resolution`)."""

    SOURCE = "source"
    TARGET = "target"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class Settlement:
    """The copies that settle one conflict; no copies and no resolution: pending.

    Every losing version is overwritten by a CopyOp (the jobs trash it), never
    dropped. `within_*` copies duplicate a root's own version under the conflict
    name; all conflict copies run before the other copies (see SyncOperations).
    """

    conflict: Conflict
    resolution: Resolution | None
    source_to_target: tuple[CopyOp, ...] = ()
    target_to_source: tuple[CopyOp, ...] = ()
    within_source: tuple[CopyOp, ...] = ()
    within_target: tuple[CopyOp, ...] = ()

    @property
    def pending(self) -> bool:
        """True when the path is left alone for `conduitd resolve`."""
        return self.resolution is None

    def copy_destinations(self) -> set[bytes]:
        """Every path this settlement writes, on either side."""
        ops = (
            *self.source_to_target,
            *self.target_to_source,
            *self.within_source,
            *self.within_target,
        )
        return {op.dest_path for op in ops}


def _utc(when: datetime) -> datetime:
    # A naive time is taken as UTC already: detection times come from UTC clocks.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _fit(stem: str, tail: str) -> str:
    """The stem, shortened so that stem + tail fits one file name."""
    while stem and len(os.fsencode(stem + tail)) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + tail


def conflict_copy_name(
    relative_path: bytes,
    when: datetime,
    side: str,
    taken: Taken = _nothing_taken,
) -> bytes:
    """`<stem>.conflict-<YYYYMMDD-HHMMSS>-<side><suffix>` next to `relative_path`.

    Stem and suffix are `PurePath.stem`/`.suffix` of the name, `when` is shown in
    UTC, and `-2`, `-3`, ... go before the suffix while `taken` says the name
    exists. The stem is shortened if the name would exceed 255 bytes.

    Raises:
        ValueError: `side` is neither "source" nor "target".
    """
    label = Side(side).value
    parent, sep, name = relative_path.rpartition(b"/")
    pure = PurePosixPath(os.fsdecode(name))
    stamp = _utc(when).strftime("%Y%m%d-%H%M%S")
    counter = 1
    while True:
        number = "" if counter == 1 else f"-{counter}"
        tail = f".conflict-{stamp}-{label}{number}{pure.suffix}"
        candidate = parent + sep + os.fsencode(_fit(pure.stem, tail))
        if not taken(candidate):
            return candidate
        counter += 1


def _entry(conflict: Conflict, side: Side) -> EntryRow | None:
    return conflict.source if side is Side.SOURCE else conflict.target


def _other(side: Side) -> Side:
    return Side.TARGET if side is Side.SOURCE else Side.SOURCE


class _Builder:
    """Copies of one settlement, sorted by the side they read and write."""

    def __init__(self) -> None:
        self.cross: dict[Side, list[CopyOp]] = {Side.SOURCE: [], Side.TARGET: []}
        self.within: dict[Side, list[CopyOp]] = {Side.SOURCE: [], Side.TARGET: []}

    def copy_across(self, to: Side, op: CopyOp) -> None:
        self.cross[to].append(op)

    def copy_within(self, side: Side, op: CopyOp) -> None:
        self.within[side].append(op)

    def build(self, conflict: Conflict, resolution: Resolution) -> Settlement:
        return Settlement(
            conflict=conflict,
            resolution=resolution,
            source_to_target=tuple(self.cross[Side.TARGET]),
            target_to_source=tuple(self.cross[Side.SOURCE]),
            within_source=tuple(self.within[Side.SOURCE]),
            within_target=tuple(self.within[Side.TARGET]),
        )


class ConflictResolver:
    """Settles conflicts under one conduit's strategy.

    A kind conflict (directory against file or symlink) is settled the same way
    under every strategy, `prompt_user` included: the directory stays and the
    file is kept as a conflict copy on both sides.
    """

    def __init__(self, strategy: ConflictStrategy) -> None:
        self.strategy = strategy

    def settle(
        self,
        conflict: Conflict,
        detected_at: datetime,
        taken: Taken = _nothing_taken,
    ) -> Settlement:
        """The copies settling `conflict`, detected at `detected_at`.

        Args:
            taken: whether a relative path already exists on either side (see
                `taken_in`); conflict copies get a free name.
        """
        if conflict.reason is ConflictReason.KIND:
            return self._settle_kind(conflict, detected_at, taken)
        if conflict.source is None or conflict.target is None:
            # Not produced by the resolver; the surviving version simply wins.
            return self._keep(
                conflict, Side.TARGET if conflict.source is None else Side.SOURCE
            )
        newer = (
            Side.SOURCE
            if conflict.source.mtime_ns >= conflict.target.mtime_ns
            else Side.TARGET
        )
        match self.strategy:
            case ConflictStrategy.PROMPT_USER:
                return Settlement(conflict, None)
            case ConflictStrategy.SOURCE_WINS:
                return self._keep(conflict, Side.SOURCE)
            case ConflictStrategy.TARGET_WINS:
                return self._keep(conflict, Side.TARGET)
            case ConflictStrategy.NEWEST_WINS:
                return self._keep(conflict, newer)
            case ConflictStrategy.CREATE_CONFLICT_FILE:
                return self._keep_both(conflict, newer, detected_at, taken)

    def settle_all(
        self,
        conflicts: Iterable[Conflict],
        detected_at: datetime,
        taken: Taken = _nothing_taken,
    ) -> tuple[Settlement, ...]:
        """Settle several conflicts; no two conflict copies get the same name."""
        written: set[bytes] = set()

        def taken_now(relative_path: bytes) -> bool:
            return relative_path in written or taken(relative_path)

        settlements = []
        for conflict in conflicts:
            settlement = self.settle(conflict, detected_at, taken_now)
            written |= settlement.copy_destinations()
            settlements.append(settlement)
        return tuple(settlements)

    def _keep(self, conflict: Conflict, winner: Side) -> Settlement:
        """The winner's version overwrites the loser's (which the jobs trash)."""
        kept, lost = _entry(conflict, winner), _entry(conflict, _other(winner))
        assert kept is not None  # the winner is a side that has the path
        builder = _Builder()
        builder.copy_across(_other(winner), CopyOp(conflict.relative_path, kept, lost))
        return builder.build(conflict, Resolution(winner.value))

    def _keep_both(
        self, conflict: Conflict, winner: Side, detected_at: datetime, taken: Taken
    ) -> Settlement:
        """The winner keeps the name; the loser lives on under a conflict name."""
        loser = _other(winner)
        kept, lost = _entry(conflict, winner), _entry(conflict, loser)
        # settle() checked both sides
        assert kept is not None
        assert lost is not None
        path = conflict.relative_path
        name = conflict_copy_name(path, detected_at, loser.value, taken)
        builder = _Builder()
        builder.copy_within(loser, CopyOp(path, lost, None, name))
        builder.copy_across(winner, CopyOp(path, lost, None, name))
        builder.copy_across(loser, CopyOp(path, kept, lost))
        return builder.build(conflict, Resolution.BOTH)

    def _settle_kind(
        self, conflict: Conflict, detected_at: datetime, taken: Taken
    ) -> Settlement:
        """The directory stays; the file becomes a conflict copy on both sides."""
        source = conflict.source
        if source is None or conflict.target is None:
            raise ValueError("a kind conflict needs both sides")
        dir_side = Side.SOURCE if source.kind is EntryKind.DIRECTORY else Side.TARGET
        # The directory "wins" the name; the file is the conflict copy, and the
        # copy of the directory over the file's side is a kind change.
        return self._keep_both(conflict, dir_side, detected_at, taken)


def apply_settlements(
    operations: SyncOperations, settlements: Iterable[Settlement]
) -> SyncOperations:
    """The operations plus the settlements' copies; settled conflicts removed.

    Pending settlements leave their conflicts in place.
    """
    done = [s for s in settlements if not s.pending]
    settled = {s.conflict.relative_path for s in done}
    to_target = [op for s in done for op in s.source_to_target]
    to_source = [op for s in done for op in s.target_to_source]
    back = operations.target_to_source
    if back is None and to_source:
        back = DirectionalOps()
    return dataclasses.replace(
        operations,
        source_to_target=operations.source_to_target.merged(to_target),
        target_to_source=None if back is None else back.merged(to_source),
        conflicts=tuple(
            c for c in operations.conflicts if c.relative_path not in settled
        ),
        within_source=(
            *operations.within_source,
            *(op for s in done for op in s.within_source),
        ),
        within_target=(
            *operations.within_target,
            *(op for s in done for op in s.within_target),
        ),
    )
