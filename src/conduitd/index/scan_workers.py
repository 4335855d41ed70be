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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio

from conduitd.forked_workers import WorkerJob
from conduitd.index.scanner import ChangeSet, KnownContent, TreeScanner, Unlisted
from conduitd.index.walk import DirTask
from conduitd.storage.entries import EntryReader


@dataclass(frozen=True, slots=True)
class ScanPart:
    """A walk's changes, and the pieces it left for `SubtreeScanJob`s."""

    changes: ChangeSet
    pieces: list[Unlisted]


@dataclass(frozen=True, slots=True)
class ScanJob(WorkerJob):
    """Everything a worker needs to compare one tree with its index rows."""

    kind: ClassVar[str] = "scan"

    root: bytes
    root_dev: int
    start: DirTask
    db_path: Path
    location_id: int
    known: Mapping[bytes, KnownContent]
    threads: int
    split_at: int | None = None
    pieces: int = 1

    def run(self) -> ScanPart:
        scanner = _scanner(self.root, self.known, self.threads)
        changes = ChangeSet()
        reader = EntryReader(self.db_path, self.location_id)
        try:
            rest = anyio.run(_collect, scanner, self, reader, changes)
        finally:
            reader.close()
        return ScanPart(changes, rest.pieces(self.pieces) if rest.tasks else [])


@dataclass(frozen=True, slots=True)
class SubtreeScanJob(WorkerJob):
    """A piece of what a `ScanJob` left unlisted, walked with its subtrees;
    `changes` holds what the listing above planned for its directories."""

    kind: ClassVar[str] = "scan"

    root: bytes
    root_dev: int
    piece: Unlisted
    changes: ChangeSet
    db_path: Path
    location_id: int
    known: Mapping[bytes, KnownContent]
    threads: int

    def run(self) -> ChangeSet:
        scanner = _scanner(self.root, self.known, self.threads)
        reader = EntryReader(self.db_path, self.location_id)
        try:
            anyio.run(
                scanner.collect_subtrees,
                self.root,
                self.root_dev,
                self.piece,
                reader,
                self.changes,
            )
        finally:
            reader.close()
        return self.changes


def _scanner(
    root: bytes, known: Mapping[bytes, KnownContent], threads: int
) -> TreeScanner:
    scanner = TreeScanner(anyio.CapacityLimiter(threads))
    if known:
        scanner.expect(root, known)
    return scanner


async def _collect(
    scanner: TreeScanner, job: ScanJob, reader: EntryReader, changes: ChangeSet
) -> Unlisted:
    return await scanner.collect(
        job.root, job.root_dev, job.start, reader, changes, split_at=job.split_at
    )
