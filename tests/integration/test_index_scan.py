"""Scanning real directories: what the index records, and what a rescan changes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import closing
from pathlib import Path

import anyio
import blake3
import pytest
from structlog.testing import capture_logs

from conduitd.index import Indexer, MarkerStatus
from conduitd.index.scanner import ChangeSet, KnownContent, MemoryRows, TreeScanner
from conduitd.index.walk import (
    DIRECTORY,
    DirTask,
    child_term,
    differing_buckets,
    digest_with,
    list_directories,
    name_bucket,
    values_from_stat,
)
from conduitd.storage.entries import EntryReader, EntryValues, load_entry_map
from conduitd.storage.library import LIBRARY_DB, Library, open_library
from conduitd.storage.locations import LocationRecord, LocationState, ensure_location
from conduitd.storage.models import EntryKind, EntryRow
from conduitd.storage.schema_library import LIBRARY_MIGRATIONS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    lib = await open_library(tmp_path / "state")
    try:
        yield lib
    finally:
        await lib.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


async def add_location(library: Library, path: Path) -> LocationRecord:
    async with library.db.transaction() as tx:
        record, _created = await ensure_location(tx, str(library.device_id), path)
    return record


async def scan_map(indexer: Indexer, record: LocationRecord) -> dict[bytes, EntryRow]:
    await indexer.scan(record)
    return await load_entry_map(indexer.db, record.id)


def write_raw(path: bytes, data: bytes) -> None:
    """Create a file whose name is not valid UTF-8."""
    with open(path, "wb") as handle:
        handle.write(data)


def content_id(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


async def test_first_scan_records_files_directories_and_symlinks(
    library: Library, root: Path
) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_bytes(b"alpha")
    (root / "empty").write_bytes(b"")
    big = os.urandom(20 << 20)  # hashed on several threads
    (root / "big.bin").write_bytes(big)
    os.symlink("docs/a.txt", root / "link")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    entries = await scan_map(indexer, record)

    assert set(entries) == {b"", b"docs", b"docs/a.txt", b"empty", b"big.bin", b"link"}
    a = entries[b"docs/a.txt"]
    st = os.lstat(root / "docs" / "a.txt")
    assert (a.kind, a.size, a.content_id) == (EntryKind.FILE, 5, content_id(b"alpha"))
    assert (a.mtime_ns, a.ctime_ns, a.inode, a.mode) == (
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_mode,
    )
    assert entries[b"empty"].content_id == content_id(b"")
    assert entries[b"big.bin"].content_id == content_id(big)
    assert entries[b"docs"].kind is EntryKind.DIRECTORY
    assert entries[b"docs"].content_id is None
    link = entries[b"link"]
    assert (link.kind, link.symlink_target, link.content_id) == (
        EntryKind.SYMLINK,
        b"docs/a.txt",
        None,
    )
    assert stat.S_ISLNK(link.mode)
    location = await indexer.location(record.id)
    assert location.state is LocationState.READY
    assert (location.total_file_count, location.total_byte_size) == (4, 5 + len(big))
    assert location.st_dev == os.stat(root).st_dev
    assert location.root_inode == os.stat(root).st_ino
    assert location.last_scan_at is not None


async def test_every_write_moves_the_totals_and_the_upgrade_counts_them_again(
    library: Library, root: Path
) -> None:
    (root / "a.txt").write_bytes(b"12345")
    (root / "d").mkdir()
    (root / "d" / "b.txt").write_bytes(b"xy")
    os.symlink("a.txt", root / "link")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    # A refresh (a watcher's, a run's verification) writes outside a scan.
    (root / "a.txt").write_bytes(b"1")
    shutil.rmtree(root / "d")
    (root / "c.txt").write_bytes(b"abc")
    await indexer.refresh(record.id, [b"a.txt", b"d", b"c.txt"])
    location = await indexer.location(record.id)
    assert (location.total_file_count, location.total_byte_size) == (3, 4)
    # An older conduitd left the totals of its last scan after such writes.
    recount = next(m for m in LIBRARY_MIGRATIONS if m.version == 209)
    await library.db.execute_script(
        "UPDATE location SET total_file_count = 99, total_byte_size = 99;" + recount.sql
    )
    location = await indexer.location(record.id)
    assert (location.total_file_count, location.total_byte_size) == (3, 4)


async def test_unchanged_rescan_writes_nothing_and_hashes_nothing(
    library: Library, root: Path
) -> None:
    for i in range(50):
        (root / f"f{i}").write_bytes(b"x" * i)
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)

    report = await indexer.scan(record)

    assert (report.added, report.updated, report.removed, report.hashed_files) == (
        0,
        0,
        0,
        0,
    )


async def test_rescan_sees_create_modify_rename_and_deletes(
    library: Library, root: Path
) -> None:
    (root / "keep").write_bytes(b"keep")
    (root / "old-name").write_bytes(b"moving")
    (root / "gone").write_bytes(b"bye")
    (root / "tree" / "deep").mkdir(parents=True)
    (root / "tree" / "deep" / "x").write_bytes(b"x")
    (root / "edit").write_bytes(b"before")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    before = await scan_map(indexer, record)

    (root / "new").write_bytes(b"fresh")
    (root / "edit").write_bytes(b"after, longer")
    os.rename(root / "old-name", root / "new-name")
    (root / "gone").unlink()
    shutil.rmtree(root / "tree")
    after = await scan_map(indexer, record)

    assert set(after) == {b"", b"keep", b"new", b"new-name", b"edit"}
    assert after[b"new"].content_id == content_id(b"fresh")
    assert after[b"edit"].content_id == content_id(b"after, longer")
    assert after[b"new-name"].content_id == before[b"old-name"].content_id
    assert after[b"keep"] == before[b"keep"]


async def test_same_size_edit_within_one_mtime_tick_is_caught_by_ctime(
    library: Library, root: Path
) -> None:
    path = root / "f"
    path.write_bytes(b"aaaa")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    before = (await scan_map(indexer, record))[b"f"]
    st = path.stat()

    path.write_bytes(b"bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    after = (await scan_map(indexer, record))[b"f"]

    assert (after.size, after.mtime_ns) == (before.size, before.mtime_ns)
    assert after.content_id == content_id(b"bbbb") != before.content_id


async def test_touch_changes_mtime_but_not_content_id(
    library: Library, root: Path
) -> None:
    path = root / "f"
    path.write_bytes(b"same")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    before = (await scan_map(indexer, record))[b"f"]

    os.utime(path, ns=(0, before.mtime_ns + 5_000_000_000))
    report = await indexer.scan(record)
    after = (await load_entry_map(library.db, record.id))[b"f"]

    assert after.mtime_ns == before.mtime_ns + 5_000_000_000
    assert after.content_id == before.content_id
    assert report.updated == 1


async def test_symlink_to_outside_is_recorded_and_not_followed(
    library: Library, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "file").write_bytes(b"not ours")
    os.symlink(outside, root / "escape")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    entries = await scan_map(indexer, record)

    assert set(entries) == {b"", b"escape"}
    assert entries[b"escape"].symlink_target == os.fsencode(outside)


async def test_non_utf8_names_round_trip_byte_exact(
    library: Library, root: Path
) -> None:
    raw_root = os.fsencode(root)
    os.mkdir(raw_root + b"/dir\xe9")
    write_raw(raw_root + b"/dir\xe9/f\xff\xfe", b"latin-1 names")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    entries = await scan_map(indexer, record)

    assert b"dir\xe9/f\xff\xfe" in entries
    assert entries[b"dir\xe9/f\xff\xfe"].content_id == content_id(b"latin-1 names")


async def test_conduitd_directories_are_never_indexed(
    library: Library, root: Path
) -> None:
    (root / "sub" / ".conduitd").mkdir(parents=True)
    (root / "sub" / ".conduitd" / "x").write_bytes(b"x")
    (root / "sub" / "y").write_bytes(b"y")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    entries = await scan_map(indexer, record)

    assert set(entries) == {b"", b"sub", b"sub/y"}
    assert (root / ".conduitd" / "marker").exists()


async def test_fifo_is_skipped_with_a_warning(library: Library, root: Path) -> None:
    os.mkfifo(root / "pipe")
    (root / "f").write_bytes(b"f")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    with capture_logs() as logs:
        report = await indexer.scan(record)

    entries = await load_entry_map(library.db, record.id)
    assert set(entries) == {b"", b"f"}
    assert report.skipped == 1
    assert any(e["event"] == "special_file_skipped" for e in logs)


async def test_file_replaced_by_directory_and_back(
    library: Library, root: Path
) -> None:
    (root / "x").write_bytes(b"file")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)

    (root / "x").unlink()
    (root / "x").mkdir()
    (root / "x" / "inner").write_bytes(b"inner")
    entries = await scan_map(indexer, record)
    assert entries[b"x"].kind is EntryKind.DIRECTORY
    assert b"x/inner" in entries

    shutil.rmtree(root / "x")
    (root / "x").write_bytes(b"file again")
    entries = await scan_map(indexer, record)
    assert set(entries) == {b"", b"x"}
    assert entries[b"x"].content_id == content_id(b"file again")


async def test_marker_is_written_on_first_scan_and_names_library_and_location(
    library: Library, root: Path
) -> None:
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    await indexer.scan(record)

    marker = json.loads((root / ".conduitd" / "marker").read_text())
    assert marker == {
        "library": str(library.uuid),
        "location": str(record.uuid),
        "device": str(library.device_id),
    }
    assert await indexer.marker_status(record.id) is MarkerStatus.OK
    assert (await indexer.location(record.id)).has_marker


async def test_scan_never_creates_a_missing_root(
    library: Library, tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    record = await add_location(library, missing)
    indexer = Indexer.for_library(library)

    report = await indexer.scan(record)

    assert report.state is LocationState.UNMOUNTED
    assert not missing.exists()
    assert await indexer.marker_status(record.id) is MarkerStatus.MISSING


async def test_vanished_marker_means_unmounted_and_the_scan_deletes_nothing(
    library: Library, root: Path
) -> None:
    (root / "a").write_bytes(b"a")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    before = await scan_map(indexer, record)

    # What an unmounted disk looks like: the empty mount point directory.
    shutil.rmtree(root / ".conduitd")
    (root / "a").unlink()
    report = await indexer.scan(record)

    assert report.state is LocationState.UNMOUNTED
    assert await indexer.state(record.id) is LocationState.UNMOUNTED
    assert await load_entry_map(library.db, record.id) == before
    assert not (root / ".conduitd").exists()


async def test_root_coming_back_with_its_marker_is_ready_again(
    library: Library, root: Path, tmp_path: Path
) -> None:
    (root / "a").write_bytes(b"a")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    aside = tmp_path / "aside"
    os.rename(root, aside)
    assert (await indexer.scan(record)).state is LocationState.UNMOUNTED

    os.rename(aside, root)
    report = await indexer.scan(record)

    assert report.state is LocationState.READY
    assert report.removed == 0


async def test_foreign_marker_sets_index_lost_and_is_left_in_place(
    library: Library, root: Path
) -> None:
    foreign = {
        "library": str(uuid.uuid4()),
        "location": str(uuid.uuid4()),
        "device": str(uuid.uuid4()),
    }
    (root / ".conduitd").mkdir()
    (root / ".conduitd" / "marker").write_text(json.dumps(foreign))
    (root / "a").write_bytes(b"a")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)

    entries = await scan_map(indexer, record)

    assert b"a" in entries
    location = await indexer.location(record.id)
    assert location.index_lost
    assert location.state is LocationState.READY
    assert json.loads((root / ".conduitd" / "marker").read_text()) == foreign
    assert await indexer.marker_status(record.id) is MarkerStatus.FOREIGN

    await indexer.clear_index_lost(record.id)

    assert not (await indexer.location(record.id)).index_lost
    assert await indexer.marker_status(record.id) is MarkerStatus.OK
    await indexer.scan(record)
    assert not (await indexer.location(record.id)).index_lost


async def test_marker_of_a_rebuilt_library_means_index_lost(
    tmp_path: Path, root: Path
) -> None:
    (root / "a").write_bytes(b"a")
    first = await open_library(tmp_path / "state-1")
    try:
        await Indexer.for_library(first).scan(await add_location(first, root))
    finally:
        await first.close()
    # library.db lost: a new library finds the old marker.
    second = await open_library(tmp_path / "state-2")
    try:
        record = await add_location(second, root)
        await Indexer.for_library(second).scan(record)
        location = await Indexer.for_library(second).location(record.id)
    finally:
        await second.close()

    assert location.index_lost


async def test_history_survives_rescans_unmounts_and_deletes(
    library: Library, root: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (root / "a").write_bytes(b"a")
    source_record = await add_location(library, root)
    target_record = await add_location(library, target)
    indexer = Indexer.for_library(library)
    await indexer.scan(source_record)
    await indexer.scan(target_record)
    async with library.db.transaction() as tx:
        conduit_id = await tx.insert(
            "INSERT INTO sync_conduit (uuid, source_entry_id, target_entry_id,"
            " sync_mode, name, created_at, updated_at) VALUES (?, ?, ?, 'mirror',"
            " 'c', 'now', 'now')",
            (uuid.uuid4().bytes, source_record.entry_id, target_record.entry_id),
        )
        await tx.execute(
            "INSERT INTO sync_generation (conduit_id, generation, started_at)"
            " VALUES (?, 1, 'now')",
            (conduit_id,),
        )

    (root / "a").unlink()
    await indexer.scan(source_record)
    shutil.rmtree(root / ".conduitd")
    await indexer.scan(source_record)
    os.rename(root, tmp_path / "away")
    await indexer.scan(source_record)

    rows = await library.db.fetch_all("SELECT COUNT(*) FROM sync_generation")
    assert rows[0][0] == 1
    conduits = await library.db.fetch_all("SELECT COUNT(*) FROM sync_conduit")
    assert conduits[0][0] == 1
    entries = await load_entry_map(library.db, source_record.id)
    assert b"" in entries


async def test_mount_point_inside_the_root_is_not_crossed(
    library: Library, root: Path
) -> None:
    mount_dir = root / "mnt"
    mount_dir.mkdir()
    (root / "a").write_bytes(b"a")
    result = await anyio.run_process(
        ["mount", "-t", "tmpfs", "tmpfs", str(mount_dir)], check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        (mount_dir / "other-fs").write_bytes(b"elsewhere")
        record = await add_location(library, root)
        with capture_logs() as logs:
            entries = await scan_map(Indexer.for_library(library), record)
    finally:
        await anyio.run_process(["umount", str(mount_dir)], check=False)

    assert b"mnt/other-fs" not in entries
    assert entries[b"mnt"].unreadable  # nothing under it is ever deleted
    assert any(e["event"] == "mount_point_skipped" for e in logs)


async def test_parallel_scans_of_two_locations(
    library: Library, tmp_path: Path
) -> None:
    roots = [tmp_path / "one", tmp_path / "two"]
    for i, path in enumerate(roots):
        (path / "d").mkdir(parents=True)
        for j in range(30):
            (path / "d" / f"{j}").write_bytes(b"%d-%d" % (i, j))
    records = [await add_location(library, p) for p in roots]
    indexer = Indexer.for_library(library)

    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(indexer.scan, record)

    for record in records:
        entries = await load_entry_map(library.db, record.id)
        assert len(entries) == 32


async def test_index_changes_are_logged_as_one_summary_per_batch(
    library: Library, root: Path
) -> None:
    from conduitd.storage.transactions import open_transaction_manager

    for i in range(30):
        (root / f"f{i:02d}").write_bytes(b"%d" % i)
    record = await add_location(library, root)
    tm = await open_transaction_manager(library)
    indexer = Indexer(
        library.db,
        library_uuid=library.uuid,
        device_id=library.device_id,
        tm=tm,
        scan_batch_rows=10,
    )

    await indexer.scan(record)
    first = await outbox(library)
    await indexer.scan(record)  # unchanged: nothing to log
    assert await outbox(library) == first
    (root / "f00").unlink()
    (root / "new").write_bytes(b"new")
    await indexer.refresh(record.id, [b"f00", b"new"])
    rows = await outbox(library)

    assert len(first) == 4  # 31 rows (the root updated) in batches of 10
    assert {(r[0], r[1], r[2]) for r in rows} == {
        ("entry", str(record.uuid), "bulk_insert")
    }
    summaries = [json.loads(r[3]) for r in rows]
    assert sum(s["summary"]["added"] for s in summaries[:4]) == 30
    assert sum(s["count"] for s in summaries[:4]) == 31
    assert summaries[-1]["summary"] == {
        "location": str(record.uuid),
        "added": 1,
        "updated": 1,  # the root's mtime
        "removed": 1,
    }
    assert len(rows) == 5


async def outbox(library: Library) -> list[tuple[str, str, str, str]]:
    rows = await library.db.fetch_all(
        "SELECT model_type, record_id, change_type, data FROM sync_outbox ORDER BY id"
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def test_paths_that_ignore_rules_usually_name_are_still_indexed(
    library: Library, root: Path
) -> None:
    # Rules are the resolver's business (two conduits may share a location).
    (root / "node_modules").mkdir()
    (root / "node_modules" / "x.js").write_bytes(b"x")
    (root / "a.tmp").write_bytes(b"t")
    (root / ".DS_Store").write_bytes(b"d")
    record = await add_location(library, root)

    entries = await scan_map(Indexer.for_library(library), record)

    assert {b"node_modules/x.js", b"a.tmp", b".DS_Store"} <= set(entries)


async def test_hashing_never_opens_a_fifo_or_follows_a_symlink(root: Path) -> None:
    from conduitd.index.hashing import HashStatus, hash_file

    os.mkfifo(root / "pipe")  # opening it without O_NONBLOCK would block
    os.symlink("/etc/hostname", root / "link")
    dev = os.stat(root).st_dev

    with anyio.fail_after(5):
        pipe = await anyio.to_thread.run_sync(
            hash_file, os.fsencode(root), b"pipe", dev
        )
        link = await anyio.to_thread.run_sync(
            hash_file, os.fsencode(root), b"link", dev
        )

    assert pipe.status is HashStatus.NOT_REGULAR
    assert link.status is HashStatus.NOT_REGULAR


async def digest_of(library: Library, record: LocationRecord, path: bytes) -> object:
    row = await library.db.fetch_one(
        "SELECT listing_digest FROM entry WHERE location_id = ? AND relative_path = ?",
        (record.id, path),
    )
    assert row is not None
    return row[0]


def live_digest(root: Path, path: bytes) -> bytes | None:
    """The digest a walk computes for that directory now."""
    st = os.lstat(root / os.fsdecode(path)) if path else os.lstat(root)
    task = DirTask(path, values_from_stat(st, DIRECTORY, None))
    (listing,), _subdirs = list_directories(bytes(root), [task], st.st_dev, {})
    return listing.digest


async def test_a_write_outside_a_scan_keeps_the_parent_listing_digest_true(
    library: Library, root: Path
) -> None:
    """Written, added, deleted, replaced by a directory, a symlink added: the
    parent's digest after each refresh is the one a walk computes, so the next
    scan neither loads nor compares its children's rows."""
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"one")
    (root / "d" / "g").write_bytes(b"gone soon")
    (root / "d" / "h").write_bytes(b"a file, then a directory")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    assert await digest_of(library, record, b"d") == live_digest(root, b"d")

    def replace_by_directory(path: Path) -> None:
        path.unlink()
        path.mkdir()

    steps: list[tuple[Callable[[], object], bytes]] = [
        (lambda: (root / "d" / "f").write_bytes(b"two"), b"d/f"),
        (lambda: (root / "d" / "new").write_bytes(b"new"), b"d/new"),
        ((root / "d" / "g").unlink, b"d/g"),
        (lambda: replace_by_directory(root / "d" / "h"), b"d/h"),
        (lambda: os.symlink("f", root / "d" / "link"), b"d/link"),
    ]
    for change, path in steps:
        change()
        await indexer.refresh(record.id, [path])
        assert await digest_of(library, record, b"d") == live_digest(root, b"d")

    report = await indexer.scan(record)
    assert (report.updated, report.added, report.removed) == (0, 0, 0)
    assert report.hashed_files == 0
    entries = await load_entry_map(library.db, record.id)
    assert entries[b"d/f"].content_id == content_id(b"two")
    assert b"d/g" not in entries
    assert entries[b"d/h"].kind is EntryKind.DIRECTORY


