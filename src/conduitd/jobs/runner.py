"""One generation's transfers: directories → copies → metadata → deletes.

Knows nothing of modes or conflicts: it runs the jobs it is given, in that
order, group-commits the copies, and counts. Every outcome is handed to
`on_batch_committed` exactly once, after whatever it changed on disk is
durable, so the caller's rows never run ahead of the disk.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
import structlog

from conduitd import crashpoints
from conduitd.errors import TransferError
from conduitd.forked_workers import ForkedWorkers
from conduitd.jobs import syscalls
from conduitd.jobs.batching import CommitQueue
from conduitd.jobs.commit import (
    Durability,
    DurabilityError,
    PendingReplace,
    ReplaceOutcome,
    ReplaceStatus,
    commit_batch,
)
from conduitd.jobs.copy import Checkpoint, TempFile, copy_to_temp
from conduitd.jobs.copy_workers import copy_in_worker
from conduitd.jobs.failures import (
    PathFailed,
    Side,
    SourceChanged,
    path_failed,
)
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
    Tally,
)
from conduitd.jobs.paths import depth_of
from conduitd.jobs.ratelimit import RateLimiter
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.steps import RunState, Steps
from conduitd.storage.models import EntryKind, EntryRow

logger = structlog.get_logger()

_CHUNK_JOBS = 256  # mkdirs, metadata updates, deletes per worker-thread call
_CHUNK_COPY_FILES = 64  # copies per worker-thread call ...
_CHUNK_COPY_BYTES = 8 << 20  # ... up to this many bytes (a bigger file alone)

OnBatch = Callable[[Sequence[JobOutcome]], Awaitable[None]]
# Temp files just copied and verified, before their commit: each keeps its
# inode when it is renamed into place (if it ever is).
OnCopied = Callable[[Sequence[tuple[CopyJob, TempFile]]], Awaitable[None]]
OnProgress = Callable[[Progress], None]
_J = TypeVar("_J", MkdirJob, MetadataJob, DeleteJob)


class Copier(Protocol):
    """The shape of `copy_to_temp` (a seam: tests inject failures here)."""

    def __call__(
        self,
        src: RootFs,
        rel: bytes,
        dst: RootFs,
        expected: EntryRow,
        limiter: RateLimiter | None = None,
        *,
        checkpoint: Checkpoint | None = None,
        fsync: bool = False,
    ) -> TempFile: ...


@dataclass(frozen=True, slots=True)
class _Copied:
    job: CopyJob
    temp: TempFile


def clean_tmp(root: RootFs) -> int:
    """Empty `.conduitd/tmp/` of a root before any run writes it (crash recovery)."""
    return root.clean_tmp()


class TransferRunner:
    """Runs generic job lists; one instance may serve many runs and conduits.

    Args:
        durability: how batches are made durable.
        copier: the copy primitive (a seam for fault injection).
        batch_max_files, batch_max_bytes, batch_max_age_s: group-commit limits.
        max_batch_attempts: copies of a batch whose fsync failed are redone
            from scratch up to this many times in all.
        workers: forked processes copies of files under 8 MiB run in (see
            `conduitd.jobs.copy_workers`), unless a bandwidth limit, another
            copier or an armed crash point needs this process.
    """

    def __init__(
        self,
        *,
        durability: Durability = Durability.SYNCFS,
        copier: Copier = copy_to_temp,
        batch_max_files: int = 1000,
        batch_max_bytes: int = 256 << 20,
        batch_max_age_s: float = 1.0,
        max_batch_attempts: int = 3,
        workers: ForkedWorkers | None = None,
    ) -> None:
        self.durability = durability
        self.copier = copier
        self.batch_max_files = batch_max_files
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_age_s = batch_max_age_s
        self.max_batch_attempts = max_batch_attempts
        self.workers = workers

    async def run(
        self,
        jobs: Iterable[Job],
        *,
        generation: int,
        trash: bool,
        parallel: int,
        global_limiter: anyio.CapacityLimiter,
        rate_limiter: RateLimiter | None = None,
        on_batch_committed: OnBatch,
        on_progress: OnProgress | None = None,
        on_copied: OnCopied | None = None,
    ) -> RunReport:
        """Run one generation's jobs; per-path failures are counted, not raised.

        Cancelling the caller's scope stops the run between files: no partial
        file under a final name, no temp file left behind.
        """
        run = _Run(
            self,
            generation=generation,
            trash=trash,
            parallel=max(1, parallel),
            global_limiter=global_limiter,
            rate_limiter=rate_limiter,
            on_batch_committed=on_batch_committed,
            on_progress=on_progress,
            on_copied=on_copied,
        )
        try:
            return await run.execute(list(jobs))
        except BaseExceptionGroup as group:
            sole = _sole_error(group)
            if sole is None:
                raise
            raise sole from None  # e.g. what on_batch_committed raised, unwrapped


def _sole_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The one ordinary exception a task-group error wraps, if that is all."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    if isinstance(inner, Exception) and not isinstance(inner, BaseExceptionGroup):
        return inner
    return None


class _Run:
    """The state of one run: counters, live temp files, what blocks what."""

    def __init__(
        self,
        runner: TransferRunner,
        *,
        generation: int,
        trash: bool,
        parallel: int,
        global_limiter: anyio.CapacityLimiter,
        rate_limiter: RateLimiter | None,
        on_batch_committed: OnBatch,
        on_progress: OnProgress | None,
        on_copied: OnCopied | None,
    ) -> None:
        self.runner = runner
        self.generation = generation
        self.trash = trash
        self.parallel = parallel
        self.global_limiter = global_limiter
        self.rate_limiter = rate_limiter
        self.on_batch_committed = on_batch_committed
        self.on_progress = on_progress
        self.on_copied = on_copied
        self.tally = Tally()
        self.state = RunState()
        self.steps = Steps(
            generation=generation,
            trash=trash,
            durability=runner.durability,
            state=self.state,
        )
        self.live_temps: dict[bytes, RootFs] = {}
        self.progress = Progress(0, 0, 0, 0)
        self.fsync_each = (
            runner.durability is Durability.FSYNC or not syscalls.have_syncfs()
        )
        self.log = logger.bind(generation=generation)

    async def execute(self, jobs: list[Job]) -> RunReport:
        mkdirs = [j for j in jobs if isinstance(j, MkdirJob)]
        copies = [j for j in jobs if isinstance(j, CopyJob)]
        updates = [j for j in jobs if isinstance(j, MetadataJob)]
        deletes = [j for j in jobs if isinstance(j, DeleteJob)]
        # Copies under another name (conflict copies) read versions that the
        # other jobs may replace, even by a directory: they all land first.
        renamed = [j for j in copies if j.dest_rel != j.rel]
        copies = [j for j in copies if j.dest_rel == j.rel]
        self.state.index_unreadable(jobs)
        total_bytes = sum(map(_copy_bytes, (*renamed, *copies)))
        self.progress = Progress(0, len(jobs), 0, total_bytes)
        try:
            await self._copies(renamed)
            for level in _by_depth(mkdirs):
                await self._chunked(level, self.steps.mkdirs)
            await self._copies(copies)
            await self._finish_dirs()
            await self._chunked(updates, self.steps.metadata)
            await self._deletes(deletes)
        finally:
            with anyio.CancelScope(shield=True):
                await self._drop_live_temps()
        return self.tally.report()

    # -- bookkeeping (event loop) ----------------------------------------------

    async def _record(self, outcomes: Sequence[JobOutcome]) -> None:
        """Count, remember what blocks later jobs, report progress, hand over."""
        if not outcomes:
            return
        for outcome in outcomes:
            self.tally.add(outcome)
            if self.state.note(outcome):
                self.tally.systemic_error = outcome.error
                self.log.warning(
                    "deletes_cancelled_systemic_error", error=str(outcome.error)
                )
        done = self.progress.files_done + len(outcomes)
        moved = self.progress.bytes_done + sum(
            _copy_bytes(o.job) for o in outcomes if isinstance(o.job, CopyJob)
        )
        self.progress = dataclasses.replace(
            self.progress, files_done=done, bytes_done=moved
        )
        if self.on_progress is not None:
            self.on_progress(self.progress)
        with anyio.CancelScope(shield=True):
            await self.on_batch_committed(outcomes)

    async def _drop_live_temps(self) -> None:
        temps = list(self.live_temps.items())
        self.live_temps.clear()
        if temps:
            await anyio.to_thread.run_sync(_remove_temps, temps)

    # -- chunked phases (mkdirs, metadata, deletes) ----------------------------

    async def _chunked(
        self, jobs: Sequence[_J], apply: Callable[[Sequence[_J]], list[JobOutcome]]
    ) -> None:
        """Apply `jobs` in chunks, `parallel` worker threads at a time."""
        chunks = iter(
            [jobs[i : i + _CHUNK_JOBS] for i in range(0, len(jobs), _CHUNK_JOBS)]
        )

        async def worker() -> None:
            for chunk in chunks:
                outcomes = await anyio.to_thread.run_sync(
                    apply, chunk, limiter=self.global_limiter
                )
                await self._record(outcomes)

        workers = min(self.parallel, -(-len(jobs) // _CHUNK_JOBS))
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)

    async def _finish_dirs(self) -> None:
        """New directories get their final mode and mtime, deepest first."""
        created = self.state.created_dirs
        jobs = sorted(created, key=lambda j: depth_of(j.rel), reverse=True)
        if jobs:
            await anyio.to_thread.run_sync(
                self.steps.finish_dirs, jobs, limiter=self.global_limiter
            )

    # -- copies -----------------------------------------------------------------

    async def _copies(self, jobs: Sequence[CopyJob]) -> None:
        """Copy `parallel` at a time while one committer group-commits batches."""
        if not jobs:
            return
        queue: CommitQueue[_Copied | JobOutcome] = CommitQueue(
            max_files=self.runner.batch_max_files,
            max_bytes=self.runner.batch_max_bytes,
            max_age_s=self.runner.batch_max_age_s,
        )
        pending = iter(_copy_chunks(jobs))

        async def worker() -> None:
            for chunk in pending:
                for result in await self._copy_chunk(chunk):
                    size = result.temp.size if isinstance(result, _Copied) else 0
                    queue.put(result, size)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._commit_loop, queue)
            async with anyio.create_task_group() as workers:
                for _ in range(min(self.parallel, len(jobs))):
                    workers.start_soon(worker)
            queue.close()

    async def _copy_one(self, job: CopyJob) -> _Copied | JobOutcome:
        (result,) = await self._copy_chunk([job])
        return result

    async def _copy_chunk(self, jobs: Sequence[CopyJob]) -> list[_Copied | JobOutcome]:
        """Copy several files in one call to a forked worker or a thread.

        One thread hop per file cost more than copying a small file (issue 5
        bench: ~4 s of 5.8 s for 10k files went to handing jobs between the
        loop and the workers), so small files travel in chunks.
        """
        results: list[_Copied | JobOutcome] = []
        ready: list[CopyJob] = []
        for job in jobs:
            pre = self.state.precheck(job, job.dst_root, job.dest_rel)
            if pre is not None:
                results.append(pre)
            else:
                ready.append(job)
        if not ready:
            return results
        forked = await self._copy_forked(ready)  # live temps already
        copied: list[_Copied | JobOutcome] = list(forked)
        if len(forked) < len(ready):
            done = {id(c.job) for c in forked}
            call = functools.partial(
                _copy_many,
                self.runner.copier,
                [job for job in ready if id(job) not in done],
                self.rate_limiter,
                anyio.from_thread.check_cancelled,
                self.fsync_each,
            )
            here = await anyio.to_thread.run_sync(call, limiter=self.global_limiter)
            for result in here:
                if isinstance(result, _Copied):
                    self.live_temps[result.temp.tmp_rel] = result.job.dst_root
            copied += here
        temps = [r for r in copied if isinstance(r, _Copied)]
        if temps and self.on_copied is not None:
            await self.on_copied([(r.job, r.temp) for r in temps])
        return results + copied

    async def _copy_forked(self, jobs: Sequence[CopyJob]) -> list[_Copied]:
        """The copies a worker process made of `jobs` (maybe none, maybe not
        all: the rest are copied here), each a live temp at once."""
        workers = self.runner.workers
        if (
            workers is None
            or self.rate_limiter is not None
            or self.runner.copier is not copy_to_temp
            or crashpoints.armed()
        ):
            return []
        pairs: dict[tuple[RootFs, RootFs], list[CopyJob]] = defaultdict(list)
        for job in jobs:
            # A big file waits on the disk, not on the GIL (its chunks are
            # 1 MiB): it stays in a thread rather than hold a worker long.
            if _copy_bytes(job) < _CHUNK_COPY_BYTES:
                pairs[job.src_root, job.dst_root].append(job)
        copied: list[_Copied] = []
        for (source, target), group in pairs.items():
            temps = await copy_in_worker(
                workers,
                source,
                target,
                [(job.rel, job.source) for job in group],
                fsync=self.fsync_each,
                limiter=self.global_limiter,
            )
            if temps is None:
                continue  # copied here instead
            for job, temp in zip(group, temps, strict=True):
                if temp is not None:
                    self.live_temps[temp.tmp_rel] = target
                    copied.append(_Copied(job, temp))
        return copied

    async def _commit_loop(self, queue: CommitQueue[_Copied | JobOutcome]) -> None:
        while (batch := await queue.next_batch()) is not None:
            settled = [b for b in batch if isinstance(b, JobOutcome)]
            groups: dict[RootFs, list[_Copied]] = defaultdict(list)
            for item in batch:
                if isinstance(item, _Copied):
                    groups[item.job.dst_root].append(item)
            await self._record(settled)
            for root, group in groups.items():
                await self._record(await self._commit_group(root, group))

    async def _commit_group(
        self, root: RootFs, group: list[_Copied]
    ) -> list[JobOutcome]:
        """Commit one root's share of a batch; redo it when fsync failed."""
        redone: list[JobOutcome] = []
        for attempt in range(1, self.runner.max_batch_attempts + 1):
            items = [
                PendingReplace(
                    c.temp, c.job.dest_rel, c.job.expected_target, c.job.trash_reason
                )
                for c in group
            ]
            call = functools.partial(
                commit_batch,
                root,
                items,
                generation=self.generation,
                trash=self.trash,
                durable=self.runner.durability,
            )
            try:
                results = await anyio.to_thread.run_sync(
                    call, limiter=self.global_limiter
                )
            except DurabilityError as exc:
                self._forget(group)
                self.log.warning(
                    "batch_not_durable",
                    attempt=attempt,
                    files=len(group),
                    error=str(exc),
                )
                error = PathFailed(
                    str(exc), side=Side.TARGET, errno_=exc.errno or errno.EIO
                )
                if attempt == self.runner.max_batch_attempts:
                    return redone + [_failed(c.job, error) for c in group]
                group, failed = await self._recopy(group)
                redone.extend(failed)
                if not group:
                    return redone
                continue
            except PathFailed as exc:  # renamed, but directories not durable
                self._forget(group)
                return redone + [_failed(c.job, exc) for c in group]
            self._forget(group)
            return redone + [
                _from_replace(c, r) for c, r in zip(group, results, strict=True)
            ]
        return redone

    async def _recopy(
        self, group: list[_Copied]
    ) -> tuple[list[_Copied], list[JobOutcome]]:
        copied: list[_Copied] = []
        settled: list[JobOutcome] = []
        for item in group:
            result = await self._copy_one(item.job)
            if isinstance(result, _Copied):
                copied.append(result)
            else:
                settled.append(result)
        return copied, settled

    def _forget(self, group: Iterable[_Copied]) -> None:
        for item in group:
            self.live_temps.pop(item.temp.tmp_rel, None)

    # -- deletes ----------------------------------------------------------------

    async def _deletes(self, jobs: Sequence[DeleteJob]) -> None:
        """Files first, then directories children-last; held back after failures."""
        held = [j for j in jobs if self.state.hold_back(j)]
        await self._record([JobOutcome(j, OutcomeStatus.CANCELLED) for j in held])
        rest = [j for j in jobs if not self.state.hold_back(j)]
        files = [j for j in rest if j.expected.kind is not EntryKind.DIRECTORY]
        await self._chunked(files, self.steps.deletes)
        directories = [j for j in rest if j.expected.kind is EntryKind.DIRECTORY]
        for level in reversed(_by_depth(directories)):
            await self._chunked(level, self.steps.deletes)


