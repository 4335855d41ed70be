"""Permissions that only bite a plain user: unreadable paths, read-only roots.

CI runs as root, which ignores file modes, so each scan here runs in a
subprocess as `nobody` (tests/helpers/unprivileged.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from helpers.unprivileged import (
    drop_privileges_prefix,
    give_to_unprivileged,
    make_traversable,
)

SRC = Path(__file__).resolve().parents[2] / "src"

_SCAN = """
import json, sys
from pathlib import Path
import anyio
from conduitd.logs import configure_logging
from conduitd.index import Indexer
from conduitd.storage.entries import load_entry_map
from conduitd.storage.library import open_library
from conduitd.storage.locations import ensure_location

async def main(state, root, refresh):
    lib = await open_library(Path(state))
    try:
        async with lib.db.transaction() as tx:
            record, _ = await ensure_location(tx, str(lib.device_id), Path(root))
        indexer = Indexer.for_library(lib)
        if refresh:  # re-stat (and hash) those paths instead of a whole scan
            paths = [p.encode() for p in refresh.split(",")]
            report = await indexer.refresh(record.id, paths)
        else:
            report = await indexer.scan(record)
        location = await indexer.location(record.id)
        entries = await load_entry_map(lib.db, record.id)
        digests = await lib.db.fetch_all(
            "SELECT relative_path, listing_digest FROM entry"
            " WHERE location_id = ? AND kind = 1",
            (record.id,),
        )
    finally:
        await lib.close()
    print(json.dumps({
        "state": report.state.value,
        "unreadable": report.unreadable,
        "has_marker": location.has_marker,
        "st_dev": location.st_dev,
        "entries": {
            p.decode("utf-8", "surrogateescape"): {
                "unreadable": e.unreadable, "content_id": e.content_id, "kind": int(e.kind)
            }
            for p, e in entries.items()
        },
        "digests": {
            p.decode("utf-8", "surrogateescape"): None if d is None else d.hex()
            for p, d in digests
        },
    }))

configure_logging("warning")  # logs to stderr; stdout holds the JSON
anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
"""


def scan_as_nobody(state: Path, root: Path, refresh: str = "") -> dict[str, Any]:
    """A whole scan as `nobody`; or, given `refresh` (comma-separated paths),
    a refresh of those paths."""
    command = [
        *drop_privileges_prefix(),
        sys.executable,
        "-c",
        _SCAN,
        str(state),
        str(root),
        refresh,
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def cid(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@pytest.fixture
def place() -> Iterator[Path]:
    """A work directory `nobody` can reach, with a state dir it owns.

    Not under pytest's tmp_path: a pytest session started meanwhile (by anyone)
    sets /tmp/pytest-of-<user> back to 0700, which locks `nobody` out.
    """
    drop_privileges_prefix()  # skips with the reason when it cannot work
    work = Path(tempfile.mkdtemp(prefix="conduitd-index-nobody-", dir="/tmp"))
    try:
        make_traversable(work)
        state = work / "state"
        state.mkdir(mode=0o700)
        give_to_unprivileged(state)
        yield work
    finally:
        for path in work.rglob("*"):  # undo the chmods that lock out the cleanup
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(work, ignore_errors=True)


def test_unreadable_file_and_directory_keep_their_rows_flagged(place: Path) -> None:
    root = place / "root"
    (root / "private" / "sub").mkdir(parents=True)
    (root / "private" / "inner.txt").write_bytes(b"inner")
    (root / "private" / "sub" / "deep.txt").write_bytes(b"deep")
    (root / "secret.txt").write_bytes(b"v1")
    (root / "open.txt").write_bytes(b"open")
    give_to_unprivileged(root)
    first = scan_as_nobody(place / "state", root)
    assert first["entries"]["secret.txt"]["content_id"] == cid(b"v1")

    (root / "secret.txt").write_bytes(b"v2, unseen")
    os.chmod(root / "secret.txt", 0)
    os.chmod(root / "private", 0)
    try:
        scan_as_nobody(place / "state", root)
        second = scan_as_nobody(place / "state", root)  # still unreadable
    finally:
        os.chmod(root / "private", 0o755)
        os.chmod(root / "secret.txt", 0o644)

    entries = second["entries"]
    assert entries["secret.txt"] == {
        "unreadable": True,
        "content_id": cid(b"v1"),
        "kind": 0,
    }
    assert entries["private"]["unreadable"]
    # An unreadable directory must never look emptied: its subtree rows stay.
    assert entries["private/inner.txt"]["content_id"] == cid(b"inner")
    assert entries["private/sub/deep.txt"]["content_id"] == cid(b"deep")
    assert not entries["open.txt"]["unreadable"]
    assert second["unreadable"] == 2
    assert second["state"] == "ready"

    third = scan_as_nobody(place / "state", root)
    assert third["entries"]["secret.txt"] == {
        "unreadable": False,
        "content_id": cid(b"v2, unseen"),
        "kind": 0,
    }
    assert not third["entries"]["private"]["unreadable"]
    assert third["unreadable"] == 0


def test_a_file_refreshed_as_unreadable_drops_its_parent_digest(
    place: Path,
) -> None:
    """A refresh keeps the parent's listing digest true as it rewrites a row,
    and drops it for a row no listing vouches for (flagged unreadable): the
    next scan must compare that directory's children again."""
    root = place / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"one")
    (root / "d" / "g.txt").write_bytes(b"two")
    give_to_unprivileged(root)
    first = scan_as_nobody(place / "state", root)
    assert first["digests"]["d"] is not None

    (root / "d" / "g.txt").write_bytes(b"two, edited")
    edited = scan_as_nobody(place / "state", root, refresh="d/g.txt")
    assert edited["entries"]["d/g.txt"]["content_id"] == cid(b"two, edited")
    assert edited["digests"]["d"] not in (None, first["digests"]["d"])

    os.chmod(root / "d" / "f.txt", 0)
    try:
        locked = scan_as_nobody(place / "state", root, refresh="d/f.txt")
    finally:
        os.chmod(root / "d" / "f.txt", 0o644)
    assert locked["entries"]["d/f.txt"]["unreadable"]
    assert locked["digests"]["d"] is None

    again = scan_as_nobody(place / "state", root)  # the chmods changed f's ctime
    assert not again["entries"]["d/f.txt"]["unreadable"]
    assert again["digests"]["d"] is not None


def test_read_only_root_gets_no_marker_and_is_known_by_device_and_inode(
    place: Path,
) -> None:
    root = place / "root"
    root.mkdir(mode=0o755)  # owned by root: nobody can read it, not write it
    (root / "a").write_bytes(b"a")

    first = scan_as_nobody(place / "state", root)

    assert first["state"] == "ready"
    assert not first["has_marker"]
    assert first["st_dev"] == os.stat(root).st_dev
    assert not (root / ".conduitd").exists()
    assert set(first["entries"]) == {"", "a"}

    # Another directory at the same path (another inode): not the same root.
    os.rename(root, place / "old-root")
    root.mkdir(mode=0o755)
    second = scan_as_nobody(place / "state", root)
    assert second["state"] == "unmounted"
    assert set(second["entries"]) == {"", "a"}  # nothing deleted
