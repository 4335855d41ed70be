"""Forked workers of a one-shot `sync`: whole-tree scans give the same index
as a scan in the process itself, copies the same trees; a dead or killed
worker falls back to the process and leaves no temp file; the command line
leaves no worker behind; a daemon scans and copies small files in workers of
its own and ends them; a job waits only behind jobs of its own kind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.cli import conduitd_env, run_cli, write_config
from helpers.daemon import running_daemon
from helpers.mirror import listing, make_mirror, tmp_entries, write

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="workers are forked on Linux only"
)

# Runs in a fresh interpreter: workers are only forked while a process has a
# single thread, which pytest's own process does not promise.
PROBE = r"""
import json, os, signal, sys
from pathlib import Path

import anyio

from conduitd.index.indexer import Indexer
from conduitd.forked_workers import ForkedWorkers
from conduitd.logs import configure_logging
from conduitd.storage.library import open_library
from conduitd.storage.locations import ensure_location

root, state = Path(sys.argv[1]), Path(sys.argv[2])
if len(sys.argv) > 3:  # split the scans at the first level of that many dirs
    import conduitd.index.indexer

    conduitd.index.indexer.SCAN_SPLIT_DIRS = int(sys.argv[3])
configure_logging("warning")
workers = ForkedWorkers.fork(2)
assert workers is not None, "a single-threaded process could not fork workers"


def mutate(step):
    if step == 1:
        (root / "docs" / "a.txt").write_bytes(b"rewritten, longer")
        (root / "gone.txt").unlink()
        (root / "new" / "deep").mkdir(parents=True)
        (root / "new" / "deep" / "n.txt").write_bytes(b"n")
        os.symlink("docs", root / "dirlink")
    if step == 2:
        os.rename(root / "docs", root / "papers")
        os.chmod(root / "keep.txt", 0o600)


async def index_of(library, location_id):
    rows = await library.db.fetch_all(
        "SELECT relative_path, kind, size, mtime_ns, ctime_ns, inode, mode,"
        " content_id, symlink_target, unreadable, listing_digest FROM entry"
        " WHERE location_id = ? ORDER BY relative_path",
        (location_id,),
    )
    return [[v.hex() if isinstance(v, bytes) else v for v in r] for r in rows]


async def main():
    libraries, locations, indexers = [], [], []
    for name, pool in (("forked", workers), ("here", None)):
        library = await open_library(state / name)
        async with library.db.transaction() as tx:
            record, _ = await ensure_location(tx, str(library.device_id), root)
        libraries.append(library)
        locations.append(record.id)
        indexers.append(Indexer.for_library(library, workers=pool))
    rounds = []
    for step in range(4):
        mutate(step)
        if step == 3:  # a worker that died: the scan runs here instead
            os.kill(workers.pids[0], signal.SIGKILL)
            os.kill(workers.pids[1], signal.SIGKILL)
        for indexer, location_id in zip(indexers, locations):
            await indexer.scan(location_id)
        forked, here = [
            await index_of(lib, loc) for lib, loc in zip(libraries, locations)
        ]
        rounds.append({"equal": forked == here, "rows": len(here)})
    for library in libraries:
        await library.close()
    return rounds


try:
    rounds = anyio.run(main)
    print(json.dumps({"rounds": rounds, "served": workers.served["scan"]}))
finally:
    workers.close()
"""


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`script` in a fresh interpreter that imports this checkout; must exit 0."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=conduitd_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("split_at", [None, 2])
def test_a_worker_scan_writes_the_index_a_scan_here_writes(
    tmp_path: Path, split_at: int | None
) -> None:
    """Whole and split (top level in one job, each directory below in a job
    of its own, in whichever worker is free)."""
    root = tmp_path / "root"
    write(root / "docs" / "a.txt", b"alpha")
    write(root / "docs" / "b.txt", b"beta")
    write(root / "gone.txt", b"soon gone")
    write(root / "keep.txt", b"kept")
    (root / "empty").mkdir()
    split = [] if split_at is None else [str(split_at)]
    result = run_python(PROBE, str(root), str(tmp_path / "state"), *split)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["equal"] for r in found["rounds"]] == [True] * 4, found
    assert all(r["rows"] > 5 for r in found["rounds"])
    # Rounds 0-2 went through the workers; round 3 found both dead. Split:
    # the top level, then docs/ and empty/ (0), docs/, empty/ and new/ (1),
    # papers/, empty/ and new/ (2), each in a job of its own.
    assert found["served"] == (3 if split_at is None else 3 + 2 + 3 + 3)
    assert "worker_failed" in result.stderr


def _pids_where(test: Callable[[Path], bool]) -> list[int]:
    """Processes whose /proc entry passes `test` (gone meanwhile: skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if test(entry):
                found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)


