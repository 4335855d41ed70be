"""RootFs: dir_fd-relative operations on a real root."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduitd.errors import UnsafePath
from conduitd.jobs import RootFs
from conduitd.storage.models import EntryKind, EntryRow


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, RootFs]]:
    path = tmp_path / "root"
    path.mkdir()
    with RootFs(path) as fs:
        yield path, fs


Root = tuple[Path, RootFs]


def test_makedirs_for_creates_parents_first_with_source_modes(root: Root) -> None:
    path, fs = root
    source = EntryRow(b"a/b", EntryKind.DIRECTORY, 0, 0, stat.S_IFDIR | 0o711)
    old = os.umask(0o077)
    try:
        created = fs.makedirs_for(b"a/b/c/file.txt", {b"a/b": source})
    finally:
        os.umask(old)
    assert created == [b"a", b"a/b", b"a/b/c"]
    assert stat.S_IMODE(os.stat(path / "a").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(path / "a" / "b").st_mode) == 0o711
    assert fs.makedirs_for(b"a/b/c/file.txt") == []


def test_mkdir_mode_is_explicit_whatever_the_umask(root: Root) -> None:
    path, fs = root
    old = os.umask(0o777)
    try:
        fs.mkdir(b"d", 0o750)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path / "d").st_mode) == 0o750


def test_walk_refuses_a_symlinked_parent(root: Root, tmp_path: Path) -> None:
    path, fs = root
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"x")
    (path / "link").symlink_to(outside)
    with pytest.raises(OSError, match=r"symbolic links|Not a directory") as caught:
        fs.lstat(b"link/f")
    assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(OSError, match=r"symbolic links|Not a directory"):
        fs.makedirs_for(b"link/new/file")
    assert sorted(os.listdir(outside)) == ["f"]


def test_open_read_does_not_follow_a_final_symlink(root: Root, tmp_path: Path) -> None:
    path, fs = root
    (tmp_path / "secret").write_bytes(b"s")
    (path / "l").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError, match="symbolic links") as caught:
        fs.open_read(b"l")
    assert caught.value.errno == errno.ELOOP


def test_unsafe_paths_never_reach_the_filesystem(root: Root) -> None:
    _path, fs = root
    for rel in (b"../x", b"/etc", b"a/./b", b"a\0b"):
        with pytest.raises(UnsafePath):
            fs.lstat(rel)


def test_rename_within_without_replace_refuses_an_existing_name(root: Root) -> None:
    path, fs = root
    (path / "a").write_bytes(b"a")
    (path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        fs.rename_within(b"a", b"b", replace=False)
    assert (path / "b").read_bytes() == b"b"
    fs.rename_within(b"a", b"b", replace=True)
    assert (path / "b").read_bytes() == b"a"


def test_chmod_and_utime_leave_a_symlink_target_alone(
    root: Root, tmp_path: Path
) -> None:
    path, fs = root
    target = tmp_path / "target"
    target.write_bytes(b"t")
    os.chmod(target, 0o600)
    (path / "l").symlink_to(target)
    fs.chmod(b"l", 0o777)
    fs.utime(b"l", 123_456_789_000)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.lstat(path / "l").st_mtime_ns == 123_456_789_000
    assert os.stat(target).st_mtime_ns != 123_456_789_000


def test_temp_names_are_unique_short_ascii_in_a_private_directory(root: Root) -> None:
    path, fs = root
    names = {fs.tmp_path_for() for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert name.startswith(b".conduitd/tmp/")
        assert len(name.rpartition(b"/")[2]) <= 255
        assert name.isascii()
    assert stat.S_IMODE(os.stat(path / ".conduitd" / "tmp").st_mode) == 0o700


def test_syncfs_and_fsyncs_work_here(root: Root) -> None:
    path, fs = root
    (path / "f").write_bytes(b"x")
    (path / "l").symlink_to("f")
    assert fs.syncfs() in (True, False)
    fs.fsync_entry(b"f")
    fs.fsync_entry(b"l")
    fs.fsync_dir(b"")


def test_a_cached_directory_is_forgotten_at_every_rename_of_its_ancestor(
    tmp_path: Path,
) -> None:
    """Each rename of `a` drops what lies under it from the cache, the second
    time too: a write to `a/b/...` never lands in where `a` was moved."""
    top = tmp_path / "root"
    (top / "a" / "b").mkdir(parents=True)
    with RootFs(top) as fs, fs.cached_dirs():
        fs.mkdir(b"a/b/one", 0o755)
        fs.rename_within(b"a", b"y", replace=False)
        (top / "a" / "b").mkdir(parents=True)
        fs.mkdir(b"a/b/two", 0o755)
        fs.rename_within(b"a", b"z", replace=False)
        (top / "a" / "b").mkdir(parents=True)
        fs.mkdir(b"a/b/three", 0o755)
    assert os.listdir(top / "y" / "b") == ["one"]
    assert os.listdir(top / "z" / "b") == ["two"]
    assert os.listdir(top / "a" / "b") == ["three"]


def test_a_walk_from_a_cached_directory_still_refuses_a_swapped_in_symlink(
    tmp_path: Path,
) -> None:
    """A directory not cached yet is opened from its nearest cached ancestor,
    one no-follow step at a time as from the root: a component swapped for a
    symlink below that ancestor fails the walk, and nothing lands outside."""
    top, outside = tmp_path / "root", tmp_path / "outside"
    (top / "a" / "b" / "c").mkdir(parents=True)
    outside.mkdir()
    with RootFs(top) as fs, fs.cached_dirs():
        fs.mkdir(b"a/b/first", 0o755)  # `a/b` is cached from here on
        shutil.rmtree(top / "a" / "b" / "c")
        (top / "a" / "b" / "c").symlink_to(outside)
        with pytest.raises(OSError, match=r"Not a directory|symbolic links") as caught:
            fs.mkdir(b"a/b/c/escaped", 0o755)
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
        fs.mkdir(b"a/b/first/deeper", 0o755)  # from the cached `a/b`
    assert os.listdir(outside) == []
    assert (top / "a" / "b" / "first" / "deeper").is_dir()