def _copy_chunks(jobs: Sequence[CopyJob]) -> Iterator[list[CopyJob]]:
    """Consecutive jobs grouped up to `_CHUNK_COPY_FILES` files or
    `_CHUNK_COPY_BYTES` bytes; a big file travels alone."""
    chunk: list[CopyJob] = []
    size = 0
    for job in jobs:
        job_bytes = _copy_bytes(job)
        if chunk and size + job_bytes > _CHUNK_COPY_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(job)
        size += job_bytes
        if len(chunk) >= _CHUNK_COPY_FILES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _copy_many(
    copier: Copier,
    jobs: Sequence[CopyJob],
    rate_limiter: RateLimiter | None,
    checkpoint: Checkpoint,
    fsync: bool,
) -> list[_Copied | JobOutcome]:
    """Copy `jobs` one after the other (in a worker thread).

    Per-path failures become outcomes; cancellation (raised by `checkpoint`)
    drops the temps this call made before it propagates.
    """
    results: list[_Copied | JobOutcome] = []
    try:
        with ExitStack() as stack:
            for root in {r for job in jobs for r in (job.src_root, job.dst_root)}:
                stack.enter_context(root.cached_dirs())
            for job in jobs:
                checkpoint()
                copied = _copy_job(copier, job, rate_limiter, checkpoint, fsync)
                results.append(copied)
    except BaseException:
        _remove_temps(
            [
                (r.temp.tmp_rel, r.job.dst_root)
                for r in results
                if isinstance(r, _Copied)
            ]
        )
        raise
    return results