async def test_a_directory_that_became_a_file_keeps_no_digest(
    library: Library, root: Path
) -> None:
    """Deleted with its subtree and written again in one batch: its parent's
    digest swaps the directory's term for the file's, once, and the file's
    row carries no digest of the children it lost."""
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"one")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    assert await digest_of(library, record, b"d") is not None

    shutil.rmtree(root / "d")
    (root / "d").write_bytes(b"a file now")
    await indexer.refresh(record.id, [b"d", b"d/f"])
    entries = await load_entry_map(library.db, record.id)
    assert entries[b"d"].kind is EntryKind.FILE
    assert b"d/f" not in entries
    assert await digest_of(library, record, b"d") is None
    assert await digest_of(library, record, b"") == live_digest(root, b"")


def announced(path: Path, content: str) -> KnownContent:
    st = path.lstat()
    return KnownContent(st.st_ino, st.st_size, st.st_mtime_ns, content)


async def test_a_file_announced_by_a_sync_is_indexed_without_being_read(
    library: Library, root: Path
) -> None:
    (root / "landed").write_bytes(b"copied bytes")
    (root / "other").write_bytes(b"not announced")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    # The copy hashed the bytes as they passed: the scan takes its word for
    # that very file (same inode, size and mtime) and reads only the other.
    await indexer.expect_content(
        record.id, {b"landed": announced(root / "landed", content_id(b"copied bytes"))}
    )

    report = await indexer.scan(record)

    assert (report.added, report.hashed_files) == (2, 1)
    entries = await load_entry_map(library.db, record.id)
    assert entries[b"landed"].content_id == content_id(b"copied bytes")
    assert entries[b"other"].content_id == content_id(b"not announced")


