"""TransferRunner against real directories: order, batching, failures, cancel."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from conduitd.jobs import (
    CopyJob,
    DeleteJob,
    Job,
    JobOutcome,
    MetadataJob,
    MkdirJob,
    OutcomeStatus,
    PathFailed,
    Progress,
    RateLimiter,
    RootFs,
    Side,
    TempFile,
    TransferRunner,
    TrashReason,
    clean_tmp,
    copy_to_temp,
)
from conduitd.jobs.copy import Checkpoint
from conduitd.jobs.runner import OnCopied
from conduitd.storage.models import EntryRow
from helpers.trees import entry_of, tmp_entries, tree_digest

MTIME_NS = 1_650_000_000_987_654_321


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write(
    path: Path, data: bytes, *, mode: int = 0o644, mtime_ns: int = MTIME_NS
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


class Recorder:
    """on_batch_committed: keeps every batch, checks each outcome comes once."""

    def __init__(self) -> None:
        self.batches: list[list[JobOutcome]] = []

    async def __call__(self, outcomes: Sequence[JobOutcome]) -> None:
        self.batches.append(list(outcomes))

    @property
    def outcomes(self) -> list[JobOutcome]:
        return [o for batch in self.batches for o in batch]

    def of(self, rel: bytes) -> JobOutcome:
        [found] = [o for o in self.outcomes if _target_rel(o.job) == rel]
        return found


def _target_rel(job: Job) -> bytes:
    return job.dest_rel if isinstance(job, CopyJob) else job.rel


class FlakySyncRoot(RootFs):
    """A real root whose next `failures` syncfs/fsync calls report EIO."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EIO, "injected I/O error")

    def syncfs(self) -> bool:
        self._maybe_fail()
        return super().syncfs()

    def fsync_entry(self, rel: bytes) -> None:
        self._maybe_fail()
        super().fsync_entry(rel)


class FailingCopier:
    """The real copy, except for the paths told to fail (a seam, not a mock)."""

    def __init__(self, failures: dict[bytes, BaseException]) -> None:
        self.failures = failures
        self.calls: list[bytes] = []

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
    ) -> TempFile:
        self.calls.append(rel)
        failure = self.failures.get(rel)
        if failure is not None:
            raise failure
        return copy_to_temp(
            src, rel, dst, expected, limiter, checkpoint=checkpoint, fsync=fsync
        )


class Sides:
    """A source and a target root, and job builders reading both as they are."""

    def __init__(self, tmp_path: Path) -> None:
        self.src = tmp_path / "src"
        self.dst = tmp_path / "dst"
        self.src.mkdir()
        self.dst.mkdir()
        self.src_fs = RootFs(self.src)
        self.dst_fs = RootFs(self.dst)

    def close(self) -> None:
        self.src_fs.close()
        self.dst_fs.close()

    def target_entry(self, rel: str) -> EntryRow | None:
        return entry_of(self.dst, rel) if os.path.lexists(self.dst / rel) else None

    def copy(self, rel: str) -> CopyJob:
        raw = os.fsencode(rel)
        return CopyJob(
            self.src_fs,
            raw,
            self.dst_fs,
            raw,
            entry_of(self.src, rel),
            self.target_entry(rel),
        )

    def mkdir(self, rel: str) -> MkdirJob:
        return MkdirJob(
            self.dst_fs,
            os.fsencode(rel),
            entry_of(self.src, rel),
            self.target_entry(rel),
        )

    def metadata(self, rel: str) -> MetadataJob:
        return MetadataJob(
            self.dst_fs,
            os.fsencode(rel),
            entry_of(self.src, rel),
            entry_of(self.dst, rel),
        )

    def delete(self, rel: str) -> DeleteJob:
        return DeleteJob(self.dst_fs, os.fsencode(rel), entry_of(self.dst, rel))


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[Sides]:
    pair = Sides(tmp_path)
    yield pair
    pair.close()


