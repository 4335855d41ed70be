"""Mirror runs as `nobody`, where file modes really apply (CI runs as root).

An unreadable source file is counted, its target copy kept and the rest
synced (exit 1); a read-only target fails per path, loses nothing and writes
nothing (issue 5, DESIGN.md Jobs and Safety).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.mirror import Mirror, full_snapshot, listing, make_mirror, write
from helpers.unprivileged import (
    drop_privileges_prefix,
    give_to_unprivileged,
    make_traversable,
    run_conduitd_unprivileged,
)


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    drop_privileges_prefix()  # skips with the reason when it cannot work
    # Not under tmp_path: another pytest session starting meanwhile resets
    # /tmp/pytest-of-<user> to 0700, and `nobody` could no longer get in.
    base = Path(tempfile.mkdtemp(prefix="conduitd-mirror-"))
    try:
        make_traversable(base)
        m = make_mirror(base, create_target=True, max_delete_percent=100)
        m.state_dir.mkdir(mode=0o700)
        give_to_unprivileged(m.state_dir)
        yield m
    finally:
        for dirpath, dirnames, _files in os.walk(base):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755, follow_symlinks=False)
        shutil.rmtree(base)


def sync_as_nobody(m: Mirror) -> tuple[int, Any, str]:
    done = run_conduitd_unprivileged(
        ["--config", str(m.config), "sync", m.name, "--json"]
    )
    return done.returncode, json.loads(done.stdout), done.stderr


def test_mirror_unreadable_source_file_is_counted_kept_and_the_rest_synced(
    mirror: Mirror,
) -> None:
    write(mirror.source / "secret.txt", b"v1")
    write(mirror.source / "open.txt", b"open v1")
    write(mirror.source / "private" / "inner.txt", b"inner v1")
    give_to_unprivileged(mirror.source, mirror.target)
    code, _first, stderr = sync_as_nobody(mirror)
    assert code == 0, stderr
    assert listing(mirror.target) == listing(mirror.source)

    write(mirror.source / "secret.txt", b"v2, unreadable")
    write(mirror.source / "open.txt", b"open v2")
    write(mirror.source / "new.txt", b"new")
    write(mirror.source / "hidden-new.txt", b"never seen")
    (mirror.source / "private" / "inner.txt").unlink()
    give_to_unprivileged(mirror.source)
    os.chmod(mirror.source / "secret.txt", 0)
    os.chmod(mirror.source / "hidden-new.txt", 0)
    try:
        code, second, stderr = sync_as_nobody(mirror)
    finally:
        os.chmod(mirror.source / "secret.txt", 0o644)
        os.chmod(mirror.source / "hidden-new.txt", 0o644)

    assert code == 1, (second, stderr)
    assert "Traceback" not in stderr
    assert second["errors_encountered"] >= 1
    assert (mirror.target / "secret.txt").read_bytes() == b"v1"  # kept
    assert not (mirror.target / "hidden-new.txt").exists()
    assert (mirror.target / "open.txt").read_bytes() == b"open v2"
    assert (mirror.target / "new.txt").read_bytes() == b"new"
    assert not (mirror.target / "private" / "inner.txt").exists()


def test_mirror_unreadable_source_directory_deletes_nothing_beneath_it(
    mirror: Mirror,
) -> None:
    write(mirror.source / "private" / "a.txt", b"a")
    write(mirror.source / "private" / "b.txt", b"b")
    write(mirror.source / "open.txt", b"open")
    give_to_unprivileged(mirror.source, mirror.target)
    code, _doc, stderr = sync_as_nobody(mirror)
    assert code == 0, stderr

    (mirror.source / "private" / "a.txt").unlink()  # unseen behind mode 0
    write(mirror.source / "private" / "c.txt", b"c")
    give_to_unprivileged(mirror.source)
    os.chmod(mirror.source / "private", 0)
    try:
        code, doc, stderr = sync_as_nobody(mirror)
    finally:
        os.chmod(mirror.source / "private", 0o755)

    assert code == 1, (doc, stderr)
    assert doc["errors_encountered"] >= 1
    assert doc["files_deleted"] == 0
    assert (mirror.target / "private" / "a.txt").read_bytes() == b"a"
    assert (mirror.target / "private" / "b.txt").read_bytes() == b"b"
    assert not (mirror.target / "private" / "c.txt").exists()


def test_mirror_read_only_target_fails_per_path_and_writes_nothing(
    mirror: Mirror,
) -> None:
    write(mirror.source / "a.txt", b"a")
    write(mirror.source / "d" / "b.txt", b"b")
    write(mirror.target / "old.txt", b"target only")
    give_to_unprivileged(mirror.source)  # the target stays root's, 0755
    before = full_snapshot(mirror.target)

    code, doc, stderr = sync_as_nobody(mirror)

    assert code == 1, (doc, stderr)
    assert "Traceback" not in stderr
    assert doc["errors_encountered"] >= 2
    assert doc["files_copied"] == 0
    assert doc["files_deleted"] == 0
    assert full_snapshot(mirror.target) == before


def test_mirror_read_only_directory_in_the_target_fails_only_its_paths(
    mirror: Mirror,
) -> None:
    write(mirror.source / "a.txt", b"a")
    write(mirror.source / "ro" / "x.txt", b"x")
    give_to_unprivileged(mirror.source, mirror.target)
    code, _doc, stderr = sync_as_nobody(mirror)
    assert code == 0, stderr
    write(mirror.source / "a.txt", b"a2")
    write(mirror.source / "ro" / "x.txt", b"x2")
    write(mirror.source / "ro" / "y.txt", b"y")
    give_to_unprivileged(mirror.source)
    os.chown(mirror.target / "ro", 0, 0)
    os.chmod(mirror.target / "ro", 0o755)

    code, doc, stderr = sync_as_nobody(mirror)

    assert code == 1, (doc, stderr)
    assert doc["errors_encountered"] == 2
    assert (mirror.target / "a.txt").read_bytes() == b"a2"
    assert (mirror.target / "ro" / "x.txt").read_bytes() == b"x"
    assert not (mirror.target / "ro" / "y.txt").exists()
