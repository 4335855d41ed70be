"""Whole runs under faults (issue 8, point 4), in-process through the service.

Each test breaks something on purpose — a listing that fails, a source that
empties or changes under a copy, a target changed between plan and rename, a
corrupt library, strange entries — and checks the promise: no file lost, no
partial file under a final name, no deletion the run could not justify.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from conduitd.errors import SafetyRefusal
from conduitd.jobs.runner import TransferRunner
from helpers.mirror import (
    Mirror,
    generation_rows,
    library_db,
    listing,
    make_mirror,
    sync_api,
    tmp_entries,
    write,
)
from helpers.seams import SeamCopier


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    return make_mirror(tmp_path, max_delete_percent=100)


@pytest.fixture
def twoway(tmp_path: Path) -> Mirror:
    return make_mirror(
        tmp_path, create_target=True, mode="bidirectional", conflict="prompt_user"
    )


def no_partial_files(*roots: Path) -> None:
    for root in roots:
        assert tmp_entries(root) == []


# ------------------------------------------------------------ listing errors


async def test_listing_io_error_deletes_nothing_this_run(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("keep", "gone"):
        write(mirror.source / "d" / f"{name}.txt", name.encode())
    await sync_api(mirror)
    (mirror.source / "d" / "gone.txt").unlink()
    broken = os.fsencode(mirror.source / "d")
    real_listdir = os.listdir

    def failing_listdir(path: Any = ".") -> Any:
        if isinstance(path, (str, bytes)) and os.fsencode(path) == broken:
            raise OSError(errno.EIO, "injected I/O error", path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", failing_listdir)
    generation = await sync_api(mirror)
    monkeypatch.undo()

    assert generation.counts.files_deleted == 0
    assert (mirror.target / "d" / "gone.txt").read_bytes() == b"gone"
    healed = await sync_api(mirror)
    assert healed.counts.files_deleted == 1
    assert listing(mirror.target) == listing(mirror.source)


# ------------------------------------------------- source emptied, unmounted


async def test_source_emptied_or_unmounted_deletes_nothing(mirror: Mirror) -> None:
    for i in range(4):
        write(mirror.source / f"f{i}.txt", b"data")
    await sync_api(mirror)
    before = listing(mirror.target)

    for i in range(4):
        (mirror.source / f"f{i}.txt").unlink()
    with pytest.raises(SafetyRefusal):
        await sync_api(mirror, force=True)  # emptied: refused even forced
    assert listing(mirror.target) == before

    write(mirror.source / "f0.txt", b"data")
    (mirror.source / ".conduitd" / "marker").unlink()  # looks unmounted
    with pytest.raises(SafetyRefusal):
        await sync_api(mirror, force=True)
    assert listing(mirror.target) == before


async def test_source_emptied_mid_run_loses_nothing(mirror: Mirror) -> None:
    for i in range(6):
        write(mirror.source / f"f{i}.txt", f"v1 {i}".encode())
    await sync_api(mirror)
    for i in range(6):
        write(mirror.source / f"f{i}.txt", f"v2 {i}".encode())
    write(mirror.target / "only-on-target.txt", b"extra")

    def empty_the_source(rel: bytes) -> None:
        for path in mirror.source.iterdir():
            if path.is_file() and not path.is_symlink():
                path.unlink()

    runner = TransferRunner(copier=SeamCopier(during=empty_the_source))
    with contextlib.suppress(SafetyRefusal):  # the retry sees an empty source
        await sync_api(mirror, runner=runner)
    survivors = {p: v[3] for p, v in listing(mirror.target).items()}
    for i in range(6):  # each file is there in v1 or v2 (or in trash)
        assert survivors[f"f{i}.txt"] in (f"v1 {i}".encode(), f"v2 {i}".encode())
    no_partial_files(mirror.target)


# ------------------------------------------------- changed during the copy


@pytest.mark.parametrize("change", ["modified", "deleted", "replaced"])
async def test_source_changed_during_copy_is_skipped_never_half_written(
    mirror: Mirror, change: str
) -> None:
    write(mirror.source / "busy.bin", b"A" * 300_000)
    write(mirror.source / "calm.txt", b"calm")
    busy = mirror.source / "busy.bin"

    fired: list[bytes] = []

    def during(rel: bytes) -> None:
        if rel != b"busy.bin" or fired:
            return  # once: the automatic retry must converge
        fired.append(rel)
        if change == "modified":
            with open(busy, "r+b") as handle:
                handle.write(b"B")
        elif change == "deleted":
            busy.unlink()
        else:
            write(mirror.tmp / "new.bin", b"C" * 10)
            os.replace(mirror.tmp / "new.bin", busy)

    generation = await sync_api(
        mirror, runner=TransferRunner(copier=SeamCopier(during=during))
    )

    first = generation_rows(mirror.state_dir)[0]
    if change == "modified":  # the hash of what landed differs: dropped
        assert first["files_skipped"] == 1
    # Deleted or replaced: the open descriptor still reads the indexed
    # version whole, so that consistent version may land; the retry then
    # converges. Either way nothing half-written ever has a final name.
    assert first["errors_encountered"] == 0
    assert generation.verification_status == "verified"  # the retry converged
    assert listing(mirror.target) == listing(mirror.source)
    no_partial_files(mirror.target)


async def test_target_changed_between_plan_and_rename_is_skipped_then_conflicts(
    twoway: Mirror,
) -> None:
    write(twoway.source / "doc.txt", b"base")
    await sync_api(twoway)
    write(twoway.source / "doc.txt", b"source edit")
    target_doc = twoway.target / "doc.txt"

    def after(rel: bytes) -> None:
        if rel == b"doc.txt" and target_doc.read_bytes() == b"base":
            write(target_doc, b"target edit, made while the copy ran")

    generation = await sync_api(
        twoway, runner=TransferRunner(copier=SeamCopier(after=after))
    )

    assert generation.counts.files_skipped == 1  # never overwritten
    assert target_doc.read_bytes() == b"target edit, made while the copy ran"
    assert (twoway.source / "doc.txt").read_bytes() == b"source edit"
    assert generation.verification_status == "verified"  # prompt_user waits
    following = await sync_api(twoway)
    assert following.counts.conflicts_pending == 1  # the next run: a conflict
    assert target_doc.read_bytes() == b"target edit, made while the copy ran"
    no_partial_files(twoway.source, twoway.target)


# ------------------------------------------------------------ the library


def corrupt(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xff" * 3 * 4096)


@pytest.mark.parametrize("mode", ["mirror", "bidirectional"])
async def test_corrupt_library_is_moved_aside_and_the_next_run_is_a_union(
    tmp_path: Path, mode: str
) -> None:
    m = make_mirror(tmp_path, mode=mode, max_delete_percent=100)
    for i in range(30):
        write(m.source / f"f{i:02d}.txt", f"file {i}".encode() * 50)
    await sync_api(m)
    (m.source / "f00.txt").unlink()  # a mirror would delete it on the target
    (m.target / "f01.txt").unlink()  # a two-way run would delete the source's
    db = library_db(m.state_dir)
    corrupt(db)

    generation = await sync_api(m)

    assert generation.counts.files_deleted == 0
    assert (m.target / "f00.txt").exists()
    assert (m.source / "f01.txt").exists()
    aside = sorted(db.parent.glob("library.db.corrupt-*"))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))]
    assert generation.verification_status == "verified"


async def test_deleted_wal_loses_no_file(mirror: Mirror) -> None:
    write(mirror.source / "a.txt", b"a")
    await sync_api(mirror)
    db = library_db(mirror.state_dir)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")
    write(mirror.source / "b.txt", b"b")

    generation = await sync_api(mirror)

    assert generation.counts.files_deleted == 0
    assert generation.verification_status == "verified"
    assert listing(mirror.target) == listing(mirror.source)


# ------------------------------------------------------- clocks and entries


async def test_mtimes_in_2099_and_at_the_epoch_converge_without_loops(
    mirror: Mirror,
) -> None:
    future = 4_102_444_800_123_456_789  # 2100-01-01, nanoseconds set
    write(mirror.source / "future.txt", b"f", mtime_ns=future)
    write(mirror.source / "epoch.txt", b"e", mtime_ns=1)
    first = await sync_api(mirror)
    assert first.verification_status == "verified"
    assert (mirror.target / "future.txt").stat().st_mtime_ns == future
    again = await sync_api(mirror)
    assert again.counts.files_copied == again.counts.metadata_updated == 0


def odd_entries(root: Path) -> None:
    write(root / "plain.txt", b"plain")
    os.link(root / "plain.txt", root / "hardlink.txt")
    os.mkfifo(root / "fifo")  # opening it for reading would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    (root / "loop").symlink_to("loop")
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    (root / "self-dir").symlink_to(".")
    write(root / os.fsdecode(b"bad-\xff\xfe-utf8.txt"), b"not utf-8")
    write(root / ("n" * 251 + ".txt"), b"255 bytes")
    write(root / ("\u00e9" * 127 + "x"), b"255 bytes of UTF-8")


async def test_odd_entries_are_copied_or_skipped_and_never_opened(
    mirror: Mirror,
) -> None:
    odd_entries(mirror.source)
    with contextlib.suppress(PermissionError):  # no CAP_MKNOD: FIFOs still do
        os.mknod(mirror.source / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))

    generation = await sync_api(mirror)

    got = listing(mirror.target)  # (the helper would block on a FIFO)
    assert not {"fifo", "sock", "null"} & set(got)
    for rel, (kind, _mode, mtime_ns, body) in got.items():
        st = os.lstat(mirror.source / rel)
        assert mtime_ns == st.st_mtime_ns
        if kind == "file":
            assert body == (mirror.source / rel).read_bytes()
        else:
            assert body == os.readlink(mirror.source / rel).encode()
    expected = {
        "plain.txt", "hardlink.txt", "loop", "ping", "pong", "self-dir",
        os.fsdecode(b"bad-\xff\xfe-utf8.txt"), "n" * 251 + ".txt",
        "\u00e9" * 127 + "x",
    }  # fmt: skip
    assert set(got) == expected
    assert generation.counts.errors_encountered == 0
    again = await sync_api(mirror)
    assert again.counts.files_copied == again.counts.files_deleted == 0


async def test_case_only_rename_converges_on_a_case_sensitive_target(
    mirror: Mirror,
) -> None:
    write(mirror.source / "readme.txt", b"text")
    write(mirror.source / "dir" / "x", b"x")
    await sync_api(mirror)
    (mirror.source / "readme.txt").rename(mirror.source / "README.txt")
    (mirror.source / "dir").rename(mirror.source / "DIR")

    generation = await sync_api(mirror)

    assert generation.verification_status == "verified"
    assert listing(mirror.target) == listing(mirror.source)
    assert not (mirror.target / "readme.txt").exists()
