"""Copies of small files in a forked worker (one-shot `sync`).

Copying in threads of one process, a first mirror of 10k small files made 58
futex calls per file: each of the ~10 system calls of a copy gives the GIL up
and waits to get it back (issue 5 bench). A `CopyBatch` runs the same
`copy_to_temp` in a worker process (see `conduitd.forked_workers`), with its
own handles on both roots, and sends the `TempFile`s back; the parent commits
them as if it had copied them itself.

What a worker writes is only ever temp files named after the batch's own stem,
so a worker killed mid-batch (cancellation) or dead is cleaned up by name
(`RootFs.remove_temps_of`). A file whose copy failed in the worker is copied
again in the parent, which reports the failure the way it always does.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import anyio

from conduitd.forked_workers import ForkedWorkers, WorkerJob
from conduitd.jobs.copy import TempFile, copy_to_temp
from conduitd.jobs.rootfs import RootFs
from conduitd.storage.models import EntryRow


@dataclass(frozen=True, slots=True)
class RootRef:
    """A root as a worker reopens it: by path, then checked to be the same."""

    path: bytes
    dev: int
    inode: int

    @classmethod
    def of(cls, root: RootFs) -> RootRef:
        return cls(root.path, root.st_dev, root.st_ino)

    def open(self, tmp_stem: bytes | None = None) -> RootFs:
        """The root at `path`; raises if it is no longer the parent's root."""
        root = RootFs(self.path, tmp_stem=tmp_stem)
        st = os.fstat(root.fileno())
        if (st.st_dev, st.st_ino) != (self.dev, self.inode):
            root.close()
            raise OSError(errno.ESTALE, "the root was replaced", self.path)
        return root


@dataclass(frozen=True, slots=True)
class CopyBatch(WorkerJob):
    """Files of one source root to copy into temps of one target root."""

    kind: ClassVar[str] = "copy"

    source: RootRef
    target: RootRef
    tmp_stem: bytes
    files: tuple[tuple[bytes, EntryRow], ...]  # (source rel, expected entry)
    fsync: bool

    def run(self) -> list[TempFile | None]:
        """A temp per file, or None where the parent must copy it again."""
        results: list[TempFile | None] = []
        with (
            self.source.open() as src,
            self.target.open(self.tmp_stem) as dst,
            src.cached_dirs(),
            dst.cached_dirs(),
        ):
            for rel, expected in self.files:
                try:
                    results.append(
                        copy_to_temp(src, rel, dst, expected, fsync=self.fsync)
                    )
                except Exception:  # noqa: BLE001 - the parent copies it again and reports
                    results.append(None)
        return results


async def copy_in_worker(
    workers: ForkedWorkers,
    source: RootFs,
    target: RootFs,
    files: Sequence[tuple[bytes, EntryRow]],
    *,
    fsync: bool,
    limiter: anyio.CapacityLimiter,
) -> list[TempFile | None] | None:
    """`files` copied into temps of `target` by a worker (waiting for one
    that copies to be free), or None: none was free (all scan) or it failed,
    and nothing it made is left behind (copy them here)."""
    stem = b"w" + secrets.token_hex(6).encode()  # never a parent's (hex) stem
    batch = CopyBatch(RootRef.of(source), RootRef.of(target), stem, tuple(files), fsync)
    try:
        found = await workers.run(batch, list, limiter=limiter, wait=True)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(target.remove_temps_of, stem)
        raise
    if found is None or len(found) != len(files):
        await anyio.to_thread.run_sync(target.remove_temps_of, stem)
        return None
    return [t if isinstance(t, TempFile) else None for t in found]
