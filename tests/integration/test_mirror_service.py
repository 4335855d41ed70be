"""Mirror mode end to end through the service API (issue 5), on real temp trees.

Each test drives `FileSyncService.sync_now` as the CLI's one-shot path does
(lock, library, reconcile, crash recovery, scan both sides, resolve, jobs,
verification), in-process so that seams (the runner's copier) can be used.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import blake3
import pytest

from conduitd.jobs.runner import TransferRunner
from helpers.mirror import (
    Mirror,
    generation_rows,
    listing,
    make_mirror,
    scan_both,
    sync_api,
    tmp_entries,
    trash_files,
    trash_rows,
    write,
)
from helpers.seams import SeamCopier
from helpers.trees import tree_digest

NS = 1_600_000_000_123_456_789  # an mtime with every nanosecond digit set


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    return make_mirror(tmp_path, max_delete_percent=100)


def counts(generation: Any) -> dict[str, int]:
    c = generation.counts
    return {
        "files_copied": c.files_copied,
        "metadata_updated": c.metadata_updated,
        "files_deleted": c.files_deleted,
        "files_skipped": c.files_skipped,
        "bytes_transferred": c.bytes_transferred,
        "errors_encountered": c.errors_encountered,
    }


def assert_converged(m: Mirror) -> None:
    assert listing(m.target) == listing(m.source)
    assert tmp_entries(m.target) == []


# ------------------------------------------------------------ basic changes


async def test_mirror_first_run_copies_files_dirs_symlinks_and_empty_dirs(
    mirror: Mirror,
) -> None:
    write(mirror.source / "a.txt", b"alpha")
    write(mirror.source / "d" / "e" / "b.bin", b"\0" * 5000)
    (mirror.source / "empty" / "deeper").mkdir(parents=True)
    (mirror.source / "d" / "rel-link").symlink_to("e/b.bin")
    (mirror.source / "abs-link").symlink_to("/etc/hostname")
    (mirror.source / "dangling").symlink_to("no/such/thing")

    generation = await sync_api_run(mirror)

    assert generation.generation == 1
    assert generation.verification_status == "verified"
    assert counts(generation) == {
        "files_copied": 5,
        "metadata_updated": 0,
        "files_deleted": 0,
        "files_skipped": 0,
        "bytes_transferred": 5005,
        "errors_encountered": 0,
    }
    assert_converged(mirror)
    assert os.readlink(mirror.target / "abs-link") == "/etc/hostname"
    assert (mirror.target / "empty" / "deeper").is_dir()


async def test_mirror_changed_and_deleted_files_go_to_trash_with_rows(
    mirror: Mirror,
) -> None:
    write(mirror.source / "keep.txt", b"same")
    write(mirror.source / "change.txt", b"old")
    write(mirror.source / "d" / "gone.txt", b"gone soon")
    await sync_api_run(mirror)
    write(mirror.source / "change.txt", b"new content")
    (mirror.source / "d" / "gone.txt").unlink()

    generation = await sync_api_run(mirror)

    assert generation.generation == 2
    assert counts(generation) == {
        "files_copied": 1,
        "metadata_updated": 0,
        "files_deleted": 1,
        "files_skipped": 0,
        "bytes_transferred": len(b"new content"),
        "errors_encountered": 0,
    }
    assert_converged(mirror)
    assert trash_files(mirror.target) == {
        "2/change.txt": b"old",
        "2/d/gone.txt": b"gone soon",
    }
    rows = {r["relative_path"]: r for r in trash_rows(mirror.state_dir)}
    assert rows["change.txt"]["reason"] == "overwritten"
    assert rows["change.txt"]["trash_path"] == ".conduitd/trash/2/change.txt"
    assert rows["d/gone.txt"]["reason"] == "deleted"
    assert rows["d/gone.txt"]["root"] == "target"
    assert rows["d/gone.txt"]["generation"] == 2
    assert rows["d/gone.txt"]["size"] == len(b"gone soon")
    assert rows["d/gone.txt"]["content_id"] == blake3.blake3(b"gone soon").hexdigest()


async def test_mirror_touch_only_updates_metadata_in_place(mirror: Mirror) -> None:
    write(mirror.source / "t.txt", b"touch me", mtime_ns=NS)
    await sync_api_run(mirror)
    inode = os.stat(mirror.target / "t.txt").st_ino
    os.utime(mirror.source / "t.txt", ns=(NS + 7, NS + 7))
    os.chmod(mirror.source / "t.txt", 0o600)

    generation = await sync_api_run(mirror)

    assert counts(generation)["metadata_updated"] == 1
    assert counts(generation)["files_copied"] == 0
    assert counts(generation)["bytes_transferred"] == 0
    st = os.stat(mirror.target / "t.txt")
    assert st.st_ino == inode
    assert st.st_mtime_ns == NS + 7
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert trash_files(mirror.target) == {}
    assert_converged(mirror)


async def test_mirror_preserves_modes_and_mtimes_to_the_nanosecond(
    mirror: Mirror,
) -> None:
    old = os.umask(0o077)
    try:
        for i, mode in enumerate((0o600, 0o644, 0o755, 0o400, 0o4755, 0o1777)):
            path = write(mirror.source / f"f{i}", bytes([i]) * 10, mtime_ns=NS + i)
            os.chmod(path, mode)
        sub = mirror.source / "sub"
        sub.mkdir()
        os.chmod(sub, 0o750)
        os.symlink("f0", mirror.source / "link")
        os.utime(mirror.source / "link", ns=(NS + 99, NS + 99), follow_symlinks=False)

        await sync_api_run(mirror)
    finally:
        os.umask(old)

    assert_converged(mirror)  # listing() holds modes and mtime_ns
    assert os.lstat(mirror.target / "link").st_mtime_ns == NS + 99
    assert stat.S_IMODE(os.stat(mirror.target / "sub").st_mode) == 0o750


async def test_mirror_replaces_a_file_by_a_directory_and_back(mirror: Mirror) -> None:
    write(mirror.source / "x", b"plain file")
    await sync_api_run(mirror)
    (mirror.source / "x").unlink()
    write(mirror.source / "x" / "inner.txt", b"inside")

    second = await sync_api_run(mirror)

    assert second.verification_status == "verified"
    assert_converged(mirror)
    assert trash_files(mirror.target, 2) == {"x": b"plain file"}

    (mirror.source / "x" / "inner.txt").unlink()
    (mirror.source / "x").rmdir()
    write(mirror.source / "x", b"a file again")

    third = await sync_api_run(mirror)

    assert third.verification_status == "verified"
    assert counts(third)["errors_encountered"] == 0
    assert_converged(mirror)
    assert trash_files(mirror.target, 3) == {"x/inner.txt": b"inside"}


async def test_mirror_replaces_a_symlink_by_a_file_without_writing_through_it(
    mirror: Mirror, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "victim.txt", b"must stay")
    write(outside / "sub" / "f", b"outside f")
    before = tree_digest(outside)
    (mirror.source / "victim.txt").symlink_to(outside / "victim.txt")
    await sync_api_run(mirror)
    assert os.readlink(mirror.target / "victim.txt") == str(outside / "victim.txt")
    # Now the source holds a real file and a real directory where the target
    # holds symlinks leading outside.
    (mirror.source / "victim.txt").unlink()
    write(mirror.source / "victim.txt", b"replacement")
    write(mirror.source / "sub" / "f", b"ours")
    (mirror.target / "sub").symlink_to(outside / "sub")

    generation = await sync_api_run(mirror)

    assert tree_digest(outside) == before
    assert counts(generation)["errors_encountered"] == 0
    assert_converged(mirror)


async def test_mirror_ignored_paths_are_never_copied_nor_deleted(
    tmp_path: Path,
) -> None:
    mirror = make_mirror(tmp_path, ignore=["*.tmp", "cache/"])
    write(mirror.source / "keep.txt", b"k")
    write(mirror.source / "skip.tmp", b"s")
    write(mirror.source / "cache" / "c.bin", b"c")
    write(mirror.target / "mine.tmp", b"target's own")
    write(mirror.target / "cache" / "t.bin", b"target's cache")

    generation = await sync_api_run(mirror)

    assert counts(generation)["files_deleted"] == 0
    assert (mirror.target / "keep.txt").read_bytes() == b"k"
    assert not (mirror.target / "skip.tmp").exists()
    assert not (mirror.target / "cache" / "c.bin").exists()
    assert (mirror.target / "mine.tmp").read_bytes() == b"target's own"
    assert (mirror.target / "cache" / "t.bin").read_bytes() == b"target's cache"


async def test_mirror_bulk_comparison_lists_exactly_the_paths_that_differ(
    mirror: Mirror,
) -> None:
    for name in ("same", "content", "mode", "touch", "gone", "kind"):
        write(mirror.source / "d" / name, name.encode(), mtime_ns=NS)
    (mirror.source / "link").symlink_to("d/same")
    await sync_api_run(mirror)
    write(mirror.source / "d" / "content", b"CONTENT", mtime_ns=NS)  # same size
    os.chmod(mirror.source / "d" / "mode", 0o600)
    os.utime(mirror.target / "d" / "touch", ns=(NS + 1, NS + 1))
    (mirror.source / "d" / "gone").unlink()
    (mirror.target / "d" / "kind").unlink()
    (mirror.target / "d" / "kind").mkdir()
    write(mirror.target / "d" / "kind" / "inner", b"target only")
    write(mirror.source / "new", b"new")
    (mirror.source / "link").unlink()
    (mirror.source / "link").symlink_to("d/mode")

    differing = await scan_and_compare(mirror)

    assert sorted(differing) == [
        b"d/content",
        b"d/gone",
        b"d/kind",
        b"d/kind/inner",
        b"d/mode",
        b"d/touch",
        b"link",
        b"new",
    ]
    generation = await sync_api_run(mirror)
    assert generation.verification_status == "verified"
    assert_converged(mirror)
    assert await scan_and_compare(mirror) == []


async def scan_and_compare(mirror: Mirror) -> list[bytes]:
    """Rescan both roots, then the one-shot run's bulk comparison."""
    from conduitd.config import load_config
    from conduitd.oneshot import writer_session
    from conduitd.sync.differ import differing_paths

    async with writer_session(load_config(mirror.config)) as session:
        source_id, target_id = await scan_both(mirror, session)
        return await differing_paths(session.library.db, source_id, target_id)