def _processes_mentioning(text: str) -> list[int]:
    return _pids_where(lambda entry: text.encode() in (entry / "cmdline").read_bytes())


# `conduitd` itself, with ForkedWorkers.close recording what the workers did.
RECORDING_CLI = r"""
import json, sys
from conduitd.forked_workers import ForkedWorkers

real_close = ForkedWorkers.close
record = sys.argv.pop(1)


def close(self):
    with open(record, "w") as out:
        json.dump({"served": self.served, "pids": self.pids}, out)
    real_close(self)


ForkedWorkers.close = close
from conduitd.cli import main
main()
"""


@pytest.mark.parametrize("progress", [False, True])
def test_the_command_line_scans_and_copies_in_workers_and_leaves_none_behind(
    tmp_path: Path, progress: bool
) -> None:
    mirror = make_mirror(tmp_path)
    for n in range(300):  # several copy chunks
        write(mirror.source / f"d{n % 7}" / f"f{n}.txt", b"%d" % n * (n + 1))
    os.symlink("d1/f1.txt", mirror.source / "link")
    write(mirror.source / "big.bin", os.urandom(9 << 20))  # a chunk of its own
    record = tmp_path / "workers.json"
    args = ["--config", str(mirror.config), "sync", "m", "--json"]
    result = run_python(
        RECORDING_CLI, str(record), *args, *(["--progress"] if progress else [])
    )
    assert json.loads(result.stdout)["files_copied"] == 302
    assert json.loads(result.stdout)["verification_status"] == "verified"
    assert listing(mirror.target) == listing(mirror.source)
    assert tmp_entries(mirror.target) == []
    workers = json.loads(record.read_text())
    assert workers["served"]["scan"] == 2  # both sides' scans
    assert workers["served"]["copy"] >= 3
    alive = [pid for pid in workers["pids"] if Path(f"/proc/{pid}").exists()]
    assert alive == []
    assert _processes_mentioning(str(mirror.config)) == []


# Copies in a fresh interpreter too (workers are forked single-threaded).
COPY_PROBE = r"""
import json, os, signal, sys
from pathlib import Path

import anyio
import blake3

from conduitd.forked_workers import ForkedWorkers
from conduitd.jobs.copy_workers import copy_in_worker
from conduitd.jobs.rootfs import RootFs
from conduitd.logs import configure_logging
from conduitd.storage.models import EntryKind, EntryRow

source, target = Path(sys.argv[1]), Path(sys.argv[2])
configure_logging("warning")
workers = ForkedWorkers.fork(2)
assert workers is not None, "a single-threaded process could not fork workers"
tmp = target / ".conduitd" / "tmp"


def row(name, content_id=None):
    st = os.lstat(source / name)
    if content_id is None:
        content_id = blake3.blake3((source / name).read_bytes()).hexdigest()
    return (name.encode(), EntryRow(name.encode(), EntryKind.FILE, st.st_size,
            st.st_mtime_ns, st.st_mode, content_id, inode=st.st_ino))


small = [row(f"f{n}.txt") for n in range(20)]
wrong = row("wrong.txt", "0" * 64)  # the copy hashes to something else
huge = row("sparse.bin", "0" * 64)  # 4 GiB of hole: seconds of hashing zeros


async def main():
    found = {}
    with RootFs(source) as src, RootFs(target) as dst:
        async def copy(files):
            return await copy_in_worker(
                workers, src, dst, files, fsync=False,
                limiter=anyio.CapacityLimiter(4))

        temps = await copy(small + [wrong])
        found["copied"] = [
            t is not None
            and (target / os.fsdecode(t.tmp_rel)).read_bytes()
            == (source / os.fsdecode(rel)).read_bytes()
            for (rel, _), t in zip(small, temps[:-1])]
        found["wrong"] = temps[-1]
        found["temps_after_copy"] = len(os.listdir(tmp))
        dst.clean_tmp()

        # Cancelled while a worker fills the temp of the 4 GiB file.
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(copy, small + [huge])
                with anyio.fail_after(60):
                    while len(os.listdir(tmp)) < len(small) + 1:
                        await anyio.sleep(0.002)
                scope.cancel()
        found["temps_after_cancel"] = os.listdir(tmp)

        # The other worker still copies; then both die and nothing is made.
        found["after_cancel"] = (await copy(small[:3])) is not None
        dst.clean_tmp()
        for pid in workers.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # the one killed at the cancellation
        found["dead"] = [await copy(small[:3]) for _ in range(3)]
        found["temps_after_death"] = os.listdir(tmp)
    return found


try:
    print(json.dumps(anyio.run(main)))
finally:
    workers.close()
"""


