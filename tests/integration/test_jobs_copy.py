"""copy_to_temp against real directories: content, metadata, verification."""

from __future__ import annotations

import dataclasses
import os
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from conduitd.errors import UnsafePath
from conduitd.jobs import (
    ContentMismatch,
    RateLimiter,
    RootFs,
    SourceChanged,
    UnreadableEntry,
    copy_to_temp,
)
from conduitd.jobs.copy import CHUNK_BYTES
from conduitd.storage.models import EntryKind
from helpers.trees import entry_of, tmp_entries

MTIME_NS = 1_234_567_890_123_456_789


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[tuple[Path, Path, RootFs, RootFs]]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with RootFs(src) as src_fs, RootFs(dst) as dst_fs:
        yield src, dst, src_fs, dst_fs


Roots = tuple[Path, Path, RootFs, RootFs]


def write(
    path: Path, data: bytes, *, mode: int = 0o644, mtime_ns: int = MTIME_NS
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_copy_preserves_content_mode_and_mtime_ns(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    data = os.urandom(3 * CHUNK_BYTES + 17)
    write(src / "d" / "f.bin", data, mode=0o640)
    expected = entry_of(src, "d/f.bin")

    temp = copy_to_temp(src_fs, b"d/f.bin", dst_fs, expected)

    landed = dst / os.fsdecode(temp.tmp_rel)
    st = os.lstat(landed)
    assert landed.read_bytes() == data
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == MTIME_NS
    assert st.st_atime_ns == MTIME_NS
    assert temp.content_id == expected.content_id
    assert temp.size == len(data)
    assert temp.tmp_rel.startswith(b".conduitd/tmp/")
    assert len(os.path.basename(temp.tmp_rel)) <= 255
    assert stat.S_IMODE(os.stat(dst / ".conduitd" / "tmp").st_mode) == 0o700


def test_copy_sets_mode_explicitly_whatever_the_umask(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(src / "run.sh", b"#!/bin/sh\n", mode=0o4755)
    old = os.umask(0o077)
    try:
        temp = copy_to_temp(src_fs, b"run.sh", dst_fs, entry_of(src, "run.sh"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(dst / os.fsdecode(temp.tmp_rel)).st_mode) == 0o4755


def test_copy_of_empty_file(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(src / "empty", b"")
    temp = copy_to_temp(src_fs, b"empty", dst_fs, entry_of(src, "empty"))
    assert (dst / os.fsdecode(temp.tmp_rel)).read_bytes() == b""


def test_copy_with_wrong_content_id_drops_the_temp(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(src / "f", b"hello")
    expected = entry_of(src, "f")
    corrupt = dataclasses.replace(expected, content_id="0" * 64)
    with pytest.raises(ContentMismatch):
        copy_to_temp(src_fs, b"f", dst_fs, corrupt)
    assert tmp_entries(dst) == []


def test_copy_skips_a_source_changed_before_the_copy(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(src / "f", b"old")
    expected = entry_of(src, "f")
    write(src / "f", b"new!", mtime_ns=MTIME_NS + 1)
    with pytest.raises(SourceChanged):
        copy_to_temp(src_fs, b"f", dst_fs, expected)
    assert tmp_entries(dst) == []


def test_copy_skips_a_source_changed_during_the_copy(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    path = src / "big"
    write(path, os.urandom(3 * CHUNK_BYTES))
    expected = entry_of(src, "big")
    calls = 0

    def writer_meanwhile() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the first chunk landed
            with open(path, "r+b") as f:
                f.seek(2 * CHUNK_BYTES)
                f.write(b"changed behind our back")

    with pytest.raises(SourceChanged):
        copy_to_temp(src_fs, b"big", dst_fs, expected, checkpoint=writer_meanwhile)
    assert tmp_entries(dst) == []


def test_copy_skips_a_source_that_vanished(roots: Roots) -> None:
    src, _dst, src_fs, dst_fs = roots
    write(src / "f", b"x")
    expected = entry_of(src, "f")
    (src / "f").unlink()
    with pytest.raises(SourceChanged):
        copy_to_temp(src_fs, b"f", dst_fs, expected)


def test_copy_does_not_follow_a_source_swapped_for_a_symlink(
    roots: Roots, tmp_path: Path
) -> None:
    src, dst, src_fs, dst_fs = roots
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the root")
    write(src / "f", b"x")
    expected = entry_of(src, "f")
    (src / "f").unlink()
    (src / "f").symlink_to(secret)
    with pytest.raises(SourceChanged):
        copy_to_temp(src_fs, b"f", dst_fs, expected)
    assert tmp_entries(dst) == []


def test_copy_abandoned_by_checkpoint_removes_the_temp(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(src / "big", os.urandom(4 * CHUNK_BYTES))
    calls = 0

    class Stop(BaseException):
        pass

    def cancel_on_third_chunk() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Stop

    with pytest.raises(Stop):
        copy_to_temp(
            src_fs,
            b"big",
            dst_fs,
            entry_of(src, "big"),
            checkpoint=cancel_on_third_chunk,
        )
    assert tmp_entries(dst) == []


def test_copy_recreates_symlink_without_following_it(
    roots: Roots, tmp_path: Path
) -> None:
    src, dst, src_fs, dst_fs = roots
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not ours")
    link = src / "link"
    link.symlink_to(outside)
    os.utime(link, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    expected = entry_of(src, "link")

    temp = copy_to_temp(src_fs, b"link", dst_fs, expected)

    landed = dst / os.fsdecode(temp.tmp_rel)
    assert landed.is_symlink()
    assert os.readlink(landed) == str(outside)
    assert os.lstat(landed).st_mtime_ns == MTIME_NS
    assert temp.kind is EntryKind.SYMLINK
    assert outside.read_bytes() == b"not ours"


def test_copy_skips_a_symlink_whose_target_changed(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    (src / "link").symlink_to("a")
    expected = entry_of(src, "link")
    changed = dataclasses.replace(expected, symlink_target=b"b")
    with pytest.raises(SourceChanged):
        copy_to_temp(src_fs, b"link", dst_fs, changed)
    assert tmp_entries(dst) == []


def test_copy_keeps_holes_of_a_sparse_file(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    size = 64 * CHUNK_BYTES
    path = src / "sparse"
    with open(path, "wb") as f:
        f.write(b"head")
        f.seek(size - 4)
        f.write(b"tail")
    if os.stat(path).st_blocks * 512 >= size:
        pytest.skip("this filesystem does not keep holes")
    expected = entry_of(src, "sparse")

    temp = copy_to_temp(src_fs, b"sparse", dst_fs, expected)

    landed = dst / os.fsdecode(temp.tmp_rel)
    assert blake3.blake3(landed.read_bytes()).hexdigest() == expected.content_id
    assert os.stat(landed).st_size == size
    assert os.stat(landed).st_blocks * 512 < 4 * CHUNK_BYTES


def test_copy_of_a_large_file_uses_constant_memory(roots: Roots) -> None:
    src, _dst, src_fs, dst_fs = roots
    write(src / "large", os.urandom(24 * CHUNK_BYTES))
    expected = entry_of(src, "large")
    tracemalloc.start()
    try:
        copy_to_temp(src_fs, b"large", dst_fs, expected)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * CHUNK_BYTES


def test_copy_waits_on_the_rate_limiter_for_every_byte(roots: Roots) -> None:
    src, _dst, src_fs, dst_fs = roots
    write(src / "f", os.urandom(2 * CHUNK_BYTES + 5))
    granted: list[int] = []

    class CountingLimiter(RateLimiter):
        def acquire(self, size_bytes: int, checkpoint: object = None) -> None:  # type: ignore[override]  # test double records only
            granted.append(size_bytes)

    copy_to_temp(src_fs, b"f", dst_fs, entry_of(src, "f"), CountingLimiter(1))
    assert sum(granted) == 2 * CHUNK_BYTES + 5
    assert max(granted) <= CHUNK_BYTES


def test_copy_fsync_marks_the_temp_synced(roots: Roots) -> None:
    src, _dst, src_fs, dst_fs = roots
    write(src / "f", b"x")
    temp = copy_to_temp(src_fs, b"f", dst_fs, entry_of(src, "f"), fsync=True)
    assert temp.synced


def test_copy_refuses_internal_paths_and_unreadable_entries(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(src / "f", b"x")
    expected = entry_of(src, "f")
    with pytest.raises(UnsafePath):
        copy_to_temp(src_fs, b".conduitd/marker", dst_fs, expected)
    with pytest.raises(UnsafePath):
        copy_to_temp(src_fs, b"../f", dst_fs, expected)
    unreadable = dataclasses.replace(expected, unreadable=True)
    with pytest.raises(UnreadableEntry):
        copy_to_temp(src_fs, b"f", dst_fs, unreadable)
    assert tmp_entries(dst) == []
