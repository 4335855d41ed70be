"""The blocking trash primitives: pruning and restoring never follow a symlink
and never touch anything outside the trash they were given."""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest

from conduitd.jobs.restore import VersionDamaged, VersionMissing, restore_into_root
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.trash import link_to_trash, move_to_trash
from conduitd.jobs.trash_prune import prune_trashed


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root whose generation 3 trashed a directory tree `album/`."""
    top = tmp_path / "root"
    album = top / ".conduitd" / "trash" / "3" / "album"
    (album / "locked").mkdir(parents=True)
    (album / "a.jpg").write_text("a")
    (album / "locked" / "b.jpg").write_text("b")
    (tmp_path / "outside.txt").write_text("not ours")
    (album / "link").symlink_to(tmp_path / "outside.txt")
    (album / "locked").chmod(0o555)
    return top


def test_pruning_a_trashed_tree_removes_links_not_their_targets(
    tmp_path: Path, root: Path
) -> None:
    report = prune_trashed(
        os.fsencode(root), [b".conduitd/trash/3/album", b".conduitd/trash/9/none"]
    )
    assert report.failed == []
    assert (tmp_path / "outside.txt").read_text() == "not ours"
    assert os.listdir(root / ".conduitd" / "trash") == []


def test_pruning_refuses_paths_outside_the_trash_and_unmounted_roots(
    tmp_path: Path, root: Path
) -> None:
    (root / "user.txt").write_text("mine")
    report = prune_trashed(os.fsencode(root), [b"user.txt", b".conduitd/marker"])
    assert [rel for rel, _ in report.failed] == [b"user.txt", b".conduitd/marker"]
    assert (root / "user.txt").exists()
    empty = tmp_path / "mount-point"
    empty.mkdir()
    report = prune_trashed(os.fsencode(empty), [b".conduitd/trash/3/album"])
    assert report.removed == []  # no .conduitd: the disk is elsewhere


def test_restoring_a_trashed_tree_recreates_symlinks_as_links(
    tmp_path: Path, root: Path
) -> None:
    with RootFs(root) as fs:
        restore_into_root(
            fs,
            b".conduitd/trash/3/album",
            fs,
            b"photos/album",
            generation=4,
            content_id=None,
        )
        with pytest.raises(VersionMissing):
            restore_into_root(
                fs, b".conduitd/trash/3/gone", fs, b"x", generation=4, content_id=None
            )
        with pytest.raises(VersionDamaged):
            restore_into_root(
                fs,
                b".conduitd/trash/3/album/a.jpg",
                fs,
                b"a.jpg",
                generation=4,
                content_id="0" * 64,
            )
    album = root / "photos" / "album"
    assert (album / "locked" / "b.jpg").read_text() == "b"
    assert os.readlink(album / "link") == str(tmp_path / "outside.txt")
    assert (album / "locked").stat().st_mode & 0o777 == 0o555
    assert not (root / "a.jpg").exists()
    assert os.listdir(root / ".conduitd" / "tmp") == []
    (album / "locked").chmod(0o755)  # let pytest clean up


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("how", ["link", "move"])
def test_a_trash_directory_removed_behind_a_run_is_made_again(
    tmp_path: Path, how: str, cached: bool
) -> None:
    """A run remembers the trash directories it made (one mkdir each, not one
    per file); one removed meanwhile is made again, and nothing is lost."""
    top = tmp_path / "root"
    (top / "d").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (top / "d" / name).write_text(name)
    trash = top / ".conduitd" / "trash" / "4"
    put = link_to_trash if how == "link" else move_to_trash
    with RootFs(top) as fs, fs.cached_dirs() if cached else nullcontext():
        put(fs, b"d/a", 4)
        shutil.rmtree(trash)  # e.g. `trash purge` from another terminal
        put(fs, b"d/b", 4)
        assert (trash / "d" / "b").read_text() == "b"
        shutil.rmtree(trash / "d")
        put(fs, b"d/c", 4)
    assert os.listdir(trash / "d") == ["c"]
    assert (trash / "d" / "c").read_text() == "c"
    assert (top / "d" / "c").exists() == (how == "link")
