"""Whole-tree scans as jobs for forked workers (one-shot `sync`, the daemon).

A one-shot run scans both roots at once; in one process the two walks share
the GIL (see `conduitd.forked_workers`). A worker runs `TreeScanner.collect`
with a read-only connection of its own and sends the `ChangeSet` back; the
parent writes it exactly as if it had computed it. It only reads (lstat, file
contents, the library), so killing it at any moment is harmless.

A scan comes in pieces, so that both workers share the larger tree once the
other is done (a 1 % change of a 100k-file mirror leaves the target's scan
with nothing to hash or compare, and its worker idle for half the scan):
`ScanJob` walks down to the first level of `split_at` directories and
returns it unlisted, in pieces; `SubtreeScanJob`s walk the pieces.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import anyio

from conduitd.forked_workers import WorkerJob
from conduitd.index.scanner import ChangeSet, KnownContent, TreeScanner, Unlisted
from conduitd.index.walk import DirTask
from conduitd.storage.entries import EntryReader

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ScanPart:
    """A walk's changes, and the pieces it left for `SubtreeScanJob`s."""

    changes: ChangeSet
    pieces: list[Unlisted]


@dataclass(frozen=True, slots=True)
class _TreeJob(WorkerJob):
    """What every scan job needs: the tree, its rows, what is announced in it."""

    kind: ClassVar[str] = "scan"

    root: bytes
    root_dev: int
    db_path: Path
    location_id: int
    known: Mapping[bytes, KnownContent]
    threads: int

    def _walk(self, walk: Callable[[TreeScanner, EntryReader], Awaitable[_T]]) -> _T:
        """Run `walk` with a scanner of this job's own and a read-only
        connection to the rows."""
        scanner = TreeScanner(anyio.CapacityLimiter(self.threads))
        if self.known:
            scanner.expect(self.root, self.known)
        with closing(EntryReader(self.db_path, self.location_id)) as reader:
            return anyio.run(walk, scanner, reader)


@dataclass(frozen=True, slots=True)
class ScanJob(_TreeJob):
    """A whole tree compared with its index rows, from `start` down to the
    first level of `split_at` directories (every level without it)."""

    start: DirTask
    split_at: int | None = None
    pieces: int = 1

    def run(self) -> ScanPart:
        changes = ChangeSet()

        async def walk(scanner: TreeScanner, reader: EntryReader) -> Unlisted:
            return await scanner.collect(
                self.root,
                self.root_dev,
                self.start,
                reader,
                changes,
                split_at=self.split_at,
            )

        rest = self._walk(walk)
        return ScanPart(changes, rest.pieces(self.pieces) if rest.tasks else [])


@dataclass(frozen=True, slots=True)
class SubtreeScanJob(_TreeJob):
    """A piece of what a `ScanJob` left unlisted, walked with its subtrees;
    `changes` holds what the listing above planned for its directories."""

    piece: Unlisted
    changes: ChangeSet

    def run(self) -> ChangeSet:
        async def walk(scanner: TreeScanner, reader: EntryReader) -> None:
            await scanner.collect_subtrees(
                self.root, self.root_dev, self.piece, reader, self.changes
            )

        self._walk(walk)
        return self.changes
