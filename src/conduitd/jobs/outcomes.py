"""Jobs a run is given, what became of each, and the run's counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from conduitd.errors import TransferError
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.trash import TrashedItem, TrashReason
from conduitd.storage.models import EntryKind, EntryRow


@dataclass(frozen=True, slots=True)
class CopyJob:
    """Copy `rel` of `src_root` (a file or symlink) to `dest_rel` of `dst_root`.

    `expected_target` is the target as resolution saw it (None: must not
    exist); `trash_reason` labels the old version if it goes to trash.
    """

    src_root: RootFs
    rel: bytes
    dst_root: RootFs
    dest_rel: bytes
    source: EntryRow
    expected_target: EntryRow | None
    trash_reason: TrashReason = TrashReason.OVERWRITTEN


@dataclass(frozen=True, slots=True)
class MkdirJob:
    """Create the directory `rel` like `source`; a non-directory there that
    matches `expected_target` goes to trash first (a kind change), labelled
    `trash_reason`."""

    root: RootFs
    rel: bytes
    source: EntryRow
    expected_target: EntryRow | None = None
    trash_reason: TrashReason = TrashReason.OVERWRITTEN


@dataclass(frozen=True, slots=True)
class MetadataJob:
    """Give the target `rel` the source's mode and mtime_ns in place."""

    root: RootFs
    rel: bytes
    source: EntryRow
    expected_target: EntryRow


@dataclass(frozen=True, slots=True)
class DeleteJob:
    """Delete `rel` if it is still `expected`."""

    root: RootFs
    rel: bytes
    expected: EntryRow


Job = CopyJob | MkdirJob | MetadataJob | DeleteJob


class OutcomeStatus(enum.StrEnum):
    DONE = "done"
    UNCHANGED = "unchanged"  # nothing to do (a directory already there)
    SKIPPED_SOURCE_CHANGED = "skipped_source_changed"
    SKIPPED_TARGET_CHANGED = "skipped_target_changed"
    SKIPPED_NOT_EMPTY = "skipped_not_empty"
    CANCELLED = "cancelled"  # a delete held back after a failed copy
    FAILED = "failed"


SKIPPED = frozenset(
    {
        OutcomeStatus.SKIPPED_SOURCE_CHANGED,
        OutcomeStatus.SKIPPED_TARGET_CHANGED,
        OutcomeStatus.SKIPPED_NOT_EMPTY,
    }
)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What became of one job. `trashed`: a version that went to trash."""

    job: Job
    status: OutcomeStatus
    trashed: TrashedItem | None = None
    error: TransferError | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True, slots=True)
class RunReport:
    """Counters per DESIGN.md "Counting in a generation", plus every outcome.

    `deletes_cancelled`, `dirs_created` and `dirs_deleted` are extra counters;
    `systemic_error` is the first error that cancelled the deletes.
    """

    files_copied: int
    metadata_updated: int
    files_deleted: int
    bytes_transferred: int
    files_skipped: int
    errors_encountered: int
    dirs_created: int
    dirs_deleted: int
    deletes_cancelled: int
    systemic_error: TransferError | None
    outcomes: tuple[JobOutcome, ...]

    @property
    def trashed(self) -> tuple[TrashedItem, ...]:
        """Every version that went to trash in this run (one sync_trash row each)."""
        return tuple(o.trashed for o in self.outcomes if o.trashed is not None)


@dataclass(slots=True)
class Tally:
    """The run's counters as outcomes arrive (event-loop side only)."""

    files_copied: int = 0
    metadata_updated: int = 0
    files_deleted: int = 0
    bytes_transferred: int = 0
    files_skipped: int = 0
    errors_encountered: int = 0
    dirs_created: int = 0
    dirs_deleted: int = 0
    deletes_cancelled: int = 0
    systemic_error: TransferError | None = None
    outcomes: list[JobOutcome] = field(default_factory=list)

    def add(self, outcome: JobOutcome) -> None:
        self.outcomes.append(outcome)
        status, job = outcome.status, outcome.job
        if status in SKIPPED:
            self.files_skipped += 1
        elif status is OutcomeStatus.FAILED:
            self.errors_encountered += 1
        elif status is OutcomeStatus.CANCELLED:
            self.deletes_cancelled += 1
        elif status is OutcomeStatus.DONE:
            self._count_done(job)

    def _count_done(self, job: Job) -> None:
        if isinstance(job, CopyJob):
            self.files_copied += 1
            if job.source.kind is EntryKind.FILE:
                self.bytes_transferred += job.source.size
        elif isinstance(job, MetadataJob):
            self.metadata_updated += 1
        elif isinstance(job, MkdirJob):
            self.dirs_created += 1
        elif job.expected.kind is EntryKind.DIRECTORY:
            self.dirs_deleted += 1
        else:
            self.files_deleted += 1

    def report(self) -> RunReport:
        return RunReport(
            files_copied=self.files_copied,
            metadata_updated=self.metadata_updated,
            files_deleted=self.files_deleted,
            bytes_transferred=self.bytes_transferred,
            files_skipped=self.files_skipped,
            errors_encountered=self.errors_encountered,
            dirs_created=self.dirs_created,
            dirs_deleted=self.dirs_deleted,
            deletes_cancelled=self.deletes_cancelled,
            systemic_error=self.systemic_error,
            outcomes=tuple(self.outcomes),
        )
