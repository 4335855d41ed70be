"""The blocking steps of a run, one worker-thread call per chunk of jobs.

Directories, metadata updates and deletes are applied in chunks, each chunk
made durable before its outcomes go back to the event loop. `RunState` holds
what earlier outcomes decide about later jobs; only the event loop writes it.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import structlog

from conduitd.errors import TransferError
from conduitd.jobs.commit import Durability
from conduitd.jobs.delete import DeleteStatus, DeleteStrategy, delete_entry
from conduitd.jobs.entries import matches
from conduitd.jobs.failures import (
    PathFailed,
    Side,
    TargetChanged,
    UnreadableEntry,
    describe,
    is_systemic,
    path_failed,
)
from conduitd.jobs.metadata import MetadataStatus, update_metadata
from conduitd.jobs.outcomes import (
    CopyJob,
    DeleteJob,
    Job,
    JobOutcome,
    MetadataJob,
    MkdirJob,
    OutcomeStatus,
)
from conduitd.jobs.paths import parent_of, split_synced
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.trash import TrashedItem, move_to_trash, touched_dirs
from conduitd.storage.models import EntryKind, EntryRow

logger = structlog.get_logger()

_OWNER_RWX = 0o700  # new directories stay writable until their copies landed

Key = tuple[RootFs, bytes]
Touched = dict[RootFs, set[bytes]]


@dataclass(slots=True)
class RunState:
    """What earlier outcomes decide about later jobs of the same run."""

    unreadable: set[Key] = field(default_factory=set)
    blocked: dict[Key, OutcomeStatus] = field(default_factory=dict)
    trashed_dirs: dict[Key, TrashedItem] = field(default_factory=dict)
    failed_content: set[str] = field(default_factory=set)
    created_dirs: list[MkdirJob] = field(default_factory=list)
    # Paths read by a copy under another name (a conflict copy) that did not
    # land: nothing may replace them in this run, or that version is lost.
    unsaved: set[Key] = field(default_factory=set)
    systemic_error: TransferError | None = None

    def index_unreadable(self, jobs: Iterable[Job]) -> None:
        """Remember unreadable entries the jobs target: nothing under them is touched."""
        for job in jobs:
            root, rel, entry = target_of(job)
            if entry is not None and entry.unreadable:
                self.unreadable.add((root, rel))

    def note(self, outcome: JobOutcome) -> bool:
        """Learn from an outcome; True when it is the first systemic error."""
        job, status, error = outcome.job, outcome.status, outcome.error
        first_systemic = (
            error is not None and is_systemic(error) and self.systemic_error is None
        )
        if first_systemic:
            self.systemic_error = error
        if isinstance(job, CopyJob):
            if status is OutcomeStatus.FAILED and job.source.content_id is not None:
                self.failed_content.add(job.source.content_id)
            if job.dest_rel != job.rel and status is not OutcomeStatus.DONE:
                self.unsaved.add((job.src_root, job.rel))
            trashed = outcome.trashed
            if trashed is not None and trashed.kind is EntryKind.DIRECTORY:
                self.trashed_dirs[(job.dst_root, job.dest_rel)] = trashed
        elif isinstance(job, MkdirJob):
            if status is OutcomeStatus.DONE:
                self.created_dirs.append(job)
            elif status is not OutcomeStatus.UNCHANGED:
                self.blocked[(job.root, job.rel)] = status
        return first_systemic

    def precheck(self, job: Job, root: RootFs, rel: bytes) -> JobOutcome | None:
        """A job under an unreadable directory, or under one not created, or
        one that would replace a version whose copy under another name failed."""
        if (root, rel) in self.unsaved and not isinstance(job, DeleteJob):
            kept = TransferError(
                f"{describe(rel)}: kept, its copy under another name did not land"
            )
            return JobOutcome(job, OutcomeStatus.SKIPPED_TARGET_CHANGED, error=kept)
        for ancestor in ancestors(rel):
            error: TransferError
            if (root, ancestor) in self.unreadable:
                error = UnreadableEntry(
                    f"{describe(rel)}: under unreadable {describe(ancestor)}"
                )
                return JobOutcome(job, OutcomeStatus.FAILED, error=error)
            status = self.blocked.get((root, ancestor))
            if status is OutcomeStatus.FAILED:
                error = TransferError(
                    f"{describe(rel)}: directory {describe(ancestor)} was not created"
                )
                return JobOutcome(job, OutcomeStatus.FAILED, error=error)
            if status is not None:
                return JobOutcome(job, OutcomeStatus.SKIPPED_TARGET_CHANGED)
        return None

    def hold_back(self, job: DeleteJob) -> bool:
        """A systemic error holds back every delete; a failed copy, its content's."""
        if self.systemic_error is not None:
            return True
        content_id = job.expected.content_id
        return content_id is not None and content_id in self.failed_content


