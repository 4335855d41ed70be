"""A rescan after any filesystem changes (some of them refreshed on the way)
equals a fresh scan of the same tree, and after a refresh every stored listing
digest is the sum of its directory's child rows (what a rescan trusts);
location states obey their transitions whatever the order of steps."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import anyio
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conduitd.index import Indexer, IndexStep, LocationState, advance
from conduitd.index.state import TRANSITIONS, InvalidTransition
from conduitd.storage.database import Database
from conduitd.storage.entries import load_entry_map
from conduitd.storage.library import open_library
from conduitd.storage.locations import ensure_location, get_location
from conduitd.storage.models import EntryRow
from helpers.digests import ENTRY_ROWS, untrue_digests

NAMES = st.sampled_from(["a", "b", "c", "d.txt", ".git", "node_modules", "caf\udce9"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(lambda parts: "/".join(parts))
CONTENT = st.binary(max_size=64)

OPS = st.one_of(
    st.tuples(st.just("write"), PATHS, CONTENT),
    st.tuples(st.just("mkdir"), PATHS, st.just(b"")),
    st.tuples(st.just("remove"), PATHS, st.just(b"")),
    st.tuples(st.just("symlink"), PATHS, CONTENT),
    st.tuples(st.just("chmod"), PATHS, st.just(b"")),
    st.tuples(st.just("touch"), PATHS, st.just(b"")),
    st.tuples(st.just("rename"), PATHS, PATHS.map(os.fsencode)),
)


def apply(root: Path, op: tuple[str, str, bytes]) -> None:
    """One filesystem change; ones that do not apply to the tree are no-ops."""
    kind, rel, data = op
    path = root / rel
    try:
        if kind == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            path.write_bytes(data)
        elif kind == "mkdir":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "remove":
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        elif kind == "symlink":
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.fsdecode(data.replace(b"\0", b"_")) or "x", path)
        elif kind == "chmod":
            os.chmod(path, 0o600, follow_symlinks=False)
        elif kind == "touch":
            st_ = os.lstat(path)
            os.utime(
                path, ns=(0, st_.st_mtime_ns + 1_000_000_000), follow_symlinks=False
            )
        elif kind == "rename":
            dest = root / os.fsdecode(data)
            if not dest.is_relative_to(path):
                os.rename(path, dest)
    except (OSError, NotImplementedError):
        pass


def _touched(ops: list[tuple[str, str, bytes]]) -> list[bytes]:
    paths = [os.fsencode(rel) for _, rel, _ in ops]
    paths += [data for kind, _, data in ops if kind == "rename"]
    return paths


async def _rescan_and_fresh_scan(
    root: Path,
    before: list[tuple[str, str, bytes]],
    watched: list[tuple[str, str, bytes]],
    unseen: list[tuple[str, str, bytes]],
) -> tuple[dict[bytes, EntryRow], dict[bytes, EntryRow]]:
    """Scan; changes a watcher reports (refreshed, as the daemon and a run's
    verification do); changes nobody reports; scan again. Returns that index
    and the one a fresh scan of the same tree builds."""
    work = root.parent
    for op in before:
        apply(root, op)
    lib = await open_library(work / "state-a")
    try:
        async with lib.db.transaction() as tx:
            record, _ = await ensure_location(tx, str(lib.device_id), root)
        indexer = Indexer.for_library(lib)
        await indexer.scan(record)
        for op in watched:
            apply(root, op)
        if watched:
            await indexer.refresh(record.id, _touched(watched))
            assert untrue_digests(await lib.db.fetch_all(ENTRY_ROWS)) == []
            assert await _kept_totals(lib.db, record.id) == await _counted_totals(
                lib.db, record.id
            )
        for op in unseen:
            apply(root, op)
        await indexer.scan(record)
        rescanned = await load_entry_map(lib.db, record.id)
        assert await _misparented(lib.db, record.id) == []
        assert await _kept_totals(lib.db, record.id) == await _counted_totals(
            lib.db, record.id
        )
    finally:
        await lib.close()
    fresh_lib = await open_library(work / "state-b")
    try:
        async with fresh_lib.db.transaction() as tx:
            record, _ = await ensure_location(tx, str(fresh_lib.device_id), root)
        await Indexer.for_library(fresh_lib).scan(record)
        fresh = await load_entry_map(fresh_lib.db, record.id)
    finally:
        await fresh_lib.close()
    return rescanned, fresh


async def _counted_totals(db: Database, location_id: int) -> tuple[int, int]:
    """The totals counted over every row: non-directory entries, bytes of
    regular files."""
    row = await db.fetch_one(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind = 0 THEN size ELSE 0 END), 0)"
        " FROM entry WHERE location_id = ? AND kind != 1",
        (location_id,),
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def _kept_totals(db: Database, location_id: int) -> tuple[int, int]:
    """The totals every write keeps on the location's row."""
    location = await get_location(db, location_id)
    assert location is not None
    return location.total_file_count, location.total_byte_size