# ------------------------------------------------------------ job ordering


async def test_mirror_runs_copies_before_deletes(mirror: Mirror) -> None:
    for i in range(5):
        write(mirror.source / f"old{i}.txt", f"content {i}".encode())
    await sync_api_run(mirror)
    # A rename: same contents under new names; the old names are deleted.
    for i in range(5):
        (mirror.source / f"old{i}.txt").rename(mirror.source / f"new{i}.txt")
    seen_old: list[bool] = []

    def before(rel: bytes) -> None:
        seen_old.append(all((mirror.target / f"old{i}.txt").exists() for i in range(5)))

    generation = await sync_api_run(mirror, runner=runner_with(SeamCopier(before)))

    assert seen_old == [True] * 5
    assert counts(generation)["files_copied"] == 5
    assert counts(generation)["files_deleted"] == 5
    assert_converged(mirror)


async def test_mirror_file_changed_during_copy_is_skipped_then_converges(
    mirror: Mirror,
) -> None:
    write(mirror.source / "busy.txt", b"first version")
    write(mirror.source / "calm.txt", b"calm")
    changed = False

    def during(rel: bytes) -> None:
        nonlocal changed
        if rel == b"busy.txt" and not changed:
            changed = True
            with open(mirror.source / "busy.txt", "r+b") as handle:
                handle.write(b"FIRST")  # same size, same inode, new mtime

    generation = await sync_api_run(
        mirror, runner=runner_with(SeamCopier(during=during))
    )

    first, retry = generation_rows(mirror.state_dir)
    assert first["files_copied"] == 1  # calm.txt
    assert query_skipped(mirror, 1) == 1  # busy.txt, changed during its copy
    assert first["errors_encountered"] == 0
    assert first["verification_status"] == "failed:work_remains"
    # The automatic retry is the next run; it converges.
    assert generation.generation == retry["generation"] == 2
    assert generation.verification_status == "verified"
    assert counts(generation)["files_copied"] == 1
    assert_converged(mirror)
    assert (mirror.target / "busy.txt").read_bytes() == b"FIRST version"