async def test_an_announced_file_changed_since_is_read_again(
    library: Library, root: Path
) -> None:
    for name in ("rewritten", "replaced", "touched"):
        (root / name).write_bytes(b"as landed")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    stale = {
        name.encode(): announced(root / name, content_id(b"as landed"))
        for name in ("rewritten", "replaced", "touched")
    }
    await indexer.expect_content(record.id, stale)
    (root / "rewritten").write_bytes(b"user's longer edit")  # size and mtime move
    (root / "replaced.new").write_bytes(b"other one")  # another inode
    os.replace(root / "replaced.new", root / "replaced")
    os.utime(root / "touched", ns=(1, 1))  # same bytes, but not as announced

    report = await indexer.scan(record)

    assert report.hashed_files == 3
    entries = await load_entry_map(library.db, record.id)
    assert entries[b"rewritten"].content_id == content_id(b"user's longer edit")
    assert entries[b"replaced"].content_id == content_id(b"other one")
    assert entries[b"touched"].content_id == content_id(b"as landed")


async def test_forgotten_announcements_are_not_used(
    library: Library, root: Path
) -> None:
    (root / "f").write_bytes(b"real")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.expect_content(record.id, {b"f": announced(root / "f", "bogus")})
    await indexer.forget_content(record.id, [b"f"])

    await indexer.scan(record)

    entries = await load_entry_map(library.db, record.id)
    assert entries[b"f"].content_id == content_id(b"real")


