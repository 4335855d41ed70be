"""Faults that need the system's help (issue 8, point 4): a full disk and a
read-only mount inside a user+mount namespace (`unshare -Urm`), a huge sparse
file watched for memory, and permission denied as `nobody`.

Each test skips, with the reason, where the machine does not allow it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import conduitd_env
from helpers.mirror import Mirror, listing, make_mirror, write
from helpers.unprivileged import (
    drop_privileges_prefix,
    give_to_unprivileged,
    make_traversable,
    run_conduitd_unprivileged,
)

# Runs inside the namespace after the mount: sync, then report what is there.
_REPORT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    config, name, target = sys.argv[1:4]
    done = subprocess.run(
        [sys.executable, "-m", "conduitd", "--config", config, "sync", name,
         "--json"], capture_output=True, text=True)
    files = {}
    for dirpath, dirnames, filenames in os.walk(target):
        for f in filenames:
            p = os.path.join(dirpath, f)
            files[os.path.relpath(p, target)] = os.lstat(p).st_size
    print(json.dumps({"code": done.returncode, "stdout": done.stdout,
                      "stderr": done.stderr[-3000:], "files": files}))
    """
)


def namespaced(setup: str, m: Mirror) -> dict[str, Any]:
    """Run `setup` (shell) in a new user+mount namespace, then sync and report."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(
        ["unshare", "-Urm", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare -Urm not permitted: {probe.stderr!r}")
    script = f'{setup} && exec "$0" -c "$1" "$2" "$3" "$4"'
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-ec", script, sys.executable, _REPORT,
         str(m.config), m.name, str(m.target)],
        capture_output=True, text=True, env=conduitd_env(), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_disk_full_counts_errors_leaves_no_partial_file_and_cancels_deletes(
    tmp_path: Path,
) -> None:
    m = make_mirror(tmp_path, create_target=True, max_delete_percent=100)
    for i in range(40):
        write(m.source / f"f{i:02d}.txt", b"data" * 100)
    # Out of inodes is ENOSPC too, and passes the free-space guard (bytes).
    setup = (
        f"mount -t tmpfs -o size=8m,nr_inodes=24 tmpfs {m.target}"
        f" && echo precious > {m.target}/only-here.txt"
    )

    report = namespaced(setup, m)

    document = json.loads(report["stdout"])
    assert report["code"] == 1, report
    assert document["errors_encountered"] >= 1
    assert document["files_deleted"] == 0  # ENOSPC cancels every delete
    files = report["files"]
    assert files["only-here.txt"] == len(b"precious\n")
    for rel, size in files.items():  # never a partial file under a final name
        assert rel == "only-here.txt" or size in (400, 154), (rel, size)
    assert 0 < sum(rel.startswith("f") for rel in files) < 40
    assert not [f for f in files if f.startswith(".conduitd/tmp/")]


def test_read_only_target_mount_fails_per_path_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    m = make_mirror(tmp_path, create_target=True, max_delete_percent=100)
    write(m.source / "a.txt", b"a")
    write(m.target / "only-here.txt", b"precious")
    setup = f"mount --bind {m.target} {m.target} && mount -o remount,ro,bind {m.target}"

    report = namespaced(setup, m)

    assert report["code"] in (1, 3), report  # errors counted, or refused
    assert report["files"] == {"only-here.txt": len(b"precious")}
    assert "Traceback" not in report["stderr"]


@pytest.mark.slow
def test_huge_sparse_file_keeps_its_holes_in_constant_memory(tmp_path: Path) -> None:
    m = make_mirror(tmp_path)
    size = 1 << 28
    sparse = m.source / "sparse.img"
    with open(sparse, "wb") as handle:
        for offset in (0, size // 2, size - 4096):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    argv = [sys.executable, "-m", "conduitd", "--config", str(m.config)]
    process = subprocess.Popen(
        [*argv, "sync", m.name, "--json"],
        env=conduitd_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.stdout.close()
    process.returncode = os.waitstatus_to_exitcode(status)

    assert process.returncode == 0, out
    copied = m.target / "sparse.img"
    assert copied.stat().st_size == size
    assert copied.read_bytes()[:4096] == sparse.read_bytes()[:4096]
    assert copied.stat().st_blocks * 512 < 8 * 1024 * 1024  # holes kept
    assert usage.ru_maxrss < 192 * 1024  # KiB: below the file's 256 MiB


# ------------------------------------------------------- permission denied


@pytest.fixture
def base() -> Iterator[Path]:
    drop_privileges_prefix()  # skips with the reason when it cannot work
    top = Path(tempfile.mkdtemp(prefix="conduitd-faults-"))
    try:
        make_traversable(top)
        yield top
    finally:
        for dirpath, dirnames, _files in os.walk(top):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755, follow_symlinks=False)
        shutil.rmtree(top)


def sync_as_nobody(m: Mirror) -> tuple[int, Any, str]:
    done = run_conduitd_unprivileged(
        ["--config", str(m.config), "sync", m.name, "--json"]
    )
    return done.returncode, json.loads(done.stdout), done.stderr


@pytest.mark.parametrize("mode", ["mirror", "bidirectional"])
def test_unreadable_directory_and_file_never_cause_deletions(
    base: Path, mode: str
) -> None:
    m = make_mirror(base, create_target=True, mode=mode, max_delete_percent=100)
    m.state_dir.mkdir(mode=0o700)
    for rel in ("d/one.txt", "d/two.txt", "secret.txt", "open.txt"):
        write(m.source / rel, rel.encode())
    give_to_unprivileged(m.state_dir, m.source, m.target)
    code, _doc, stderr = sync_as_nobody(m)
    assert code == 0, stderr
    before = listing(m.target), listing(m.source)
    # The side other runs would delete from: the target in a mirror run reads
    # the source; a two-way run reads both. Lock the side that is read.
    locked = m.source if mode == "mirror" else m.target
    os.chmod(locked / "d", 0)
    os.chmod(locked / "secret.txt", 0)
    try:
        code, document, stderr = sync_as_nobody(m)
    finally:
        os.chmod(locked / "d", 0o755)
        os.chmod(locked / "secret.txt", 0o644)

    assert code == 1, (document, stderr)  # counted, not silent
    assert document["files_deleted"] == 0
    assert document["errors_encountered"] >= 2
    assert (listing(m.target), listing(m.source)) == before