async def test_mirror_file_changed_after_resolution_is_skipped_not_copied(
    mirror: Mirror,
) -> None:
    write(mirror.source / "busy.txt", b"first version")
    changed = False

    def before(rel: bytes) -> None:
        nonlocal changed
        if not changed:
            changed = True
            write(mirror.source / "busy.txt", b"second version, longer")

    await sync_api_run(mirror, runner=runner_with(SeamCopier(before=before)))

    first = generation_rows(mirror.state_dir)[0]
    assert first["files_copied"] == 0
    assert query_skipped(mirror, 1) == 1
    assert (mirror.target / "busy.txt").read_bytes() == b"second version, longer"
    assert tmp_entries(mirror.target) == []


async def test_mirror_target_dir_swapped_for_outside_symlink_writes_nothing_outside(
    mirror: Mirror, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "d" / "f0.txt", b"outside 0")
    write(outside / "d" / "old.txt", b"outside old")
    before = tree_digest(outside)
    write(mirror.source / "d" / "old.txt", b"to be deleted")
    await sync_api_run(mirror)
    (mirror.source / "d" / "old.txt").unlink()
    for i in range(6):
        write(mirror.source / "d" / f"f{i}.txt", f"new {i}".encode())
    swapped = False

    def after(rel: bytes) -> None:
        nonlocal swapped
        if not swapped:
            swapped = True
            (mirror.target / "d").rename(mirror.tmp / "moved-away")
            (mirror.target / "d").symlink_to(outside / "d")

    generation = await sync_api_run(mirror, runner=runner_with(SeamCopier(after=after)))

    assert tree_digest(outside) == before
    assert (mirror.tmp / "moved-away" / "old.txt").read_bytes() == b"to be deleted"
    first, retry = generation_rows(mirror.state_dir)[1:]
    assert first["errors_encountered"] == 7  # 6 copies and 1 delete refused
    assert first["verification_status"] == "failed:work_remains"
    # The retry replaces the symlink by a directory; the link goes to trash.
    assert generation.generation == retry["generation"] == 3
    assert generation.verification_status == "verified"
    assert counts(generation)["errors_encountered"] == 0
    assert_converged(mirror)
    assert os.readlink(mirror.target / ".conduitd" / "trash" / "3" / "d") == str(
        outside / "d"
    )
    assert tmp_entries(mirror.target) == []


