"""The group commit's order, proven on a real run's system calls (issue 8).

Under `strace -f -yy`, a real one-shot sync (syncfs durability) and a
TransferRunner in fsync mode are traced, and `syscall_trace.check_order`
checks, file by file: data durable before its rename, its directory durable
after the rename and before the next write to `library.db-wal`.

On an fsync/syncfs error the batch is copied again from scratch, never
fsynced again and trusted: a syncfs failed by strace's fault injection must
leave none of the temps written before it under a final name. Without
strace, `CONDUITD_FAIL_AT=commit.sync_temps` injects the same error.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from crash_ledger import CrashLedger
from crash_run import child_env, conduitd_command, document, explain, sync
from crash_world import Violation, scan_tree, temp_names
from syscall_trace import TRACED, OrderReport, check_order, parse, under

from helpers.cli import write_config

pytestmark = pytest.mark.crash

STRACE = shutil.which("strace")


def _why_no_strace() -> str | None:
    """None when strace can trace a child here, else why not (the skip reason)."""
    if STRACE is None:
        return (
            "strace is not installed (apt-get install strace): the syscall order "
            "cannot be traced; the CONDUITD_FAIL_AT tests below still run"
        )
    probe = subprocess.run(
        [STRACE, "-f", "-o", os.devnull, "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"strace cannot trace here (no ptrace?): {probe.stderr.strip()[:200]}"
    return None


NO_STRACE = _why_no_strace()
needs_strace = pytest.mark.skipif(NO_STRACE is not None, reason=NO_STRACE or "")


def strace(
    log: Path, command: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    assert STRACE is not None
    return subprocess.run(
        [
            STRACE,
            "-f",
            "-qq",
            "-yy",
            "-s",
            "0",
            "-o",
            str(log),
            "-e",
            f"trace={TRACED}",
            *extra,
            *command,
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def library_wal(state: Path) -> str:
    [db] = glob.glob(str(state / "libraries" / "*" / "library.db"))
    return db + "-wal"


def record(ledger: CrashLedger, hook: str, report: OrderReport, trial: str) -> None:
    ledger.record(
        hook,
        violations=[Violation("order", p) for p in report.problems],
        trial=trial,
    )
    ledger.notes.append(
        f"{hook}: {report.files} files put in place, {report.trashed} versions "
        f"trashed, {len(report.problems)} out of order ({trial})"
    )


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            {
                "name": "m",
                "source": str(src),
                "target": str(dst),
                "max_delete_percent": 100,
            }
        ],
    )
    return src, dst, config


@needs_strace
def test_one_shot_sync_makes_data_then_directories_durable_before_rows(
    mirror: tuple[Path, Path, Path], tmp_path: Path, crash_ledger: CrashLedger
) -> None:
    src, dst, config = mirror
    make_tree(
        src,
        {
            "top.txt": b"top",
            "big.bin": os.urandom(3 << 20),
            "a/one.txt": b"one",
            "a/b/two.txt": b"two",
            "a/b/c/three.txt": b"three",
            "gone.txt": b"deleted at the second run",
            "kind/inner.txt": b"a directory that becomes a file",
        },
    )
    (src / "link").symlink_to("top.txt")
    (dst / "target-only.txt").write_bytes(b"deleted to trash")
    first = strace(tmp_path / "first.trace", conduitd_command(config, "sync", "m"))
    assert first.returncode == 0, explain(first)
    wal = library_wal(tmp_path / "state")
    report = check_order((tmp_path / "first.trace").read_text(), str(dst), wal)
    assert report.files == 8
    assert not report.problems, report.problems
    record(crash_ledger, "order: one-shot (syncfs)", report, "first sync")

    (src / "top.txt").write_bytes(b"overwritten: the old version to trash")
    (src / "a" / "b" / "two.txt").write_bytes(b"two, again")
    (src / "gone.txt").unlink()
    shutil.rmtree(src / "kind")
    (src / "kind").write_bytes(b"now a file")
    second = strace(tmp_path / "second.trace", conduitd_command(config, "sync", "m"))
    assert second.returncode == 0, explain(second)
    report = check_order((tmp_path / "second.trace").read_text(), str(dst), wal)
    assert report.files == 3
    assert report.trashed >= 4  # 2 overwritten, 1 deleted, 1 directory
    assert not report.problems, report.problems
    record(crash_ledger, "order: one-shot (syncfs)", report, "changes")


FSYNC_RUN = textwrap.dedent(
    """
    import os, sqlite3, stat, sys
    import anyio, blake3
    from conduitd.jobs import CopyJob, DeleteJob, Durability, RootFs, TransferRunner
    from conduitd.storage.models import EntryKind, EntryRow

    src, dst, db = sys.argv[1:4]

    def entry(root, rel):
        path = os.path.join(root, rel)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            kind, cid, target = EntryKind.SYMLINK, None, os.readlink(path.encode())
        else:
            with open(path, "rb") as f:
                cid = blake3.blake3(f.read()).hexdigest()
            kind, target = EntryKind.FILE, None
        return EntryRow(rel.encode(), kind, st.st_size, st.st_mtime_ns,
                        st.st_mode, cid, target, inode=st.st_ino)

    rows = sqlite3.connect(db)
    rows.execute("PRAGMA journal_mode=WAL")
    rows.execute("CREATE TABLE IF NOT EXISTS synced (path TEXT, status TEXT)")

    async def committed(outcomes):
        for o in outcomes:
            rows.execute("INSERT INTO synced VALUES (?, ?)", (str(o.job), o.status))
        rows.commit()

    async def main():
        with RootFs(src) as s, RootFs(dst) as d:
            jobs = [
                CopyJob(s, rel.encode(), d, rel.encode(), entry(src, rel),
                        entry(dst, rel) if os.path.lexists(os.path.join(dst, rel))
                        else None)
                for rel in ("one.txt", "sub/two.txt", "sub/deep/three.txt",
                            "link", "old.txt")
            ]
            jobs.append(DeleteJob(d, b"stale.txt", entry(dst, "stale.txt")))
            runner = TransferRunner(durability=Durability.FSYNC)
            report = await runner.run(
                jobs, generation=1, trash=True, parallel=3,
                global_limiter=anyio.CapacityLimiter(4), on_batch_committed=committed)
            assert report.errors_encountered == 0, report

    anyio.run(main)
    """
)


@needs_strace
def test_fsync_mode_fsyncs_each_temp_and_directory_in_order(
    tmp_path: Path, crash_ledger: CrashLedger
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(
        src,
        {
            "one.txt": b"1",
            "sub/two.txt": b"2",
            "sub/deep/three.txt": b"3",
            "old.txt": b"the new version",
        },
    )
    (src / "link").symlink_to("one.txt")
    make_tree(dst, {"sub/deep/.keep": b"", "old.txt": b"old", "stale.txt": b"s"})
    db = tmp_path / "library.db"
    run = strace(
        tmp_path / "fsync.trace",
        [sys.executable, "-c", FSYNC_RUN, str(src), str(dst), str(db)],
    )
    assert run.returncode == 0, explain(run)
    report = check_order((tmp_path / "fsync.trace").read_text(), str(dst), f"{db}-wal")
    calls = parse((tmp_path / "fsync.trace").read_text())
    assert not any(c.name == "syncfs" for c in calls)  # fsync mode: none
    assert report.files == 5
    assert report.trashed == 2  # old.txt linked, stale.txt moved
    assert not report.problems, report.problems
    record(crash_ledger, "order: runner (fsync)", report, "fsync mode")


@needs_strace
def test_syncfs_error_redoes_the_batch_from_scratch_under_strace(
    mirror: tuple[Path, Path, Path], tmp_path: Path, crash_ledger: CrashLedger
) -> None:
    src, dst, config = mirror
    bodies = {f"f{i}.bin": os.urandom(50_000 + i) for i in range(6)}
    make_tree(src, bodies)  # flat: the first syncfs is the temps' own
    log = tmp_path / "inject.trace"
    run = strace(
        log,
        conduitd_command(config, "sync", "m", "--json"),
        "-e",
        "inject=syncfs:error=EIO:when=1",
    )
    assert run.returncode == 0, explain(run)
    assert document(run)["files_copied"] == 6
    assert document(run)["errors_encountered"] == 0
    calls = parse(log.read_text())
    [failed] = [c for c in calls if c.name == "syncfs" and c.injected]
    tmp = f"{dst}/.conduitd/tmp/"
    before = {
        c.result_path()
        for c in calls
        if c.name == "openat"
        and c.result_path().startswith(tmp)
        and c.end < failed.start
    }
    renamed = [
        c.two_paths()[0]
        for c in calls
        if c.ok and c.name.startswith("rename") and c.two_paths()[0].startswith(tmp)
    ]
    assert len(before) == 6  # the whole batch was written when syncfs failed
    assert len(renamed) == 6
    assert not before & set(renamed), "a temp written before the error was trusted"
    report = check_order(log.read_text(), str(dst), library_wal(tmp_path / "state"))
    assert report.files == 6
    assert not report.problems, report.problems
    for rel, body in bodies.items():
        assert (dst / rel).read_bytes() == body
    assert temp_names(dst) == []
    record(crash_ledger, "fsync error (strace inject)", report, "EIO on syncfs")


def test_fsync_error_redoes_the_batch_from_scratch(
    mirror: tuple[Path, Path, Path], crash_ledger: CrashLedger
) -> None:
    src, dst, config = mirror
    bodies = {f"d/f{i}.bin": os.urandom(10_000 + i) for i in range(5)}
    make_tree(src, bodies)
    (dst / "target-only.txt").write_bytes(b"deleted once the copies landed")
    result = sync(config, "m", fail_at="commit.sync_temps:1")
    assert result.returncode == 0, explain(result)
    doc = document(result)
    assert (doc["files_copied"], doc["files_deleted"]) == (5, 1)
    assert doc["errors_encountered"] == 0
    assert '"batch_not_durable"' in result.stderr
    for rel, body in bodies.items():
        assert (dst / rel).read_bytes() == body
    assert temp_names(dst) == []
    crash_ledger.record("fsync error (seam)", violations=[], trial="fails once")


def test_a_batch_that_never_becomes_durable_is_never_put_in_place(
    mirror: tuple[Path, Path, Path], crash_ledger: CrashLedger
) -> None:
    src, dst, config = mirror
    make_tree(src, {"a.txt": b"a", "b/c.txt": b"c"})
    (dst / "target-only.txt").write_bytes(b"kept: deletes wait for the copies")
    failing = sync(config, "m", fail_at="commit.sync_temps:*")
    assert failing.returncode == 1, explain(failing)
    doc = document(failing)
    assert doc["files_copied"] == 0
    assert doc["files_deleted"] == 0
    assert doc["errors_encountered"] >= 2
    files = {r for r, n in scan_tree(dst).items() if n.kind != "d"}
    assert files == {"target-only.txt"}
    assert temp_names(dst) == []
    healed = sync(config, "m")
    assert healed.returncode == 0, explain(healed)
    files = {r for r, n in scan_tree(dst).items() if n.kind != "d"}
    assert files == {"a.txt", "b/c.txt"}
    assert under(str(dst / ".conduitd" / "trash"), str(dst))
    crash_ledger.record("fsync error (seam)", violations=[], trial="fails always")