async def test_refresh_rereads_unchanged_files_only_when_asked(
    library: Library, root: Path
) -> None:
    (root / "same").write_bytes(b"unchanged")
    (root / "moved").write_bytes(b"before")
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    (root / "moved").write_bytes(b"after!")

    # A barrier's refresh reads what a walk would: the file whose size moved.
    walk_like = await indexer.refresh(record.id, [b"same", b"moved"], reread=False)
    # A watcher's refresh reads every file it was told about.
    watcher = await indexer.refresh(record.id, [b"same", b"moved"])

    assert (walk_like.hashed_files, walk_like.updated) == (1, 1)
    assert (watcher.hashed_files, watcher.updated) == (2, 0)
    entries = await load_entry_map(library.db, record.id)
    assert entries[b"moved"].content_id == content_id(b"after!")


@pytest.mark.parametrize("indexed", [False, True])
async def test_a_directory_gone_between_a_split_walk_and_its_piece(
    root: Path, indexed: bool
) -> None:
    """A split walk plans the rows of the level it leaves unlisted; a piece
    that finds one of them gone drops its planned row (never indexed) or
    removes its subtree (indexed), as a single walk would."""
    for name in ("a", "b", "c"):
        (root / name / "inner").mkdir(parents=True)
        (root / name / "inner" / "f.txt").write_bytes(name.encode())
    scanner = TreeScanner(anyio.CapacityLimiter(2))
    raw = bytes(root)
    st = os.lstat(root)
    start = DirTask(b"", values_from_stat(st, DIRECTORY, None))
    rows: dict[bytes, EntryValues] = {}
    if indexed:
        whole = ChangeSet()
        await scanner.collect(raw, st.st_dev, start, {}, whole)
        rows = dict(whole.upserts)
        os.utime(root / "a", ns=(1, 1))  # a's own row changes (planned at the top)
    (root / "c" / "inner" / "f.txt").write_bytes(b"changed")
    changes = ChangeSet()
    rest = await scanner.collect(raw, st.st_dev, start, rows, changes, split_at=2)
    assert sorted(t.relative_path for t in rest.tasks) == [b"a", b"b", b"c"]
    assert b"a" in changes.upserts
    assert indexed or b"a" in changes.added
    shutil.rmtree(root / "a")
    pieces = rest.pieces(3)
    assert [len(piece.tasks) for piece in pieces] == [1, 1, 1]
    if indexed:  # each piece has the stored rows of its own directories
        assert sorted(sorted(piece.directories) for piece in pieces) == [
            [b"a", b"a/inner"],
            [b"b", b"b/inner"],
            [b"c", b"c/inner"],
        ]
    for piece in pieces:
        seed = changes.hand_over(piece.tasks)
        assert piece.tasks[0].relative_path not in changes.upserts
        await scanner.collect_subtrees(raw, st.st_dev, piece, MemoryRows(rows), seed)
        changes.absorb(seed)
    if indexed:
        assert set(changes.upserts) == {b"c/inner/f.txt"}
        assert changes.removed_subtrees == {b"a"}
    else:
        assert set(changes.upserts) == {
            b"",
            b"b",
            b"b/inner",
            b"b/inner/f.txt",
            b"c",
            b"c/inner",
            b"c/inner/f.txt",
        }
        assert changes.added == set(changes.upserts)
        assert changes.removed_subtrees == set()