async def test_mirror_swapping_thread_never_redirects_a_write_outside(
    mirror: Mirror, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write(outside / "d" / "bait.txt", b"bait")
    before = tree_digest(outside)
    (mirror.target / "d").mkdir(parents=True)
    write(mirror.target / "d" / "stale.txt", b"stale")
    for i in range(60):
        write(mirror.source / "d" / f"f{i:02d}.txt", f"file {i}".encode() * 100)
    stop = threading.Event()

    def swap_forever() -> None:
        real, link = mirror.target / "d", mirror.tmp / "d-link"
        link.symlink_to(outside / "d")
        aside = mirror.tmp / "d-real"
        while not stop.is_set():
            try:
                real.rename(aside)
                link.rename(real)
                real.rename(link)
                aside.rename(real)
            except OSError:
                pass

    swapper = threading.Thread(target=swap_forever)
    swapper.start()
    try:
        await sync_api_run(mirror)
    finally:
        stop.set()
        swapper.join()

    assert tree_digest(outside) == before


# --------------------------------------------------------------------- trash


async def test_mirror_trash_numbers_a_name_taken_twice_in_one_generation(
    mirror: Mirror,
) -> None:
    write(mirror.source / "a.txt", b"v1")
    write(mirror.source / "b.txt", b"b")
    await sync_api_run(mirror)
    (mirror.source / "a.txt").unlink()
    await sync_api_run(mirror)  # generation 2 trashes a.txt
    assert trash_files(mirror.target, 2) == {"a.txt": b"v1"}
    # The library is lost: numbering starts again at 1, so generation 2
    # meets an old trash/2/a.txt.
    shutil.rmtree(mirror.state_dir)
    first = await sync_api_run(mirror)  # a union run, deletes nothing
    assert first.generation == 1
    write(mirror.target / "a.txt", b"v2, target only")

    second = await sync_api_run(mirror)

    assert second.generation == 2
    assert counts(second)["files_deleted"] == 1
    assert trash_files(mirror.target, 2) == {
        "a.txt": b"v1",
        "a~1.txt": b"v2, target only",
    }
    rows = [r for r in trash_rows(mirror.state_dir) if r["generation"] == 2]
    assert [r["trash_path"] for r in rows] == [".conduitd/trash/2/a~1.txt"]


# ------------------------------------------------------------------ helpers


def runner_with(copier: Any) -> TransferRunner:
    return TransferRunner(copier=copier)


async def sync_api_run(mirror: Mirror, *, runner: Any = None) -> Any:
    return await sync_api(mirror, runner=runner)


def query_skipped(mirror: Mirror, generation: int) -> int:
    (row,) = [
        r for r in generation_rows(mirror.state_dir) if r["generation"] == generation
    ]
    return int(row["files_skipped"])


async def test_verification_takes_the_copies_hashes_instead_of_reading_them(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy hashed every byte it wrote; verification's rescan of the
    target reads none of them again, and no announcement outlives the run."""
    from conduitd.config import load_config
    from conduitd.index import scanner
    from conduitd.oneshot import writer_session
    from conduitd.sync.service import FileSyncService

    hashed: list[tuple[bytes, bytes]] = []
    real_hash_files = scanner.hash_files

    def spy(root: bytes, paths: list[bytes], *args: Any, **kwargs: Any) -> Any:
        hashed.extend((root, p) for p in paths)
        return real_hash_files(root, paths, *args, **kwargs)

    monkeypatch.setattr(scanner, "hash_files", spy)
    for i in range(30):
        write(mirror.source / f"d{i % 3}" / f"f{i:02d}", f"body {i}".encode() * 50)
    config = load_config(mirror.config)
    async with writer_session(config) as session:
        service = FileSyncService(
            session.library, session.tm, session.indexer, config, one_shot=True
        )
        generation = await service.sync_now(mirror.name)
        leftover = dict(session.indexer.scanner._known)

    assert generation.verification_status == "verified"
    assert counts(generation)["files_copied"] == 30
    assert_converged(mirror)
    assert len(hashed) == 30  # the source's first scan, and nothing else
    assert {root for root, _ in hashed} == {os.fsencode(mirror.source)}
    assert leftover == {}