def test_a_worker_copies_and_leaves_no_temp_when_killed_or_dead(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    for n in range(20):
        write(source / f"f{n}.txt", os.urandom(n * 1000))
    write(source / "wrong.txt", b"not what the index says")
    write(source / "sparse.bin", b"")
    os.truncate(source / "sparse.bin", 4 << 30)
    target.mkdir()
    result = run_python(COPY_PROBE, str(source), str(target))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["copied"] == [True] * 20
    assert found["wrong"] is None  # left to the parent, which reports it
    assert found["temps_after_copy"] == 20  # no temp of the wrong copy
    assert found["temps_after_cancel"] == []
    assert found["after_cancel"] is True
    assert found["dead"] == [None, None, None]
    assert found["temps_after_death"] == []


def _children(pid: int) -> list[int]:
    def parent_is(entry: Path) -> bool:
        fields = (entry / "stat").read_text().rpartition(")")[2].split()
        return int(fields[1]) == pid

    return _pids_where(parent_is)


def _io_count(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _bytes_written(pid: int) -> int:
    """What the process wrote with write(2) and friends (pipes included)."""
    return _io_count(pid, "wchar")


def _bytes_read(pid: int) -> int:
    """What the process read with read(2) and friends (pipes included)."""
    return _io_count(pid, "rchar")


def test_a_daemon_scans_and_copies_small_files_in_its_workers_and_ends_them(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    for n in range(200):
        write(source / f"d{n % 5}" / f"f{n}", os.urandom(10_000))
    write(source / "big.bin", os.urandom(9 << 20))
    target.mkdir()
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [{"name": "m", "source": str(source), "target": str(target)}],
    )
    with running_daemon(config, tmp_path) as daemon:
        workers = _children(daemon.pid)
        assert len(workers) == 2
        # The first scans (before ready) hashed the source in the workers.
        assert sum(map(_bytes_read, workers)) >= 200 * 10_000 + (9 << 20)
        before = sum(map(_bytes_written, workers))
        result = run_cli("sync", "m", "--json", config=config)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["files_copied"] == 201
        written = sum(map(_bytes_written, workers)) - before
        # The small files went through the workers, the big one did not.
        assert 200 * 10_000 <= written < 9 << 20
        assert listing(target) == listing(source)

        # The daemon's signals are the daemon's: a reload leaves them be.
        daemon.signal(signal.SIGHUP)
        daemon.wait_logged("config_reloaded")
        assert _children(daemon.pid) == workers
        # A dead worker is not replaced; runs go on without it.
        os.kill(workers[0], signal.SIGKILL)
        for n in range(50):
            write(source / "later" / f"f{n}", os.urandom(1000))
        result = run_cli("sync", "m", "--json", config=config)
        assert result.returncode == 0, result.stderr
        done = json.loads(result.stdout)
        assert (done["files_copied"], done["verification_status"]) == (50, "verified")
        assert listing(target) == listing(source)
        assert tmp_entries(target) == []
    assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []


# Jobs of two kinds in a fresh interpreter (the classes live in its __main__,
# which the forked workers share).
WAIT_PROBE = r"""
import json, os, sys, time
from pathlib import Path

import anyio

from conduitd.forked_workers import ForkedWorkers, WorkerJob
from conduitd.logs import configure_logging

work = Path(sys.argv[1])
configure_logging("warning")


class Held(WorkerJob):
    def __init__(self, n):
        self.n = n

    def run(self):
        (work / f"started-{self.n}").touch()
        while not (work / "release").exists():
            time.sleep(0.005)
        return self.n


class Other(WorkerJob):
    def run(self):
        return -1


workers = ForkedWorkers.fork(2)
assert workers is not None


async def main():
    found = {}
    async with anyio.create_task_group() as tg:
        for n in (1, 2):
            tg.start_soon(workers.run, Held(n), int)
        with anyio.fail_after(60):
            while not all((work / f"started-{n}").exists() for n in (1, 2)):
                await anyio.sleep(0.005)
        # Both workers hold jobs of another kind: no waiting behind them.
        found["other"] = await workers.run(Other(), int, wait=True)

        async def third():
            found["third"] = await workers.run(Held(3), int, wait=True)

        tg.start_soon(third)
        await anyio.sleep(0.2)
        found["third_before_release"] = "third" in found
        (work / "release").touch()
    found["served"] = dict(workers.served)
    return found


try:
    print(json.dumps(anyio.run(main)))
finally:
    workers.close()
"""


def test_a_job_waits_only_behind_jobs_of_its_own_kind(tmp_path: Path) -> None:
    result = run_python(WAIT_PROBE, str(tmp_path))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["other"] is None  # not queued behind the held jobs
    assert found["third_before_release"] is False
    assert found["third"] == 3  # waited for a worker, then ran there
    assert found["served"] == {"Held": 3}
