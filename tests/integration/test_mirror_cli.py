"""`conduitd sync` in mirror mode, through the real command line.

The contract people script against (issue 5, DESIGN.md Interfaces): exit
codes, one JSON document on stdout, `--dry-run` writing nothing anywhere, the
lock, the safety checks, a lost index, history and crash recovery. Each run
is a subprocess (`sync_cli`), except in scenarios of many runs, which use the
same command line in-process (`sync_here`) to stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conduitd.storage.lockfile import StateLock
from helpers.cli import conduitd_env, run_cli, write_config
from helpers.mirror import (
    CliRun,
    Mirror,
    data_snapshot,
    full_snapshot,
    generation_rows,
    library_db,
    listing,
    make_mirror,
    sync_cli,
    sync_here,
    tmp_entries,
    trash_files,
    trash_rows,
    write,
)

GENERATION_KEYS = [
    "conduit",
    "generation",
    "files_copied",
    "metadata_updated",
    "files_deleted",
    "conflicts_resolved",
    "conflicts_pending",
    "files_skipped",
    "bytes_transferred",
    "errors_encountered",
    "verification_status",
    "started_at",
    "completed_at",
]


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    m = make_mirror(tmp_path)
    write(m.source / "a.txt", b"alpha")
    write(m.source / "d" / "b.txt", b"bravo")
    (m.source / "d" / "empty").mkdir()
    (m.source / "link").symlink_to("a.txt")
    return m


def assert_error(run: CliRun, code: int, kind: str) -> dict[str, str]:
    """One `{"error": {"kind", "message"}}` document, the exit code, no traceback."""
    assert run.returncode == code, (run.stdout, run.stderr)
    document = run.document
    assert list(document) == ["error"]
    assert sorted(document["error"]) == ["kind", "message"]
    assert document["error"]["kind"] == kind
    assert "Traceback" not in run.stderr
    error: dict[str, str] = document["error"]
    return error


def marker_of(root: Path) -> dict[str, str]:
    marker: dict[str, str] = json.loads((root / ".conduitd" / "marker").read_text())
    return marker


# ------------------------------------------------------------ output, codes


def test_mirror_sync_json_prints_one_generation_document_and_exits_0(
    mirror: Mirror,
) -> None:
    run = sync_cli(mirror)

    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1  # exactly one JSON document
    document = run.document
    assert list(document) == GENERATION_KEYS
    assert document["conduit"] == "m"
    assert document["generation"] == 1
    assert document["files_copied"] == 3
    assert document["bytes_transferred"] == 10
    assert document["files_deleted"] == 0
    assert document["errors_encountered"] == 0
    assert document["verification_status"] == "verified"
    assert document["started_at"].endswith("Z")
    assert document["completed_at"].endswith("Z")
    assert listing(mirror.target) == listing(mirror.source)
    assert tmp_entries(mirror.target) == []

    history = json.loads(run_cli("history", "m", "--json", config=mirror.config).stdout)
    assert [g["generation"] for g in history] == [1]


def test_mirror_sync_without_json_prints_a_summary_and_progress_works(
    mirror: Mirror,
) -> None:
    run = sync_cli(mirror, "--progress", json_output=False)

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
    assert listing(mirror.target) == listing(mirror.source)


def test_mirror_sync_of_an_unknown_conduit_is_a_usage_error(mirror: Mirror) -> None:
    run = run_cli("sync", "nope", "--json", config=mirror.config)

    assert run.returncode == 2
    assert json.loads(run.stdout)["error"]["kind"] == "usage"
    assert not mirror.target.exists()


def test_mirror_sync_with_a_broken_config_exits_2_with_a_config_error(
    mirror: Mirror,
) -> None:
    mirror.rewrite(max_delete_percent=250)

    run = sync_cli(mirror)

    error = assert_error(run, 2, "config")
    assert "max_delete_percent" in error["message"]
    assert not mirror.target.exists()


def test_mirror_sync_of_a_disabled_conduit_is_refused(mirror: Mirror) -> None:
    mirror.rewrite(enabled=False)

    run = sync_cli(mirror)

    assert_error(run, 3, "disabled")
    assert not mirror.target.exists()


def test_mirror_sync_of_a_paused_conduit_is_refused_dry_run_included(
    mirror: Mirror,
) -> None:
    assert run_cli("pause", "m", config=mirror.config).returncode == 0

    run = sync_here(mirror)
    plan = sync_here(mirror, "--dry-run")

    assert_error(run, 3, "paused")
    assert plan.returncode == 3
    assert "paused" in plan.document["refused"]
    assert not mirror.target.exists()
    assert run_cli("resume", "m", config=mirror.config).returncode == 0
    assert sync_here(mirror).returncode == 0


def test_mirror_second_one_shot_while_the_lock_is_held_exits_3_busy(
    mirror: Mirror,
) -> None:
    mirror.state_dir.mkdir(mode=0o700)
    with StateLock(mirror.state_dir):
        run = sync_cli(mirror)

    error = assert_error(run, 3, "busy")
    assert str(os.getpid()) in error["message"]
    assert not mirror.target.exists()
    assert sync_cli(mirror).returncode == 0  # released: the next run goes


# ------------------------------------------------------------------ dry run


def test_mirror_dry_run_on_a_first_run_writes_nothing_anywhere(
    mirror: Mirror,
) -> None:
    before = full_snapshot(mirror.tmp)

    run = sync_cli(mirror, "--dry-run")

    assert run.returncode == 0, run.stderr
    plan = run.document
    assert plan["conduit"] == "m"
    assert plan["refused"] is None
    ops = sorted(
        (op["op"], op["direction"], op["path"], op["size"]) for op in plan["operations"]
    )
    assert ops == [
        ("copy", "source_to_target", "a.txt", 5),
        ("copy", "source_to_target", "d", 0),
        ("copy", "source_to_target", "d/b.txt", 5),
        ("copy", "source_to_target", "d/empty", 0),
        ("copy", "source_to_target", "link", 5),
    ]
    assert full_snapshot(mirror.tmp) == before
    assert not mirror.state_dir.exists()
    assert not mirror.target.exists()
    assert not (mirror.source / ".conduitd").exists()


def test_mirror_dry_run_after_runs_writes_nothing_and_lists_every_kind_of_op(
    mirror: Mirror,
) -> None:
    assert sync_cli(mirror).returncode == 0
    write(mirror.source / "new.txt", b"new")
    write(mirror.source / "a.txt", b"changed alpha")
    (mirror.source / "d" / "b.txt").unlink()
    os.utime(mirror.source / "link", ns=(5, 5), follow_symlinks=False)
    before = full_snapshot(mirror.tmp)

    run = sync_cli(mirror, "--dry-run")

    assert run.returncode == 0, run.stderr
    ops = sorted((op["op"], op["path"]) for op in run.document["operations"])
    assert ops == [
        ("copy", "a.txt"),
        ("copy", "new.txt"),
        ("delete", "d/b.txt"),
        ("update", "link"),
    ]
    assert full_snapshot(mirror.tmp) == before
    text = sync_cli(mirror, "--dry-run", json_output=False)
    assert text.returncode == 0
    assert "delete" in text.stdout
    assert full_snapshot(mirror.tmp) == before


def test_mirror_dry_run_of_a_refused_run_exits_3_and_says_why(mirror: Mirror) -> None:
    assert sync_cli(mirror).returncode == 0
    for path in (mirror.source / "a.txt", mirror.source / "d" / "b.txt"):
        path.unlink()
    before = full_snapshot(mirror.tmp)

    run = sync_cli(mirror, "--dry-run")

    assert run.returncode == 3
    assert "max_delete_percent" in run.document["refused"]
    assert full_snapshot(mirror.tmp) == before


def test_mirror_dry_run_refuses_or_plans_as_the_real_run_would(
    mirror: Mirror,
) -> None:
    assert sync_here(mirror).returncode == 0
    write(mirror.target / "target-only.txt", b"t")
    marker = mirror.target / ".conduitd" / "marker"
    marker.rename(mirror.tmp / "marker.aside")
    before = full_snapshot(mirror.tmp)

    vanished = sync_here(mirror, "--dry-run")

    assert vanished.returncode == 3
    assert "marker" in vanished.document["refused"]
    assert full_snapshot(mirror.tmp) == before
    (mirror.tmp / "marker.aside").rename(marker)
    mirror.rewrite(enabled=False)
    disabled = sync_here(mirror, "--dry-run")
    assert disabled.returncode == 3
    assert "disabled" in disabled.document["refused"]
    mirror.rewrite()
    mirror.target.rename(mirror.tmp / "target.aside")
    missing = sync_here(mirror, "--dry-run")
    assert_error(missing, 3, "refused")
    (mirror.tmp / "target.aside").rename(mirror.target)
    shutil.rmtree(mirror.state_dir)  # a lost index: the real run is a union
    before = full_snapshot(mirror.tmp)

    union = sync_here(mirror, "--dry-run")

    assert union.returncode == 0, union.stderr
    assert union.document["operations"] == []  # target-only.txt is kept
    assert full_snapshot(mirror.tmp) == before
    real = sync_here(mirror)
    assert real.document["files_deleted"] == 0


# -------------------------------------------------------------- safety checks


def test_mirror_missing_source_is_refused_and_never_created(mirror: Mirror) -> None:
    shutil.rmtree(mirror.source)

    run = sync_cli(mirror)

    assert_error(run, 3, "refused")
    assert not mirror.source.exists()
    assert not mirror.target.exists()


def test_mirror_missing_target_is_created_on_the_first_run_only(
    mirror: Mirror,
) -> None:
    assert sync_here(mirror).returncode == 0
    assert mirror.target.is_dir()
    shutil.rmtree(mirror.target)

    run = sync_here(mirror)

    assert_error(run, 3, "refused")
    assert not mirror.target.exists()


def test_mirror_missing_target_parent_is_refused(tmp_path: Path) -> None:
    m = make_mirror(tmp_path)
    write(m.source / "a.txt", b"a")
    m2 = Mirror(m.tmp, m.source, tmp_path / "no" / "parent", m.state_dir, m.config)
    m2.rewrite()

    run = sync_here(m2)

    assert_error(run, 3, "refused")
    assert not (tmp_path / "no").exists()


def test_mirror_target_whose_marker_vanished_is_refused(mirror: Mirror) -> None:
    assert sync_here(mirror).returncode == 0
    (mirror.target / ".conduitd" / "marker").unlink()
    write(mirror.source / "new.txt", b"n")
    before = full_snapshot(mirror.target)

    run = sync_here(mirror)

    assert_error(run, 3, "refused")
    assert full_snapshot(mirror.target) == before


def test_mirror_source_whose_marker_vanished_is_refused(mirror: Mirror) -> None:
    assert sync_here(mirror).returncode == 0
    (mirror.source / ".conduitd" / "marker").unlink()
    (mirror.source / "a.txt").unlink()
    before = full_snapshot(mirror.target)

    run = sync_here(mirror)

    assert_error(run, 3, "refused")
    assert full_snapshot(mirror.target) == before


def test_mirror_empty_source_facing_a_full_target_is_refused_even_forced(
    mirror: Mirror,
) -> None:
    assert sync_here(mirror).returncode == 0
    for path in sorted(mirror.source.iterdir()):
        if path.name != ".conduitd":
            shutil.rmtree(
                path
            ) if path.is_dir() and not path.is_symlink() else path.unlink()
    mirror.rewrite(max_delete_percent=100)
    before = data_snapshot(mirror.target)

    for args in ((), ("--force",)):
        run = sync_here(mirror, *args)
        error = assert_error(run, 3, "refused")
        assert "empty" in error["message"] or "no entries" in error["message"]
    assert data_snapshot(mirror.target) == before


def test_mirror_empty_source_on_a_first_run_is_refused(tmp_path: Path) -> None:
    m = make_mirror(tmp_path, create_target=True, max_delete_percent=100)
    write(m.target / "precious.txt", b"keep me")

    run = sync_here(m, "--force")

    assert_error(run, 3, "refused")
    assert (m.target / "precious.txt").read_bytes() == b"keep me"
    assert not (m.target / ".conduitd" / "trash").exists()


def test_mirror_max_delete_percent_refuses_unless_forced(mirror: Mirror) -> None:
    for i in range(6):
        write(mirror.source / f"n{i}.txt", b"n")
    assert sync_here(mirror).returncode == 0  # 9 files on the target
    for i in range(5):
        (mirror.source / f"n{i}.txt").unlink()
    mirror.rewrite(max_delete_percent=50)
    before = data_snapshot(mirror.target)

    refused = sync_here(mirror)

    error = assert_error(refused, 3, "refused")
    assert "max_delete_percent" in error["message"]
    assert data_snapshot(mirror.target) == before
    allowed = mirror.rewrite(max_delete_percent=60)
    assert sync_here(allowed).returncode == 0  # 5 of 9 is within 60 %
    for i in range(5):
        write(mirror.source / f"m{i}.txt", b"m")
    assert sync_here(mirror).returncode == 0
    for i in range(5):
        (mirror.source / f"m{i}.txt").unlink()
    mirror.rewrite(max_delete_percent=10)
    assert sync_here(mirror).returncode == 3

    forced = sync_here(mirror, "--force")

    assert forced.returncode == 0, forced.stderr
    assert forced.document["files_deleted"] == 5
    assert listing(mirror.target) == listing(mirror.source)


def test_mirror_failed_verification_exits_1(mirror: Mirror) -> None:
    busy = write(mirror.source / "busy.bin", os.urandom(256 << 10))
    stop = threading.Event()

    def keep_touching() -> None:
        tick = busy.stat().st_mtime_ns
        while not stop.is_set():
            tick += 1_000
            os.utime(busy, ns=(tick, tick))
            time.sleep(0.0005)

    toucher = threading.Thread(target=keep_touching)
    toucher.start()
    try:
        run = sync_cli(mirror)
    finally:
        stop.set()
        toucher.join()

    assert run.returncode == 1, (run.stdout, run.stderr)
    assert run.document["verification_status"].startswith("failed:")
    assert run.document["generation"] == 2  # the automatic retry, failed too
    assert (mirror.target / "a.txt").read_bytes() == b"alpha"  # the rest synced


# ---------------------------------------------------- lost index and history


def test_mirror_lost_index_runs_a_union_then_reclaims_the_marker(
    mirror: Mirror,
) -> None:
    assert sync_here(mirror).returncode == 0
    old_library = marker_of(mirror.target)["library"]
    shutil.rmtree(mirror.state_dir)  # the index is lost
    write(mirror.target / "target-only.txt", b"only here")
    write(mirror.source / "new.txt", b"new")

    union = sync_here(mirror)

    assert union.returncode == 0, union.stderr
    assert union.document["generation"] == 1
    assert union.document["files_deleted"] == 0
    assert union.document["files_copied"] == 1
    assert (mirror.target / "target-only.txt").read_bytes() == b"only here"
    assert (mirror.target / "new.txt").read_bytes() == b"new"
    new_library = marker_of(mirror.target)["library"]
    assert new_library != old_library
    assert marker_of(mirror.source)["library"] == new_library

    after = sync_here(mirror)

    assert after.returncode == 0, after.stderr
    assert after.document["files_deleted"] == 1
    assert trash_files(mirror.target, 2) == {"target-only.txt": b"only here"}
    assert listing(mirror.target) == listing(mirror.source)


def test_mirror_history_survives_rescans_refusals_reconfiguration_and_removal(
    mirror: Mirror,
) -> None:
    assert sync_here(mirror).returncode == 0
    write(mirror.source / "x.txt", b"x")
    assert sync_here(mirror).returncode == 0
    (mirror.target / ".conduitd" / "marker").rename(mirror.tmp / "marker.aside")
    assert sync_here(mirror).returncode == 3  # unmounted
    (mirror.tmp / "marker.aside").rename(mirror.target / ".conduitd" / "marker")
    mirror.rewrite(ignore=["*.log"])  # reconciled, same endpoints
    assert sync_here(mirror).returncode == 0
    mirror.rewrite(enabled=False)
    assert sync_here(mirror).returncode == 3
    other = mirror.tmp / "other"
    write(other / "o.txt", b"o")
    write_config(  # the conduit leaves the config for a while: disabled, kept
        mirror.config,
        mirror.state_dir,
        [{"name": "o", "source": str(other), "target": str(other) + "-copy"}],
    )
    assert (
        sync_here(
            Mirror(mirror.tmp, other, other, mirror.state_dir, mirror.config, "o")
        ).returncode
        == 0
    )
    mirror.rewrite()
    shutil.rmtree(mirror.source / "d")
    assert sync_here(mirror).returncode == 0

    history = json.loads(run_cli("history", "m", "--json", config=mirror.config).stdout)

    assert [g["generation"] for g in history] == [4, 3, 2, 1]
    assert all(g["verification_status"] == "verified" for g in history)
    assert [r["generation"] for r in generation_rows(mirror.state_dir)] == [1, 2, 3, 4]


# ------------------------------------------------------------ crash recovery


def test_mirror_crash_mid_run_is_recovered_at_the_next_start(tmp_path: Path) -> None:
    m = make_mirror(tmp_path, bandwidth_limit_mbps=1)
    write(m.source / "slow.bin", os.urandom(3 << 20))  # ~25 s at 1 Mbit/s
    write(m.source / "small.txt", b"small")
    command = [sys.executable, "-m", "conduitd", "--config", str(m.config)]
    child = subprocess.Popen(
        [*command, "sync", "m", "--json"],
        env=conduitd_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not tmp_entries(m.target) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tmp_entries(m.target), "the copy never started"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    conn = sqlite3.connect(library_db(m.state_dir))
    try:
        left = conn.execute(
            "SELECT generation FROM sync_generation WHERE completed_at IS NULL"
        ).fetchall()
    finally:
        conn.close()
    assert left == [(1,)]
    assert not (m.target / "slow.bin").exists()  # no partial file under its name
    m.rewrite()  # no bandwidth limit

    run = sync_cli(m)

    assert run.returncode == 0, run.stderr
    assert run.document["generation"] == 2
    first = generation_rows(m.state_dir)[0]
    assert first["verification_status"] == "failed:interrupted"
    assert first["status"] == "interrupted"
    assert first["completed_at"] is not None
    assert tmp_entries(m.target) == []
    assert listing(m.target) == listing(m.source)
    assert trash_rows(m.state_dir) == []
