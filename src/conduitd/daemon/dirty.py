"""What changed since a conduit's last run, and which changes were its own.

Pure bookkeeping (no I/O, no anyio): the conduit task feeds it index change
notifications and hands the accumulated set to the next run, so a run in the
daemon resolves only what changed (DESIGN.md Flow 5: incremental resolution).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# Paths under `.conduitd/` (marker, tmp, trash) are conduitd's own, never synced.
INTERNAL_DIR: Final = b".conduitd"
DEFAULT_DIRTY_LIMIT: Final = 10_000


class Side(enum.StrEnum):
    """A conduit's endpoint."""

    SOURCE = "source"
    TARGET = "target"


@dataclass(frozen=True, slots=True)
class DirtyPaths:
    """Relative paths (bytes) that changed per side; None: assume everything did.

    `everything()` is what a run gets at daemon start, after a reload adds the
    conduit, and after more than the tracker's limit of paths changed.
    """

    source: frozenset[bytes] | None
    target: frozenset[bytes] | None

    @classmethod
    def everything(cls) -> DirtyPaths:
        return cls(None, None)

    @classmethod
    def nothing(cls) -> DirtyPaths:
        return cls(frozenset(), frozenset())

    def side(self, side: Side) -> frozenset[bytes] | None:
        return self.source if side is Side.SOURCE else self.target

    @property
    def is_everything(self) -> bool:
        return self.source is None and self.target is None

    @property
    def is_empty(self) -> bool:
        return self.source == frozenset() and self.target == frozenset()

    def count(self) -> int | None:
        """How many paths; None when a side is 'everything'."""
        if self.source is None or self.target is None:
            return None
        return len(self.source) + len(self.target)


def is_internal(path: bytes) -> bool:
    """True for `.conduitd` and anything under it."""
    return path == INTERNAL_DIR or path.startswith(INTERNAL_DIR + b"/")


class DirtyTracker:
    """Changed paths per side since the last `take()`; overflow means everything.

    Starts as 'everything dirty': nothing is known about what changed while no
    daemon watched.
    """

    def __init__(self, limit: int = DEFAULT_DIRTY_LIMIT) -> None:
        self._limit = limit
        self._paths: dict[Side, set[bytes] | None] = {
            Side.SOURCE: None,
            Side.TARGET: None,
        }

    def add(self, side: Side, paths: Iterable[bytes]) -> None:
        current = self._paths[side]
        if current is None:
            return
        current.update(paths)
        if len(current) > self._limit:
            self._paths[side] = None

    def mark_everything(self, side: Side | None = None) -> None:
        for each in (side,) if side else tuple(Side):
            self._paths[each] = None

    def take(self) -> DirtyPaths:
        """The accumulated paths; the tracker starts over empty."""
        taken = DirtyPaths(*(_frozen(self._paths[side]) for side in Side))
        self._paths = {side: set() for side in Side}
        return taken

    def restore(self, dirty: DirtyPaths) -> None:
        """Merge back what a failed run was given: it is still dirty."""
        for side in Side:
            paths = dirty.side(side)
            if paths is None:
                self.mark_everything(side)
            else:
                self.add(side, paths)

    @property
    def is_empty(self) -> bool:
        return all(paths == set() for paths in self._paths.values())


def _frozen(paths: set[bytes] | None) -> frozenset[bytes] | None:
    return None if paths is None else frozenset(paths)


class ExpectedWrites:
    """Paths a conduit's own run is about to write, per side, so their watcher
    events neither dirty nor re-trigger it (no ping-pong, no self-trigger).

    Protocol for the run (the sync engine): `expect(side, paths)` before its
    renames and deletes, `clear(side)` after the barrier on that side, which
    proves the watcher has delivered every event the writes caused. Parent
    directories of an expected path are expected too (their mtime changes).
    A user's edit of the same path inside that window is masked here but not
    lost: verification re-resolves every path the run touched.
    """

    def __init__(self) -> None:
        self._paths: dict[Side, set[bytes]] = {side: set() for side in Side}
        self._parents: dict[Side, set[bytes]] = {side: set() for side in Side}

    def expect(self, side: Side, paths: Iterable[bytes]) -> None:
        own, parents = self._paths[side], self._parents[side]
        for path in paths:
            own.add(path)
            parents.update(_ancestors(path))

    def clear(self, side: Side | None = None) -> None:
        for each in (side,) if side else tuple(Side):
            self._paths[each].clear()
            self._parents[each].clear()

    def is_expected(self, side: Side, path: bytes) -> bool:
        return path in self._paths[side] or path in self._parents[side]

    def __len__(self) -> int:
        return sum(len(paths) for paths in self._paths.values())


def _ancestors(path: bytes) -> Iterable[bytes]:
    """b"a/b/c" -> b"", b"a", b"a/b" (b"" is the root itself)."""
    parts = path.split(b"/")
    return (b"/".join(parts[:end]) for end in range(len(parts)))