class Steps:
    """Blocking per-chunk work; called in worker threads, reads `state` only."""

    def __init__(
        self,
        *,
        generation: int,
        trash: bool,
        durability: Durability,
        state: RunState,
    ) -> None:
        self.generation = generation
        self.trash = trash
        self.durability = durability
        self.state = state
        self.log = logger.bind(generation=generation)

    # -- durability ---------------------------------------------------------------

    def sync(self, dirs: Touched, entries: Touched) -> None:
        """syncfs each touched root, or fsync each touched entry and directory."""
        for root in {*dirs, *entries}:
            if self.durability is Durability.SYNCFS and root.syncfs():
                continue
            for rel in sorted(entries.get(root, ())):
                root.fsync_entry(rel)
            for rel in sorted(dirs.get(root, ())):
                root.fsync_dir(rel)

    def durable(
        self, outcomes: list[JobOutcome], dirs: Touched, entries: Touched | None = None
    ) -> list[JobOutcome]:
        """Make a chunk's changes durable; if that fails, its work did not happen."""
        try:
            self.sync(dirs, entries or {})
        except OSError as exc:
            error = PathFailed(
                f"making changes durable failed: {exc.strerror}",
                side=Side.TARGET,
                errno_=exc.errno,
            )
            return [
                dataclasses.replace(o, status=OutcomeStatus.FAILED, error=error)
                if o.status is OutcomeStatus.DONE
                else o
                for o in outcomes
            ]
        return outcomes

    # -- directories ----------------------------------------------------------------

    def mkdirs(self, chunk: Sequence[MkdirJob]) -> list[JobOutcome]:
        outcomes = [self._mkdir_one(job) for job in chunk]
        dirs: Touched = defaultdict(set)
        for job, outcome in zip(chunk, outcomes, strict=True):
            if outcome.status is OutcomeStatus.DONE:
                dirs[job.root].add(parent_of(job.rel))
            if outcome.trashed is not None:
                dirs[job.root].update(touched_dirs(outcome.trashed))
        return self.durable(outcomes, dirs)

    def _mkdir_one(self, job: MkdirJob) -> JobOutcome:
        pre = self.state.precheck(job, job.root, job.rel)
        if pre is not None:
            return pre
        try:
            split_synced(job.rel)
            return self._make_directory(job)
        except TargetChanged as exc:
            return JobOutcome(job, OutcomeStatus.SKIPPED_TARGET_CHANGED, error=exc)
        except TransferError as exc:
            return JobOutcome(job, OutcomeStatus.FAILED, error=exc)
        except OSError as exc:
            error = path_failed(Side.TARGET, job.rel, "mkdir", exc)
            return JobOutcome(job, OutcomeStatus.FAILED, error=error)

    def _make_directory(self, job: MkdirJob) -> JobOutcome:
        """mkdir; a matching non-directory in the way goes to trash first."""
        root, rel, trashed = job.root, job.rel, None
        current = lstat_or_none(root, rel)
        if current is not None:
            if stat.S_ISDIR(current.st_mode):
                return JobOutcome(job, OutcomeStatus.UNCHANGED)
            expected = job.expected_target
            if expected is None or not matches(current, expected):
                raise TargetChanged(f"{describe(rel)}: target changed since resolution")
            if expected.unreadable:
                raise UnreadableEntry(f"{describe(rel)}: flagged unreadable")
            trashed = self._clear_for_directory(job, expected)
        root.makedirs_for(rel)
        try:
            root.mkdir(rel, stat.S_IMODE(job.source.mode) | _OWNER_RWX)
        except FileExistsError as exc:
            if stat.S_ISDIR(root.lstat(rel).st_mode):
                return JobOutcome(job, OutcomeStatus.UNCHANGED, trashed)
            raise TargetChanged(f"{describe(rel)}: target appeared meanwhile") from exc
        return JobOutcome(job, OutcomeStatus.DONE, trashed)

    def _clear_for_directory(
        self, job: MkdirJob, expected: EntryRow
    ) -> TrashedItem | None:
        root, rel = job.root, job.rel
        if self.trash:
            return move_to_trash(
                root,
                rel,
                self.generation,
                reason=job.trash_reason,
                expected=expected,
            )
        result = delete_entry(
            root,
            rel,
            expected,
            generation=self.generation,
            strategy=DeleteStrategy.PERMANENT,
        )
        if result.status is not DeleteStatus.DELETED:
            raise TargetChanged(f"{describe(rel)}: target changed since resolution")
        return None

    def finish_dirs(self, jobs: Sequence[MkdirJob]) -> None:
        """Final mode and mtime of new directories (best effort), deepest first."""
        entries: Touched = defaultdict(set)
        for job in jobs:
            try:
                job.root.chmod(job.rel, stat.S_IMODE(job.source.mode))
                job.root.utime(job.rel, job.source.mtime_ns)
            except OSError as exc:
                self.log.warning(
                    "directory_metadata_failed", path=describe(job.rel), error=str(exc)
                )
                continue
            entries[job.root].add(job.rel)
        try:
            self.sync({}, entries)
        except OSError as exc:
            self.log.warning("directory_metadata_not_durable", error=str(exc))

    # -- metadata -------------------------------------------------------------------

    def metadata(self, chunk: Sequence[MetadataJob]) -> list[JobOutcome]:
        outcomes = [self._metadata_one(job) for job in chunk]
        entries: Touched = defaultdict(set)
        for job, outcome in zip(chunk, outcomes, strict=True):
            if outcome.status is OutcomeStatus.DONE:
                entries[job.root].add(job.rel)
        return self.durable(outcomes, {}, entries)

    def _metadata_one(self, job: MetadataJob) -> JobOutcome:
        pre = self.state.precheck(job, job.root, job.rel)
        if pre is not None:
            return pre
        try:
            result = update_metadata(job.root, job.rel, job.source, job.expected_target)
        except TransferError as exc:
            return JobOutcome(job, OutcomeStatus.FAILED, error=exc)
        if result.status is MetadataStatus.UPDATED:
            return JobOutcome(job, OutcomeStatus.DONE)
        return JobOutcome(job, OutcomeStatus.SKIPPED_TARGET_CHANGED)

    # -- deletes --------------------------------------------------------------------

    def deletes(self, chunk: Sequence[DeleteJob]) -> list[JobOutcome]:
        outcomes: list[JobOutcome] = []
        dirs: Touched = defaultdict(set)
        systemic = False
        for job in chunk:
            if systemic or self.state.hold_back(job):
                outcomes.append(JobOutcome(job, OutcomeStatus.CANCELLED))
                continue
            outcome = self._delete_one(job)
            outcomes.append(outcome)
            systemic = outcome.error is not None and is_systemic(outcome.error)
            if outcome.status is OutcomeStatus.DONE:
                dirs[job.root].add(parent_of(job.rel))
            if outcome.trashed is not None:
                dirs[job.root].update(touched_dirs(outcome.trashed))
        return self.durable(outcomes, dirs)

    def _delete_one(self, job: DeleteJob) -> JobOutcome:
        pre = self.state.precheck(job, job.root, job.rel)
        if pre is not None:
            return pre
        for ancestor in ancestors(job.rel):
            parent_item = self.state.trashed_dirs.get((job.root, ancestor))
            if parent_item is not None:
                return _deleted_with_parent(job, ancestor, parent_item)
        strategy = DeleteStrategy.TRASH if self.trash else DeleteStrategy.PERMANENT
        try:
            result = delete_entry(
                job.root,
                job.rel,
                job.expected,
                generation=self.generation,
                strategy=strategy,
            )
        except TransferError as exc:
            return JobOutcome(job, OutcomeStatus.FAILED, error=exc)
        status = {
            DeleteStatus.DELETED: OutcomeStatus.DONE,
            DeleteStatus.SKIPPED_NOT_EMPTY: OutcomeStatus.SKIPPED_NOT_EMPTY,
        }.get(result.status, OutcomeStatus.SKIPPED_TARGET_CHANGED)
        return JobOutcome(job, status, result.trashed)


