"""commit_batch against real directories: re-checks, trash, kind changes, fsync."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduitd.jobs import (
    Durability,
    DurabilityError,
    PendingReplace,
    ReplaceStatus,
    RootFs,
    TempFile,
    TrashReason,
    commit_batch,
    copy_to_temp,
)
from conduitd.storage.models import EntryKind
from helpers.trees import entry_of, tmp_entries, tree_digest

MTIME_NS = 1_600_000_000_123_456_789


def write(
    path: Path, data: bytes, *, mode: int = 0o644, mtime_ns: int = MTIME_NS
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


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


Roots = tuple[Path, Path, RootFs, RootFs]


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[Roots]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with RootFs(src) as src_fs, RootFs(dst) as dst_fs:
        yield src, dst, src_fs, dst_fs


def staged(
    src: Path, src_fs: RootFs, dst_fs: RootFs, rel: str, data: bytes
) -> TempFile:
    write(src / rel, data)
    return copy_to_temp(src_fs, os.fsencode(rel), dst_fs, entry_of(src, rel))


def test_commit_puts_a_new_file_in_place(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    (dst / "d").mkdir()
    temp = staged(src, src_fs, dst_fs, "d/new.txt", b"fresh")

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"d/new.txt", None)],
        generation=1,
        trash=True,
        durable=Durability.SYNCFS,
    )

    assert outcome.status is ReplaceStatus.REPLACED
    assert outcome.trashed is None
    assert (dst / "d" / "new.txt").read_bytes() == b"fresh"
    assert os.lstat(dst / "d" / "new.txt").st_mtime_ns == MTIME_NS
    assert tmp_entries(dst) == []


def test_commit_never_overwrites_a_target_that_appeared(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    temp = staged(src, src_fs, dst_fs, "a.txt", b"ours")
    write(dst / "a.txt", b"the user's, unseen")

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"a.txt", None)],
        generation=1,
        trash=True,
        durable=Durability.SYNCFS,
    )

    assert outcome.status is ReplaceStatus.SKIPPED_TARGET_CHANGED
    assert (dst / "a.txt").read_bytes() == b"the user's, unseen"
    assert tmp_entries(dst) == []


def test_commit_never_overwrites_a_target_changed_since_resolution(
    roots: Roots,
) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "a.txt", b"old")
    seen = entry_of(dst, "a.txt")
    temp = staged(src, src_fs, dst_fs, "a.txt", b"ours")
    write(dst / "a.txt", b"edited after resolution", mtime_ns=MTIME_NS + 5)

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"a.txt", seen)],
        generation=1,
        trash=True,
        durable=Durability.SYNCFS,
    )

    assert outcome.status is ReplaceStatus.SKIPPED_TARGET_CHANGED
    assert (dst / "a.txt").read_bytes() == b"edited after resolution"
    assert not (dst / ".conduitd" / "trash" / "1" / "a.txt").exists()
    assert tmp_entries(dst) == []


def test_commit_overwrite_hard_links_the_old_version_into_trash(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "docs" / "a.txt", b"old version")
    old = entry_of(dst, "docs/a.txt")
    temp = staged(src, src_fs, dst_fs, "docs/a.txt", b"new version")

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"docs/a.txt", old)],
        generation=4,
        trash=True,
        durable=Durability.SYNCFS,
    )

    trashed_path = dst / ".conduitd" / "trash" / "4" / "docs" / "a.txt"
    assert outcome.status is ReplaceStatus.REPLACED
    assert (dst / "docs" / "a.txt").read_bytes() == b"new version"
    assert trashed_path.read_bytes() == b"old version"
    assert os.lstat(trashed_path).st_ino == old.inode
    assert outcome.trashed is not None
    assert outcome.trashed.trash_rel == b".conduitd/trash/4/docs/a.txt"
    assert outcome.trashed.reason is TrashReason.OVERWRITTEN
    assert outcome.trashed.size == len(b"old version")
    assert outcome.trashed.mtime_ns == MTIME_NS
    assert outcome.trashed.content_id == old.content_id


def test_commit_numbers_a_name_trashed_twice_in_one_generation(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "a.txt", b"v1")
    for version in (b"v2", b"v3"):
        seen = entry_of(dst, "a.txt")
        temp = staged(src, src_fs, dst_fs, "a.txt", version)
        commit_batch(
            dst_fs,
            [PendingReplace(temp, b"a.txt", seen, TrashReason.CONFLICT)],
            generation=9,
            trash=True,
            durable=Durability.SYNCFS,
        )
    trash = dst / ".conduitd" / "trash" / "9"
    assert (trash / "a.txt").read_bytes() == b"v1"
    assert (trash / "a~1.txt").read_bytes() == b"v2"
    assert (dst / "a.txt").read_bytes() == b"v3"


def test_commit_without_trash_replaces_in_place(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "a.txt", b"old")
    temp = staged(src, src_fs, dst_fs, "a.txt", b"new")
    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"a.txt", entry_of(dst, "a.txt"))],
        generation=1,
        trash=False,
        durable=Durability.FSYNC,
    )
    assert outcome.status is ReplaceStatus.REPLACED
    assert outcome.trashed is None
    assert (dst / "a.txt").read_bytes() == b"new"
    assert not (dst / ".conduitd" / "trash").exists()


@pytest.mark.parametrize("trash", [True, False])
def test_commit_file_over_directory_moves_the_directory_to_trash(
    roots: Roots, trash: bool
) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "x" / "child.txt", b"inside the old directory")
    old_dir = entry_of(dst, "x")
    temp = staged(src, src_fs, dst_fs, "x", b"now a file")

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"x", old_dir)],
        generation=2,
        trash=trash,
        durable=Durability.SYNCFS,
    )

    assert outcome.status is ReplaceStatus.REPLACED
    assert (dst / "x").read_bytes() == b"now a file"
    assert outcome.trashed is not None
    assert outcome.trashed.kind is EntryKind.DIRECTORY
    moved = dst / os.fsdecode(outcome.trashed.trash_rel)
    assert (moved / "child.txt").read_bytes() == b"inside the old directory"


def test_commit_file_over_empty_directory_without_trash_removes_it(
    roots: Roots,
) -> None:
    src, dst, src_fs, dst_fs = roots
    (dst / "x").mkdir()
    old_dir = entry_of(dst, "x")
    temp = staged(src, src_fs, dst_fs, "x", b"file")
    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"x", old_dir)],
        generation=2,
        trash=False,
        durable=Durability.SYNCFS,
    )
    assert outcome.status is ReplaceStatus.REPLACED
    assert outcome.trashed is None
    assert (dst / "x").read_bytes() == b"file"


def test_commit_symlink_over_file_trashes_the_file(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "l", b"was a file")
    old = entry_of(dst, "l")
    (src / "l").symlink_to("elsewhere")
    temp = copy_to_temp(src_fs, b"l", dst_fs, entry_of(src, "l"))

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"l", old)],
        generation=3,
        trash=True,
        durable=Durability.SYNCFS,
    )

    assert outcome.status is ReplaceStatus.REPLACED
    assert os.readlink(dst / "l") == "elsewhere"
    assert (dst / ".conduitd" / "trash" / "3" / "l").read_bytes() == b"was a file"
    assert outcome.trashed is not None
    assert outcome.trashed.vacated


def test_commit_fsync_error_drops_the_temps_and_raises(
    roots: Roots, tmp_path: Path
) -> None:
    src, dst, src_fs, _dst_fs = roots
    with FlakySyncRoot(dst, failures=1) as flaky:
        temps = [staged(src, src_fs, flaky, name, name.encode()) for name in ("a", "b")]
        items = [PendingReplace(t, t.source.relative_path, None) for t in temps]
        with pytest.raises(DurabilityError) as caught:
            commit_batch(
                flaky, items, generation=1, trash=True, durable=Durability.SYNCFS
            )
    assert caught.value.items == tuple(items)
    assert caught.value.errno == errno.EIO
    assert tmp_entries(dst) == []
    assert not (dst / "a").exists()
    assert not (dst / "b").exists()


def test_commit_fsync_mode_fsyncs_each_file(roots: Roots) -> None:
    src, dst, src_fs, _dst_fs = roots
    with FlakySyncRoot(dst, failures=1) as flaky:
        temp = staged(src, src_fs, flaky, "a", b"a")
        with pytest.raises(DurabilityError):
            commit_batch(
                flaky,
                [PendingReplace(temp, b"a", None)],
                generation=1,
                trash=True,
                durable=Durability.FSYNC,
            )
        assert flaky.failures == 0  # it went through fsync_entry, not syncfs
    assert tmp_entries(dst) == []


def test_commit_into_a_parent_swapped_for_an_outside_symlink_fails(
    roots: Roots, tmp_path: Path
) -> None:
    src, dst, src_fs, dst_fs = roots
    outside = tmp_path / "outside"
    write(outside / "a.txt", b"must survive")
    (dst / "d").mkdir()
    write(dst / "d" / "a.txt", b"old")
    seen = entry_of(dst, "d/a.txt")
    temp = staged(src, src_fs, dst_fs, "d/a.txt", b"new")
    before = tree_digest(outside)
    (dst / "d" / "a.txt").unlink()
    (dst / "d").rmdir()
    (dst / "d").symlink_to(outside)

    [outcome] = commit_batch(
        dst_fs,
        [PendingReplace(temp, b"d/a.txt", seen)],
        generation=1,
        trash=True,
        durable=Durability.SYNCFS,
    )

    assert outcome.status is ReplaceStatus.FAILED
    assert outcome.error is not None
    assert tree_digest(outside) == before
    assert tmp_entries(dst) == []


def test_commit_batch_handles_each_item_on_its_own(roots: Roots) -> None:
    src, dst, src_fs, dst_fs = roots
    write(dst / "taken", b"user")
    good = staged(src, src_fs, dst_fs, "good", b"g")
    bad = staged(src, src_fs, dst_fs, "taken", b"t")
    outcomes = commit_batch(
        dst_fs,
        [PendingReplace(good, b"good", None), PendingReplace(bad, b"taken", None)],
        generation=1,
        trash=True,
        durable=Durability.SYNCFS,
    )
    assert [o.status for o in outcomes] == [
        ReplaceStatus.REPLACED,
        ReplaceStatus.SKIPPED_TARGET_CHANGED,
    ]
    assert (dst / "good").read_bytes() == b"g"
    assert (dst / "taken").read_bytes() == b"user"
    assert tmp_entries(dst) == []


def test_commit_overwrites_across_more_directories_than_one_thread_keeps_open(
    roots: Roots,
) -> None:
    """Every overwrite walks to its parent and to a trash directory; past the
    per-thread cache of open directories (64) nothing may be closed while in
    use (a reused descriptor number would point at another directory)."""
    src, dst, src_fs, dst_fs = roots
    # A new file first (one directory walked to, no trash), then overwrites
    # (two each, the second inside a rename or link of the first): the cache
    # fills up in the middle of an operation.
    (dst / "new").mkdir()
    first = PendingReplace(
        staged(src, src_fs, dst_fs, "new/f.txt", b"new"), b"new/f.txt", None
    )
    rels = [f"d{i:03d}/sub/f.txt" for i in range(150)]
    olds = {}
    for rel in rels:
        write(dst / rel, f"old {rel}".encode())
        olds[rel] = entry_of(dst, rel)
    items = [first] + [
        PendingReplace(
            staged(src, src_fs, dst_fs, rel, f"new {rel}".encode()),
            os.fsencode(rel),
            olds[rel],
        )
        for rel in rels
    ]

    outcomes = commit_batch(
        dst_fs, items, generation=9, trash=True, durable=Durability.SYNCFS
    )

    assert [o.status for o in outcomes] == [ReplaceStatus.REPLACED] * len(items)
    assert (dst / "new" / "f.txt").read_bytes() == b"new"
    for rel in rels:
        assert (dst / rel).read_bytes() == f"new {rel}".encode()
        trashed = dst / ".conduitd" / "trash" / "9" / rel
        assert trashed.read_bytes() == f"old {rel}".encode()
    assert tmp_entries(dst) == []