async def run(
    jobs: Sequence[Job],
    *,
    runner: TransferRunner | None = None,
    trash: bool = True,
    parallel: int = 3,
    progress: list[Progress] | None = None,
    rate_limiter: RateLimiter | None = None,
    on_copied: OnCopied | None = None,
) -> tuple[Recorder, object]:
    recorder = Recorder()
    with anyio.fail_after(20):
        report = await (runner or TransferRunner()).run(
            jobs,
            generation=1,
            trash=trash,
            parallel=parallel,
            global_limiter=anyio.CapacityLimiter(8),
            rate_limiter=rate_limiter,
            on_batch_committed=recorder,
            on_progress=progress.append if progress is not None else None,
            on_copied=on_copied,
        )
    return recorder, report


@pytest.mark.anyio
async def test_runner_creates_dirs_then_copies_then_metadata_then_deletes(
    sides: Sides,
) -> None:
    write(sides.src / "new" / "a.txt", b"a" * 100)
    os.chmod(sides.src / "new", 0o750)
    os.utime(sides.src / "new", ns=(MTIME_NS, MTIME_NS))
    write(sides.src / "b.txt", b"new b")
    write(sides.dst / "b.txt", b"old b")
    write(sides.src / "same.txt", b"same", mode=0o600)
    write(sides.dst / "same.txt", b"same", mode=0o644, mtime_ns=MTIME_NS - 1)
    write(sides.dst / "gone.txt", b"bye")
    write(sides.dst / "olddir" / "x", b"x")
    jobs: list[Job] = [
        sides.delete("olddir"),
        sides.delete("olddir/x"),
        sides.delete("gone.txt"),
        sides.metadata("same.txt"),
        sides.copy("b.txt"),
        sides.copy("new/a.txt"),
        sides.mkdir("new"),
    ]
    progress: list[Progress] = []

    recorder, report = await run(jobs, progress=progress)

    kinds = [type(o.job).__name__ for o in recorder.outcomes]
    assert kinds == sorted(
        kinds, key=["MkdirJob", "CopyJob", "MetadataJob", "DeleteJob"].index
    )
    deleted = [o.job.rel for o in recorder.outcomes if isinstance(o.job, DeleteJob)]
    assert deleted.index(b"olddir/x") < deleted.index(b"olddir")
    assert {o.status for o in recorder.outcomes} == {OutcomeStatus.DONE}
    assert report == dataclasses.replace(
        report,  # type: ignore[type-var]  # RunReport: compare counters only
        files_copied=2,
        metadata_updated=1,
        files_deleted=2,
        bytes_transferred=105,
        files_skipped=0,
        errors_encountered=0,
        dirs_created=1,
        dirs_deleted=1,
        deletes_cancelled=0,
        systemic_error=None,
    )
    assert (sides.dst / "new" / "a.txt").read_bytes() == b"a" * 100
    new_dir = os.lstat(sides.dst / "new")
    assert stat.S_IMODE(new_dir.st_mode) == 0o750
    assert new_dir.st_mtime_ns == MTIME_NS
    assert stat.S_IMODE(os.lstat(sides.dst / "same.txt").st_mode) == 0o600
    assert os.lstat(sides.dst / "same.txt").st_mtime_ns == MTIME_NS
    trash = sides.dst / ".conduitd" / "trash" / "1"
    assert (trash / "b.txt").read_bytes() == b"old b"
    assert (trash / "gone.txt").read_bytes() == b"bye"
    assert (trash / "olddir" / "x").read_bytes() == b"x"
    assert not (sides.dst / "olddir").exists()
    reasons = {t.relative_path: t.reason for t in report.trashed}  # type: ignore[attr-defined]  # RunReport
    assert reasons == {
        b"b.txt": TrashReason.OVERWRITTEN,
        b"gone.txt": TrashReason.DELETED,
        b"olddir/x": TrashReason.DELETED,
    }
    assert progress[-1] == Progress(7, 7, 105, 105)
    assert tmp_entries(sides.dst) == []