def _deleted_with_parent(
    job: DeleteJob, ancestor: bytes, parent_item: TrashedItem
) -> JobOutcome:
    """Its directory went to trash whole earlier in this run (replaced by a
    file): the entry is there now, under the directory's trash path."""
    trash_rel = parent_item.trash_rel + job.rel[len(ancestor) :]
    current = lstat_or_none(job.root, trash_rel)
    if current is None or not matches(current, job.expected):
        return JobOutcome(job, OutcomeStatus.SKIPPED_TARGET_CHANGED)
    if job.expected.kind is EntryKind.DIRECTORY:
        return JobOutcome(job, OutcomeStatus.DONE)
    item = dataclasses.replace(
        parent_item,
        relative_path=job.rel,
        trash_rel=trash_rel,
        kind=job.expected.kind,
        size=current.st_size,
        mtime_ns=current.st_mtime_ns,
        content_id=job.expected.content_id,
        inode=current.st_ino,
    )
    return JobOutcome(job, OutcomeStatus.DONE, item)


def target_of(job: Job) -> tuple[RootFs, bytes, EntryRow | None]:
    """The root and path a job writes or deletes, and the entry expected there."""
    if isinstance(job, CopyJob):
        return job.dst_root, job.dest_rel, job.expected_target
    if isinstance(job, DeleteJob):
        return job.root, job.rel, job.expected
    return job.root, job.rel, job.expected_target


def ancestors(rel: bytes) -> Iterator[bytes]:
    """Proper ancestors of `rel`, nearest first (the root excluded)."""
    while b"/" in rel:
        rel = parent_of(rel)
        yield rel


def lstat_or_none(root: RootFs, rel: bytes) -> os.stat_result | None:
    try:
        return root.lstat(rel)
    except FileNotFoundError:
        return None
