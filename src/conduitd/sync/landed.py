"""Files a run is about to put in place, announced to the index of their side.

A scan that meets one of them with the very inode, size and mtime the copy
gave it takes the content id the copy computed instead of reading the file
again (see `conduitd.index.scanner.TreeScanner`).

They are announced as soon as their temp file is verified, before the commit
renames it into place (a rename keeps the inode): a daemon's watcher sees the
rename within a step, and an announcement made after the commit's directory
syncs came too late for it, so it read the file again. An announcement whose
commit never happens matches nothing: no other file has that inode at that
name with that size and mtime.
"""

from __future__ import annotations

from collections.abc import Iterable

from conduitd.index.scanner import KnownContent
from conduitd.jobs.copy import TempFile
from conduitd.jobs.outcomes import CopyJob
from conduitd.jobs.rootfs import RootFs
from conduitd.storage.models import EntryKind


def copied_files(
    copies: Iterable[tuple[CopyJob, TempFile]],
) -> dict[RootFs, dict[bytes, KnownContent]]:
    """Per destination root: final path → what will stand there once committed."""
    landed: dict[RootFs, dict[bytes, KnownContent]] = {}
    for job, temp in copies:
        source = job.source
        if (
            temp.kind is not EntryKind.FILE
            or not temp.inode
            or source.content_id is None
        ):
            continue
        landed.setdefault(job.dst_root, {})[job.dest_rel] = KnownContent(
            temp.inode, source.size, source.mtime_ns, source.content_id
        )
    return landed
