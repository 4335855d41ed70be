"""delete_entry and update_metadata against real directories."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduitd.errors import UnsafePath
from conduitd.jobs import (
    DeleteStatus,
    MetadataStatus,
    PathFailed,
    RootFs,
    TrashReason,
    UnreadableEntry,
    delete_entry,
    update_metadata,
)
from conduitd.jobs.trash import link_to_trash, move_to_trash
from helpers.trees import entry_of, tree_digest

MTIME_NS = 1_500_000_000_000_000_001


def write(
    path: Path, data: bytes, *, mode: int = 0o644, mtime_ns: int = MTIME_NS
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, RootFs]]:
    path = tmp_path / "root"
    path.mkdir()
    with RootFs(path) as fs:
        yield path, fs


Root = tuple[Path, RootFs]


def test_delete_moves_a_file_to_trash(root: Root) -> None:
    path, fs = root
    write(path / "d" / "a.txt", b"bye")
    expected = entry_of(path, "d/a.txt")

    outcome = delete_entry(fs, b"d/a.txt", expected, generation=5, strategy="trash")

    assert outcome.status is DeleteStatus.DELETED
    assert not (path / "d" / "a.txt").exists()
    trashed = path / ".conduitd" / "trash" / "5" / "d" / "a.txt"
    assert trashed.read_bytes() == b"bye"
    assert outcome.trashed is not None
    assert outcome.trashed.reason is TrashReason.DELETED
    assert outcome.trashed.content_id == expected.content_id
    assert outcome.trashed.mtime_ns == MTIME_NS
    assert stat.S_IMODE(os.stat(path / ".conduitd" / "trash").st_mode) == 0o700


def test_delete_numbers_a_name_deleted_twice_in_one_generation(root: Root) -> None:
    path, fs = root
    for body in (b"first", b"second", b"third"):
        write(path / "Makefile", body)
        delete_entry(
            fs, b"Makefile", entry_of(path, "Makefile"), generation=2, strategy="trash"
        )
    trash = path / ".conduitd" / "trash" / "2"
    assert (trash / "Makefile").read_bytes() == b"first"
    assert (trash / "Makefile~1").read_bytes() == b"second"
    assert (trash / "Makefile~2").read_bytes() == b"third"


def test_delete_skips_an_entry_changed_since_resolution(root: Root) -> None:
    path, fs = root
    write(path / "a", b"seen")
    expected = entry_of(path, "a")
    write(path / "a", b"unseen edit", mtime_ns=MTIME_NS + 1)
    outcome = delete_entry(fs, b"a", expected, generation=1, strategy="trash")
    assert outcome.status is DeleteStatus.SKIPPED_CHANGED
    assert (path / "a").read_bytes() == b"unseen edit"


def test_delete_skips_an_entry_replaced_by_another_file(root: Root) -> None:
    path, fs = root
    write(path / "a", b"same")
    expected = entry_of(path, "a")
    (path / "a").rename(path / "kept")  # keeps the inode number taken
    write(path / "a", b"same")  # same size and mtime, another inode
    outcome = delete_entry(fs, b"a", expected, generation=1, strategy="permanent")
    assert outcome.status is DeleteStatus.SKIPPED_CHANGED
    assert (path / "a").exists()


def test_delete_skips_a_vanished_entry(root: Root) -> None:
    path, fs = root
    write(path / "a", b"x")
    expected = entry_of(path, "a")
    (path / "a").unlink()
    outcome = delete_entry(fs, b"a", expected, generation=1, strategy="trash")
    assert outcome.status is DeleteStatus.SKIPPED_VANISHED


def test_permanent_delete_leaves_nothing_behind(root: Root) -> None:
    path, fs = root
    write(path / "a", b"x")
    outcome = delete_entry(
        fs, b"a", entry_of(path, "a"), generation=1, strategy="permanent"
    )
    assert outcome.status is DeleteStatus.DELETED
    assert outcome.trashed is None
    assert not (path / "a").exists()
    assert os.listdir(path / ".conduitd" / "tmp") == []
    assert not (path / ".conduitd" / "trash").exists()


def test_delete_removes_a_symlink_not_its_target(root: Root, tmp_path: Path) -> None:
    path, fs = root
    target = tmp_path / "target.txt"
    target.write_bytes(b"keep me")
    (path / "link").symlink_to(target)
    outcome = delete_entry(
        fs, b"link", entry_of(path, "link"), generation=1, strategy="trash"
    )
    assert outcome.status is DeleteStatus.DELETED
    assert target.read_bytes() == b"keep me"
    assert (path / ".conduitd" / "trash" / "1" / "link").is_symlink()


def test_delete_removes_an_empty_directory(root: Root) -> None:
    path, fs = root
    (path / "empty").mkdir()
    outcome = delete_entry(
        fs, b"empty", entry_of(path, "empty"), generation=1, strategy="trash"
    )
    assert outcome.status is DeleteStatus.DELETED
    assert not (path / "empty").exists()


def test_delete_never_removes_a_non_empty_directory(root: Root) -> None:
    path, fs = root
    write(path / "full" / "keep.txt", b"unseen child")
    outcome = delete_entry(
        fs, b"full", entry_of(path, "full"), generation=1, strategy="permanent"
    )
    assert outcome.status is DeleteStatus.SKIPPED_NOT_EMPTY
    assert (path / "full" / "keep.txt").read_bytes() == b"unseen child"


def test_delete_refuses_an_unreadable_entry(root: Root) -> None:
    path, fs = root
    write(path / "a", b"x")
    flagged = dataclasses.replace(entry_of(path, "a"), unreadable=True)
    with pytest.raises(UnreadableEntry):
        delete_entry(fs, b"a", flagged, generation=1, strategy="trash")
    assert (path / "a").exists()


def test_delete_refuses_the_internal_area_and_unsafe_paths(root: Root) -> None:
    path, fs = root
    write(path / ".conduitd" / "marker", b"{}")
    expected = entry_of(path, ".conduitd/marker")
    for rel in (b".conduitd/marker", b"a/../.conduitd/marker", b"/etc/passwd", b""):
        with pytest.raises(UnsafePath):
            delete_entry(fs, rel, expected, generation=1, strategy="permanent")
    assert (path / ".conduitd" / "marker").exists()


@pytest.mark.parametrize("strategy", ["trash", "permanent"])
def test_delete_through_a_parent_swapped_for_an_outside_symlink_fails(
    root: Root, tmp_path: Path, strategy: str
) -> None:
    path, fs = root
    outside = tmp_path / "outside"
    write(outside / "a.txt", b"must survive")
    write(path / "d" / "a.txt", b"must survive")
    expected = entry_of(path, "d/a.txt")
    os.utime(outside / "a.txt", ns=(MTIME_NS, MTIME_NS))
    before = tree_digest(outside)
    (path / "d" / "a.txt").unlink()
    (path / "d").rmdir()
    (path / "d").symlink_to(outside)

    with pytest.raises(PathFailed):
        delete_entry(fs, b"d/a.txt", expected, generation=1, strategy=strategy)

    assert tree_digest(outside) == before


def test_trash_parent_taken_by_a_trashed_file_gets_numbered(root: Root) -> None:
    path, fs = root
    write(path / "x", b"a file named x")
    move_to_trash(fs, b"x", 3)
    write(path / "x" / "y", b"later a directory x with a child")
    item = move_to_trash(fs, b"x/y", 3)
    assert item.trash_rel == b".conduitd/trash/3/x~1/y"
    assert (path / ".conduitd" / "trash" / "3" / "x").read_bytes() == b"a file named x"


def test_link_to_trash_keeps_the_original_in_place(root: Root) -> None:
    path, fs = root
    write(path / "a", b"v1")
    item = link_to_trash(fs, b"a", 1, expected=entry_of(path, "a"))
    assert not item.vacated
    assert (path / "a").read_bytes() == b"v1"
    assert (
        os.lstat(path / os.fsdecode(item.trash_rel)).st_ino
        == os.lstat(path / "a").st_ino
    )


def test_link_to_trash_moves_a_directory(root: Root) -> None:
    path, fs = root
    write(path / "d" / "f", b"x")
    item = link_to_trash(fs, b"d", 1)
    assert item.vacated
    assert not (path / "d").exists()
    assert (path / ".conduitd" / "trash" / "1" / "d" / "f").read_bytes() == b"x"


# -- metadata -------------------------------------------------------------------


def test_update_metadata_sets_mode_and_mtime_in_place(root: Root) -> None:
    path, fs = root
    write(path / "a", b"same content", mode=0o600)
    target = entry_of(path, "a")
    source = dataclasses.replace(
        target, mode=stat.S_IFREG | 0o751, mtime_ns=MTIME_NS + 42
    )

    outcome = update_metadata(fs, b"a", source, target)

    st = os.lstat(path / "a")
    assert outcome.status is MetadataStatus.UPDATED
    assert st.st_ino == target.inode
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert st.st_mtime_ns == MTIME_NS + 42


def test_update_metadata_skips_a_changed_target(root: Root) -> None:
    path, fs = root
    write(path / "a", b"v1", mode=0o600)
    target = entry_of(path, "a")
    write(path / "a", b"v2 longer", mode=0o600)
    source = dataclasses.replace(target, mode=stat.S_IFREG | 0o777)
    outcome = update_metadata(fs, b"a", source, target)
    assert outcome.status is MetadataStatus.SKIPPED_CHANGED
    assert stat.S_IMODE(os.lstat(path / "a").st_mode) == 0o600


def test_update_metadata_of_a_symlink_sets_its_own_mtime(
    root: Root, tmp_path: Path
) -> None:
    path, fs = root
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"x")
    os.utime(outside, ns=(MTIME_NS, MTIME_NS))
    (path / "l").symlink_to(outside)
    target = entry_of(path, "l")
    source = dataclasses.replace(target, mtime_ns=MTIME_NS + 7)

    outcome = update_metadata(fs, b"l", source, target)

    assert outcome.status is MetadataStatus.UPDATED
    assert os.lstat(path / "l").st_mtime_ns == MTIME_NS + 7
    assert os.stat(outside).st_mtime_ns == MTIME_NS


def test_update_metadata_of_a_directory(root: Root) -> None:
    path, fs = root
    (path / "d").mkdir(mode=0o755)
    target = entry_of(path, "d")
    source = dataclasses.replace(target, mode=stat.S_IFDIR | 0o750, mtime_ns=MTIME_NS)
    assert update_metadata(fs, b"d", source, target).status is MetadataStatus.UPDATED
    st = os.lstat(path / "d")
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_mtime_ns == MTIME_NS


def test_update_metadata_through_a_swapped_parent_fails(
    root: Root, tmp_path: Path
) -> None:
    path, fs = root
    outside = tmp_path / "outside"
    write(outside / "a", b"x", mode=0o600)
    write(path / "d" / "a", b"x", mode=0o600)
    target = entry_of(path, "d/a")
    before = tree_digest(outside)
    (path / "d" / "a").unlink()
    (path / "d").rmdir()
    (path / "d").symlink_to(outside)
    with pytest.raises(PathFailed):
        update_metadata(fs, b"d/a", dataclasses.replace(target, mode=0o777), target)
    assert tree_digest(outside) == before
