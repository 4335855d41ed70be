"""A whole-tree scan as a job for a forked worker (one-shot `sync`).

A one-shot run scans both roots at once; in one process the two walks share
the GIL (see `conduitd.forked_workers`). A worker runs `TreeScanner.collect`
with a read-only connection of its own and sends the `ChangeSet` back; the
parent writes it exactly as if it had computed it. It only reads (lstat, file
contents, the library), so killing it at any moment is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from conduitd.forked_workers import WorkerJob
from conduitd.index.scanner import ChangeSet, KnownContent, TreeScanner
from conduitd.index.walk import DirTask
from conduitd.storage.entries import EntryReader


@dataclass(frozen=True, slots=True)
class ScanJob(WorkerJob):
    """Everything a worker needs to compare one tree with its index rows."""

    root: bytes
    root_dev: int
    start: DirTask
    db_path: Path
    location_id: int
    known: Mapping[bytes, KnownContent]
    threads: int

    def run(self) -> ChangeSet:
        scanner = TreeScanner(anyio.CapacityLimiter(self.threads))
        if self.known:
            scanner.expect(self.root, self.known)
        changes = ChangeSet()
        reader = EntryReader(self.db_path, self.location_id)
        try:
            anyio.run(
                scanner.collect, self.root, self.root_dev, self.start, reader, changes
            )
        finally:
            reader.close()
        return changes