class CountingReader:
    """An EntryReader that remembers which rows a walk asked it for."""

    def __init__(self, reader: EntryReader) -> None:
        self.reader = reader
        self.named_paths: list[bytes] = []
        self.children_of: list[bytes] = []

    def directories(
        self, prefix: bytes | None = None
    ) -> dict[bytes, tuple[EntryValues, bytes | None]]:
        return self.reader.directories(prefix)

    def row(self, path: bytes) -> EntryValues | None:
        return self.reader.row(path)

    def named(self, paths: Sequence[bytes]) -> dict[bytes, EntryValues]:
        self.named_paths += paths
        return self.reader.named(paths)

    def children(self, directories: Iterable[bytes]) -> dict[bytes, EntryValues]:
        wanted = list(directories)
        self.children_of += wanted
        return self.reader.children(wanted)


async def walk_counting(
    library: Library, record: LocationRecord, root: Path
) -> tuple[ChangeSet, CountingReader]:
    st = os.lstat(root)
    start = DirTask(b"", values_from_stat(st, DIRECTORY, None))
    changes = ChangeSet()
    with closing(EntryReader(library.directory / LIBRARY_DB, record.id)) as reader:
        counting = CountingReader(reader)
        await TreeScanner(anyio.CapacityLimiter(2)).collect(
            bytes(root), st.st_dev, start, counting, changes
        )
    return changes, counting