async def _misparented(db: Database, location_id: int) -> list[bytes]:
    """Rows whose parent_id or name is not their path's (an upsert keeps both
    of an existing row: its parent's row must not have been replaced)."""
    rows = await db.fetch_all(
        "SELECT id, parent_id, name, relative_path FROM entry WHERE location_id = ?",
        (location_id,),
    )
    ids = {row["relative_path"]: row["id"] for row in rows}
    wrong = []
    for row in rows:
        path = row["relative_path"]
        if not path:
            continue
        parent, _, name = path.rpartition(b"/")
        if row["parent_id"] != ids.get(parent) or row["name"] != name:
            wrong.append(path)
    return wrong


def _assert_rescan_equals_fresh_scan(
    before: list[tuple[str, str, bytes]],
    watched: list[tuple[str, str, bytes]],
    unseen: list[tuple[str, str, bytes]],
) -> None:
    work = Path(tempfile.mkdtemp(prefix="index-prop-"))
    try:
        root = work / "root"
        root.mkdir()
        rescanned, fresh = anyio.run(
            _rescan_and_fresh_scan, root, before, watched, unseen
        )
        assert rescanned == fresh
    finally:
        shutil.rmtree(work)


@given(st.lists(OPS, max_size=12), st.lists(OPS, max_size=12))
def test_rescan_equals_a_fresh_scan(
    before: list[tuple[str, str, bytes]], after: list[tuple[str, str, bytes]]
) -> None:
    _assert_rescan_equals_fresh_scan(before, [], after)


@given(st.lists(OPS, max_size=12), st.lists(OPS, max_size=8), st.lists(OPS, max_size=8))
def test_a_rescan_after_refreshes_equals_a_fresh_scan(
    before: list[tuple[str, str, bytes]],
    watched: list[tuple[str, str, bytes]],
    unseen: list[tuple[str, str, bytes]],
) -> None:
    """A refresh leaves the index so that a later rescan, which trusts the
    listing digests of directories the refresh did not touch, finds what a
    fresh scan finds."""
    _assert_rescan_equals_fresh_scan(before, watched, unseen)


# One directory of many files: its digest buckets hold several children
# each, so a rescan loads only some of them (a deletion in a changed bucket
# must still be seen).
WIDE = [f"d/f{n:02}" for n in range(40)]
WIDE_PATHS = st.sampled_from(WIDE)
WIDE_OPS = st.one_of(
    st.tuples(st.just("write"), WIDE_PATHS, CONTENT),
    st.tuples(st.just("remove"), WIDE_PATHS, st.just(b"")),
    st.tuples(st.just("touch"), WIDE_PATHS, st.just(b"")),
    st.tuples(st.just("chmod"), WIDE_PATHS, st.just(b"")),
    st.tuples(st.just("rename"), WIDE_PATHS, WIDE_PATHS.map(os.fsencode)),
)


@given(st.lists(WIDE_OPS, min_size=1, max_size=10), st.lists(WIDE_OPS, max_size=4))
def test_a_rescan_of_a_wide_directory_equals_a_fresh_scan(
    unseen: list[tuple[str, str, bytes]], watched: list[tuple[str, str, bytes]]
) -> None:
    """Edits, deletions, renames among 40 files, some refreshed first: the
    rows a rescan loads by bucket are enough to find what a fresh scan finds."""
    before = [("write", rel, rel.encode()) for rel in WIDE]
    _assert_rescan_equals_fresh_scan(before, watched, unseen)


class LocationStates(RuleBasedStateMachine):
    """Any order of steps: the state is what the transition table says, and
    the only refused step is completing a scan of an unmounted root."""

    def __init__(self) -> None:
        super().__init__()
        self.state = LocationState.SCANNING

    @rule(step=st.sampled_from(list(IndexStep)))
    def take(self, step: IndexStep) -> None:
        if (self.state, step) not in TRANSITIONS:
            assert (self.state, step) == (
                LocationState.UNMOUNTED,
                IndexStep.SCAN_COMPLETED,
            )
            try:
                advance(self.state, step)
            except InvalidTransition:
                return
            raise AssertionError("an undefined transition was accepted")
        new = advance(self.state, step)
        if step is IndexStep.ROOT_LOST:
            assert new is LocationState.UNMOUNTED
        if step is IndexStep.SCAN_STARTED:
            assert new is LocationState.SCANNING
        if step is IndexStep.WATCH_FAILED and self.state is not LocationState.UNMOUNTED:
            assert new is LocationState.STALE
        self.state = new

    @invariant()
    def state_is_known(self) -> None:
        assert self.state in set(LocationState)


TestLocationStates = LocationStates.TestCase