@pytest.mark.anyio
async def test_runner_systemic_copy_error_cancels_every_delete(sides: Sides) -> None:
    write(sides.src / "a", b"a")
    write(sides.src / "b", b"b")
    write(sides.dst / "old1", b"1")
    write(sides.dst / "old2", b"2")
    copier = FailingCopier({b"a": OSError(errno.ENOSPC, "No space left on device")})
    jobs = [
        sides.copy("a"),
        sides.copy("b"),
        sides.delete("old1"),
        sides.delete("old2"),
    ]

    recorder, report = await run(jobs, runner=TransferRunner(copier=copier))

    assert recorder.of(b"a").status is OutcomeStatus.FAILED
    assert recorder.of(b"b").status is OutcomeStatus.DONE
    assert recorder.of(b"old1").status is OutcomeStatus.CANCELLED
    assert recorder.of(b"old2").status is OutcomeStatus.CANCELLED
    assert (sides.dst / "old1").exists()
    assert (sides.dst / "old2").exists()
    assert report.errors_encountered == 1  # type: ignore[attr-defined]
    assert report.deletes_cancelled == 2  # type: ignore[attr-defined]
    assert report.files_deleted == 0  # type: ignore[attr-defined]
    assert report.systemic_error is not None  # type: ignore[attr-defined]
    assert tmp_entries(sides.dst) == []