async def test_a_changed_directory_loads_only_the_rows_of_its_changed_buckets(
    library: Library, root: Path
) -> None:
    """One file edited among 64: the walk loads the rows of the files listed
    in that file's digest bucket, not the directory's 64; a file deleted from
    a changed bucket makes it load every row of the directory (the deletion
    is seen either way)."""
    (root / "d").mkdir()
    for n in range(64):
        (root / "d" / f"f{n:02}").write_bytes(b"x" * n)
    record = await add_location(library, root)
    indexer = Indexer.for_library(library)
    await indexer.scan(record)
    in_bucket: dict[int, list[bytes]] = {}
    for n in range(64):
        name = f"f{n:02}".encode()
        in_bucket.setdefault(name_bucket(name), []).append(b"d/" + name)
    bucket = name_bucket(b"f07")
    (root / "d" / "f07").write_bytes(b"edited")

    changes, counting = await walk_counting(library, record, root)
    assert set(changes.upserts) == {b"d/f07"}
    assert sorted(counting.named_paths) == sorted(in_bucket[bucket])
    assert len(counting.named_paths) < 64
    assert counting.children_of == []

    await indexer.scan(record)
    partner = next(p for p in in_bucket[bucket] if p != b"d/f07")
    (root / "d" / "f07").write_bytes(b"edited again")
    (root / os.fsdecode(partner)).unlink()
    changes, counting = await walk_counting(library, record, root)
    assert set(changes.upserts) == {b"d", b"d/f07"}  # d: its mtime
    assert changes.removed == {partner}
    assert counting.children_of == [b"d"]


