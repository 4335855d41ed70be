"""Whole-tree scans in forked workers (one-shot `sync`): the same index as a
scan in the process itself, a fallback when a worker dies, and no worker
left behind by the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import conduitd_env
from helpers.mirror import make_mirror, write

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="scan workers are forked on Linux only"
)

# Runs in a fresh interpreter: workers are only forked while a process has a
# single thread, which pytest's own process does not promise.
PROBE = r"""
import json, os, signal, sys
from pathlib import Path

import anyio

from conduitd.index.indexer import Indexer
from conduitd.index.scan_workers import ScanWorkers
from conduitd.logs import configure_logging
from conduitd.storage.library import open_library
from conduitd.storage.locations import ensure_location

root, state = Path(sys.argv[1]), Path(sys.argv[2])
configure_logging("warning")
workers = ScanWorkers.fork(2)
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
        indexers.append(Indexer.for_library(library, scan_workers=pool))
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
    print(json.dumps({"rounds": rounds, "served": workers.served}))
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


def test_a_worker_scan_writes_the_index_a_scan_here_writes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "docs" / "a.txt", b"alpha")
    write(root / "docs" / "b.txt", b"beta")
    write(root / "gone.txt", b"soon gone")
    write(root / "keep.txt", b"kept")
    (root / "empty").mkdir()
    result = run_python(PROBE, str(root), str(tmp_path / "state"))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["equal"] for r in found["rounds"]] == [True] * 4, found
    assert all(r["rows"] > 5 for r in found["rounds"])
    # Rounds 0-2 went through the workers; round 3 found both dead.
    assert found["served"] == 3
    assert "scan_worker_failed" in result.stderr


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in command:
            found.append(int(entry.name))
    return found


# `conduitd` itself, with ScanWorkers.close recording what the workers did.
RECORDING_CLI = r"""
import json, sys
from conduitd.index.scan_workers import ScanWorkers

real_close = ScanWorkers.close
record = sys.argv.pop(1)


def close(self):
    with open(record, "w") as out:
        json.dump({"served": self.served, "pids": self.pids}, out)
    real_close(self)


ScanWorkers.close = close
from conduitd.cli import main
main()
"""


@pytest.mark.parametrize("progress", [False, True])
def test_the_command_line_scans_in_workers_and_leaves_none_behind(
    tmp_path: Path, progress: bool
) -> None:
    mirror = make_mirror(tmp_path)
    write(mirror.source / "a.txt", b"a")
    record = tmp_path / "workers.json"
    args = ["--config", str(mirror.config), "sync", "m", "--json"]
    result = run_python(
        RECORDING_CLI, str(record), *args, *(["--progress"] if progress else [])
    )
    assert json.loads(result.stdout)["files_copied"] == 1
    assert (mirror.target / "a.txt").read_bytes() == b"a"
    workers = json.loads(record.read_text())
    assert workers["served"] == 2  # both sides' scans
    alive = [pid for pid in workers["pids"] if Path(f"/proc/{pid}").exists()]
    assert alive == []
    assert _processes_mentioning(str(mirror.config)) == []
