"""Files a run has just put in place, announced to the index of their side.

A scan that meets one of them with the very inode, size and mtime the copy
gave it takes the content id the copy computed instead of reading the file
again (see `conduitd.index.scanner.TreeScanner`).
"""

from __future__ import annotations

from collections.abc import Iterable

from conduitd.index.scanner import KnownContent
from conduitd.jobs.outcomes import CopyJob, JobOutcome, OutcomeStatus
from conduitd.jobs.rootfs import RootFs
from conduitd.storage.models import EntryKind


def landed_files(
    outcomes: Iterable[JobOutcome],
) -> dict[RootFs, dict[bytes, KnownContent]]:
    """Per destination root: final path → what now stands there."""
    landed: dict[RootFs, dict[bytes, KnownContent]] = {}
    for outcome in outcomes:
        job = outcome.job
        if (
            outcome.status is not OutcomeStatus.DONE
            or not isinstance(job, CopyJob)
            or not outcome.landed_inode
            or job.source.kind is not EntryKind.FILE
        ):
            continue
        source = job.source
        if source.content_id is None:
            continue
        landed.setdefault(job.dst_root, {})[job.dest_rel] = KnownContent(
            outcome.landed_inode, source.size, source.mtime_ns, source.content_id
        )
    return landed