def test_listing_digests_tell_which_buckets_changed() -> None:
    terms = {
        name: child_term(
            b"d/" + name, (0, len(name), 10, 11, n, 0o100644, "c", None, 0)
        )
        for n, name in enumerate([b"a", b"b", b"c", b"d", b"e"])
    }
    before = digest_with(b"", [], [t for t in terms.values() if t is not None])
    assert before is not None
    edited = child_term(b"d/c", (0, 9, 12, 13, 2, 0o100644, "e", None, 0))
    assert edited is not None
    assert terms[b"c"] is not None
    after = digest_with(before, [terms[b"c"]], [edited])
    assert after is not None
    stored_count = sum(1 for name in terms if name_bucket(name) == name_bucket(b"c"))
    assert differing_buckets(after, before) == {name_bucket(b"c"): stored_count}
    assert differing_buckets(before, before) == {}
    # Out goes a term that never went in: no digest can be that.
    assert digest_with(b"", [edited], []) is None


def test_a_directory_swapped_for_a_symlink_is_not_followed(
    root: Path, tmp_path: Path
) -> None:
    """Planned as a directory, a symlink to a directory outside when listed:
    nothing outside is listed; the directory is gone, as if it had become a
    file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not ours")
    (root / "d").mkdir()
    st = os.lstat(root / "d")
    (root / "d").rmdir()
    os.symlink(outside, root / "d")
    task = DirTask(b"d", values_from_stat(st, DIRECTORY, None))
    (listing,), subdirs = list_directories(bytes(root), [task], st.st_dev, {})
    assert listing.entries == []
    assert listing.vanished
    assert subdirs == []