@pytest.mark.anyio
async def test_runner_per_path_failure_cancels_only_deletes_of_the_same_content(
    sides: Sides,
) -> None:
    write(sides.src / "renamed.txt", b"moved content")
    write(sides.dst / "old-name.txt", b"moved content")
    write(sides.dst / "unrelated.txt", b"something else")
    failure = PathFailed(
        "renamed.txt: read failed", side=Side.SOURCE, errno_=errno.EACCES
    )
    copier = FailingCopier({b"renamed.txt": failure})
    jobs = [
        sides.copy("renamed.txt"),
        sides.delete("old-name.txt"),
        sides.delete("unrelated.txt"),
    ]

    recorder, report = await run(jobs, runner=TransferRunner(copier=copier))

    assert recorder.of(b"renamed.txt").status is OutcomeStatus.FAILED
    assert recorder.of(b"old-name.txt").status is OutcomeStatus.CANCELLED
    assert recorder.of(b"unrelated.txt").status is OutcomeStatus.DONE
    assert (sides.dst / "old-name.txt").read_bytes() == b"moved content"
    assert not (sides.dst / "unrelated.txt").exists()
    assert report.systemic_error is None  # type: ignore[attr-defined]
    assert report.errors_encountered == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_redoes_a_batch_whose_fsync_failed(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for name in ("a", "b", "c"):
        write(src / name, name.encode() * 10)
    dst.mkdir()
    with RootFs(src) as src_fs, FlakySyncRoot(dst, failures=1) as dst_fs:
        jobs = [
            CopyJob(src_fs, n.encode(), dst_fs, n.encode(), entry_of(src, n), None)
            for n in ("a", "b", "c")
        ]
        copier = FailingCopier({})
        recorder, report = await run(jobs, runner=TransferRunner(copier=copier))

    assert sorted(copier.calls) == [b"a", b"a", b"b", b"b", b"c", b"c"]
    assert [o.status for o in recorder.outcomes] == [OutcomeStatus.DONE] * 3
    assert report.files_copied == 3  # type: ignore[attr-defined]
    assert report.errors_encountered == 0  # type: ignore[attr-defined]
    for name in ("a", "b", "c"):
        assert (dst / name).read_bytes() == name.encode() * 10
    assert tmp_entries(dst) == []


@pytest.mark.anyio
async def test_runner_gives_up_on_a_batch_that_never_becomes_durable(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", b"a")
    write(dst / "old", b"keep while the disk fails")
    with RootFs(src) as src_fs, FlakySyncRoot(dst, failures=100) as dst_fs:
        jobs: list[Job] = [
            CopyJob(src_fs, b"a", dst_fs, b"a", entry_of(src, "a"), None),
            DeleteJob(dst_fs, b"old", entry_of(dst, "old")),
        ]
        recorder, report = await run(jobs, runner=TransferRunner(max_batch_attempts=2))

    assert recorder.of(b"a").status is OutcomeStatus.FAILED
    assert recorder.of(b"old").status is OutcomeStatus.CANCELLED
    assert not (dst / "a").exists()
    assert (dst / "old").exists()
    assert report.systemic_error is not None  # type: ignore[attr-defined]
    assert tmp_entries(dst) == []


@pytest.mark.anyio
async def test_runner_cancelled_leaves_no_partial_file_and_no_temp(
    sides: Sides,
) -> None:
    names = [f"f{i}" for i in range(6)]
    bodies = {n: os.urandom(2 << 20) for n in names}
    for name, body in bodies.items():
        write(sides.src / name, body)
    jobs = [sides.copy(n) for n in names]
    slow = RateLimiter(4 << 20, burst_bytes=1 << 20)
    recorder = Recorder()
    runner = TransferRunner(batch_max_age_s=0.05)

    with anyio.fail_after(20):
        with anyio.move_on_after(0.6) as scope:
            await runner.run(
                jobs,
                generation=1,
                trash=True,
                parallel=2,
                global_limiter=anyio.CapacityLimiter(4),
                rate_limiter=slow,
                on_batch_committed=recorder,
            )
    assert scope.cancelled_caught
    assert tmp_entries(sides.dst) == []
    landed = [n for n in names if (sides.dst / n).exists()]
    assert len(landed) < len(names)
    for name in landed:
        assert (sides.dst / name).read_bytes() == bodies[name]
    committed = {o.job.rel for o in recorder.outcomes if o.status is OutcomeStatus.DONE}  # type: ignore[union-attr]
    assert committed == {n.encode() for n in landed}


@pytest.mark.anyio
async def test_runner_group_commits_in_batches_of_at_most_max_files(
    sides: Sides,
) -> None:
    for i in range(7):
        write(sides.src / f"f{i}", b"x" * i)
    jobs = [sides.copy(f"f{i}") for i in range(7)]
    recorder, report = await run(
        jobs, runner=TransferRunner(batch_max_files=2, batch_max_age_s=30), parallel=1
    )
    sizes = [len(b) for b in recorder.batches]
    assert max(sizes) <= 2
    assert sum(sizes) == 7
    assert report.files_copied == 7  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_announces_each_copy_before_it_is_in_place(sides: Sides) -> None:
    # A daemon's watcher sees a rename within a step: the index must know the
    # copy's content id before then, under the inode the final name will have.
    write(sides.src / "new", b"new file")
    write(sides.src / "d" / "old", b"version 2")
    write(sides.dst / "d" / "old", b"version 1")
    jobs = [sides.mkdir("d"), sides.copy("new"), sides.copy("d/old")]
    at_announcement: dict[bytes, tuple[int, bytes | None]] = {}

    async def copied(copies: Sequence[tuple[CopyJob, TempFile]]) -> None:
        for job, temp in copies:
            final = sides.dst / os.fsdecode(job.dest_rel)
            now = final.read_bytes() if final.exists() else None
            at_announcement[job.dest_rel] = (temp.inode, now)

    await run(jobs, parallel=2, on_copied=copied)

    assert {rel: now for rel, (_, now) in at_announcement.items()} == {
        b"new": None,
        b"d/old": b"version 1",
    }
    for rel, (inode, _) in at_announcement.items():
        assert (sides.dst / os.fsdecode(rel)).lstat().st_ino == inode
    assert (sides.dst / "d" / "old").read_bytes() == b"version 2"


@pytest.mark.anyio
async def test_runner_counts_changed_source_and_target_as_skipped(sides: Sides) -> None:
    write(sides.src / "s", b"seen")
    write(sides.src / "t", b"ours")
    write(sides.dst / "t", b"theirs")
    jobs = [sides.copy("s"), sides.copy("t")]
    write(sides.src / "s", b"changed", mtime_ns=MTIME_NS + 1)
    write(sides.dst / "t", b"theirs, edited", mtime_ns=MTIME_NS + 1)

    recorder, report = await run(jobs)

    assert recorder.of(b"s").status is OutcomeStatus.SKIPPED_SOURCE_CHANGED
    assert recorder.of(b"t").status is OutcomeStatus.SKIPPED_TARGET_CHANGED
    assert report.files_skipped == 2  # type: ignore[attr-defined]
    assert report.errors_encountered == 0  # type: ignore[attr-defined]
    assert (sides.dst / "t").read_bytes() == b"theirs, edited"
    assert not (sides.dst / "s").exists()
    assert tmp_entries(sides.dst) == []


@pytest.mark.anyio
async def test_runner_file_over_directory_trashes_it_with_the_children_it_deletes(
    sides: Sides,
) -> None:
    write(sides.src / "x", b"now a file")
    write(sides.dst / "x" / "y", b"child")
    (sides.dst / "x" / "z").mkdir()
    jobs = [sides.copy("x"), sides.delete("x/y"), sides.delete("x/z")]

    recorder, report = await run(jobs)

    assert (sides.dst / "x").read_bytes() == b"now a file"
    child = recorder.of(b"x/y")
    assert child.status is OutcomeStatus.DONE
    assert child.trashed is not None
    assert child.trashed.trash_rel == b".conduitd/trash/1/x/y"
    assert (
        sides.dst / ".conduitd" / "trash" / "1" / "x" / "y"
    ).read_bytes() == b"child"
    assert report.files_deleted == 1  # type: ignore[attr-defined]
    assert report.files_copied == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_directory_over_file_trashes_the_file(sides: Sides) -> None:
    write(sides.src / "d" / "f", b"inside")
    write(sides.dst / "d", b"was a file")
    jobs = [sides.mkdir("d"), sides.copy("d/f")]

    recorder, report = await run(jobs)

    assert recorder.of(b"d").status is OutcomeStatus.DONE
    assert (sides.dst / "d" / "f").read_bytes() == b"inside"
    assert (sides.dst / ".conduitd" / "trash" / "1" / "d").read_bytes() == b"was a file"
    assert report.dirs_created == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_skips_copies_under_a_directory_it_could_not_create(
    sides: Sides,
) -> None:
    write(sides.src / "d" / "f", b"inside")
    jobs = [sides.mkdir("d"), sides.copy("d/f")]
    write(sides.dst / "d", b"appeared after resolution")

    recorder, report = await run(jobs)

    assert recorder.of(b"d").status is OutcomeStatus.SKIPPED_TARGET_CHANGED
    assert recorder.of(b"d/f").status is OutcomeStatus.SKIPPED_TARGET_CHANGED
    assert (sides.dst / "d").read_bytes() == b"appeared after resolution"
    assert report.errors_encountered == 0  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_never_deletes_under_an_unreadable_directory(sides: Sides) -> None:
    write(sides.dst / "u" / "f", b"cannot be seen")
    jobs: list[Job] = [
        DeleteJob(
            sides.dst_fs,
            b"u",
            dataclasses.replace(entry_of(sides.dst, "u"), unreadable=True),
        ),
        sides.delete("u/f"),
    ]
    recorder, report = await run(jobs)
    assert recorder.of(b"u").status is OutcomeStatus.FAILED
    assert recorder.of(b"u/f").status is OutcomeStatus.FAILED
    assert (sides.dst / "u" / "f").exists()
    assert report.errors_encountered == 2  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_runner_fills_a_read_only_directory_then_applies_its_mode(
    sides: Sides,
) -> None:
    write(sides.src / "ro" / "f", b"x")
    os.chmod(sides.src / "ro", 0o555)
    jobs = [sides.mkdir("ro"), sides.copy("ro/f")]
    await run(jobs)
    assert (sides.dst / "ro" / "f").read_bytes() == b"x"
    assert stat.S_IMODE(os.lstat(sides.dst / "ro").st_mode) == 0o555
    os.chmod(sides.src / "ro", 0o755)
    os.chmod(sides.dst / "ro", 0o755)


@pytest.mark.anyio
async def test_runner_copy_into_a_swapped_parent_fails_and_leaves_outside_alone(
    sides: Sides, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "a.txt", b"outside")
    write(sides.src / "d" / "a.txt", b"ours")
    (sides.dst / "d").symlink_to(outside)
    job = CopyJob(
        sides.src_fs,
        b"d/a.txt",
        sides.dst_fs,
        b"d/a.txt",
        entry_of(sides.src, "d/a.txt"),
        None,
    )
    recorder, _ = await run([job])
    assert recorder.of(b"d/a.txt").status is OutcomeStatus.FAILED
    assert (outside / "a.txt").read_bytes() == b"outside"
    assert sorted(os.listdir(outside)) == ["a.txt"]
    assert tmp_entries(sides.dst) == []


@pytest.mark.anyio
async def test_runner_with_fsync_durability(sides: Sides) -> None:
    from conduitd.jobs import Durability

    write(sides.src / "a", b"a")
    write(sides.dst / "gone", b"g")
    recorder, _report = await run(
        [sides.copy("a"), sides.delete("gone")],
        runner=TransferRunner(durability=Durability.FSYNC),
    )
    assert [o.status for o in recorder.outcomes] == [OutcomeStatus.DONE] * 2
    assert (sides.dst / "a").read_bytes() == b"a"


def test_clean_tmp_empties_leftovers_of_a_crash(tmp_path: Path) -> None:
    tmp = tmp_path / ".conduitd" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "c-leftover").write_bytes(b"partial")
    (tmp / "l-link").symlink_to("/etc")
    with RootFs(tmp_path) as fs:
        assert clean_tmp(fs) == 2
    assert os.listdir(tmp) == []
    assert os.path.exists("/etc")


@pytest.mark.anyio
async def test_runner_raises_what_on_batch_committed_raised(sides: Sides) -> None:
    class RowsFailed(Exception):
        pass

    async def failing(outcomes: Sequence[JobOutcome]) -> None:
        raise RowsFailed("database is locked")

    for name in ("a", "b"):
        write(sides.src / name, name.encode())
    jobs = [sides.copy("a"), sides.copy("b")]
    with anyio.fail_after(20), pytest.raises(RowsFailed):
        await TransferRunner().run(
            jobs,
            generation=1,
            trash=True,
            parallel=1,
            global_limiter=anyio.CapacityLimiter(2),
            on_batch_committed=failing,
        )
    assert tmp_entries(sides.dst) == []


@pytest.mark.anyio
async def test_runner_parent_swapped_for_outside_symlink_mid_run_escapes_nothing(
    sides: Sides, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "new.txt", b"outside new")
    write(outside / "old.txt", b"outside old")
    write(sides.src / "d" / "new.txt", b"ours")
    write(sides.dst / "d" / "old.txt", b"to delete")
    jobs: list[Job] = [sides.copy("d/new.txt"), sides.delete("d/old.txt")]
    before = tree_digest(outside)

    class SwappingCopier(FailingCopier):
        """Copies, then swaps the target's `d` for a symlink leading outside."""

        def __call__(self, *args: object, **kwargs: object) -> TempFile:
            temp = super().__call__(*args, **kwargs)  # type: ignore[arg-type]  # passes through
            moved = sides.dst / "d-moved-away"
            (sides.dst / "d").rename(moved)
            (sides.dst / "d").symlink_to(outside)
            return temp

    recorder, report = await run(jobs, runner=TransferRunner(copier=SwappingCopier({})))

    assert recorder.of(b"d/new.txt").status is OutcomeStatus.FAILED
    assert recorder.of(b"d/old.txt").status is OutcomeStatus.FAILED
    assert tree_digest(outside) == before
    assert (sides.dst / "d-moved-away" / "old.txt").read_bytes() == b"to delete"
    assert report.errors_encountered == 2  # type: ignore[attr-defined]
    assert tmp_entries(sides.dst) == []
