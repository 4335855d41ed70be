"""Transfer jobs: verified copies, group commit, trash, deletes, the runner.

Knows nothing of modes, conflicts, configs or the database: it is given
generic jobs and reports what became of each.
"""

from __future__ import annotations

from conduitd.jobs.commit import (
    Durability,
    DurabilityError,
    PendingReplace,
    ReplaceOutcome,
    ReplaceStatus,
    commit_batch,
)
from conduitd.jobs.copy import TempFile, copy_to_temp
from conduitd.jobs.delete import (
    DeleteOutcome,
    DeleteStatus,
    DeleteStrategy,
    delete_entry,
)
from conduitd.jobs.failures import (
    ContentMismatch,
    PathFailed,
    Side,
    SourceChanged,
    TargetChanged,
    UnreadableEntry,
)
from conduitd.jobs.metadata import MetadataOutcome, MetadataStatus, update_metadata
from conduitd.jobs.outcomes import (
    CopyJob,
    DeleteJob,
    Job,
    JobOutcome,
    MetadataJob,
    MkdirJob,
    OutcomeStatus,
    Progress,
    RunReport,
)
from conduitd.jobs.paths import split_relative, split_synced
from conduitd.jobs.ratelimit import RateLimiter
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.runner import Copier, TransferRunner, clean_tmp
from conduitd.jobs.trash import (
    TrashedItem,
    TrashReason,
    link_to_trash,
    move_to_trash,
    trash_relative_path,
)

__all__ = [
    "ContentMismatch",
    "Copier",
    "CopyJob",
    "DeleteJob",
    "DeleteOutcome",
    "DeleteStatus",
    "DeleteStrategy",
    "Durability",
    "DurabilityError",
    "Job",
    "JobOutcome",
    "MetadataJob",
    "MetadataOutcome",
    "MetadataStatus",
    "MkdirJob",
    "OutcomeStatus",
    "PathFailed",
    "PendingReplace",
    "Progress",
    "RateLimiter",
    "ReplaceOutcome",
    "ReplaceStatus",
    "RootFs",
    "RunReport",
    "Side",
    "SourceChanged",
    "TargetChanged",
    "TempFile",
    "TransferRunner",
    "TrashReason",
    "TrashedItem",
    "UnreadableEntry",
    "clean_tmp",
    "commit_batch",
    "copy_to_temp",
    "delete_entry",
    "link_to_trash",
    "move_to_trash",
    "split_relative",
    "split_synced",
    "trash_relative_path",
    "update_metadata",
]