def _copy_job(
    copier: Copier,
    job: CopyJob,
    rate_limiter: RateLimiter | None,
    checkpoint: Checkpoint,
    fsync: bool,
) -> _Copied | JobOutcome:
    try:
        temp = copier(
            job.src_root,
            job.rel,
            job.dst_root,
            job.source,
            rate_limiter,
            checkpoint=checkpoint,
            fsync=fsync,
        )
    except SourceChanged as exc:
        return JobOutcome(job, OutcomeStatus.SKIPPED_SOURCE_CHANGED, error=exc)
    except TransferError as exc:
        return JobOutcome(job, OutcomeStatus.FAILED, error=exc)
    except OSError as exc:  # a copier that does not translate: the target's
        error = path_failed(Side.TARGET, job.dest_rel, "copy", exc)
        return JobOutcome(job, OutcomeStatus.FAILED, error=error)
    return _Copied(job, temp)


def _failed(job: Job, error: TransferError) -> JobOutcome:
    return JobOutcome(job, OutcomeStatus.FAILED, error=error)


def _from_replace(copied: _Copied, result: ReplaceOutcome) -> JobOutcome:
    status = {
        ReplaceStatus.REPLACED: OutcomeStatus.DONE,
        ReplaceStatus.SKIPPED_TARGET_CHANGED: OutcomeStatus.SKIPPED_TARGET_CHANGED,
    }.get(result.status, OutcomeStatus.FAILED)
    return JobOutcome(copied.job, status, result.trashed, result.error)


def _copy_bytes(job: Job) -> int:
    if isinstance(job, CopyJob) and job.source.kind is EntryKind.FILE:
        return job.source.size
    return 0


def _by_depth(jobs: Sequence[_J]) -> list[list[_J]]:
    """Jobs grouped by path depth, shallowest level first."""
    levels: dict[int, list[_J]] = defaultdict(list)
    for job in jobs:
        levels[depth_of(job.rel)].append(job)
    return [levels[d] for d in sorted(levels)]


def _remove_temps(temps: Sequence[tuple[bytes, RootFs]]) -> None:
    for tmp_rel, root in temps:
        with suppress(OSError):
            root.remove_temp(tmp_rel)
