"""The trash-retention shortcut in SQL agrees with `select_prunable` on a real
library: after a run, rows are loaded only when age retention would prune one
(or the trash is over its cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduitd.config import load_config
from conduitd.oneshot import sync_once
from conduitd.storage.conduits import ConduitManager
from conduitd.storage.entries import delete_entries, upsert_entries
from conduitd.storage.library import open_library
from conduitd.storage.models import EntryKind
from conduitd.storage.transactions import open_transaction_manager
from conduitd.storage.trash_rows import (
    TrashReason,
    TrashRow,
    expired_unprotected_exists,
    expired_unprotected_sql,
    list_trashed,
    record_trashed,
)
from conduitd.sync.trash_retention import (
    RetentionPolicy,
    prune_conduit_trash,
    select_prunable,
)
from conduitd.timeutil import format_utc
from helpers.cli import write_config

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PATHS = (b"a", b"b", b"c")
_FILE = (int(EntryKind.FILE), 1, 0, 0, 1, 0o100644, "x", None, 0)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library with one conduit, made by a real first run."""
    base = tmp_path_factory.mktemp("retention")
    (base / "src").mkdir()
    (base / "dst").mkdir()
    (base / "src" / "keep").write_text("k")
    conduit = {"name": "photos", "source": base / "src", "target": base / "dst"}
    config = load_config(write_config(base / "c.toml", base / "state", [conduit]))
    anyio.run(lambda: sync_once(config, "photos", force=False))
    return base / "state"


async def _agree(
    state: Path,
    specs: list[tuple[bytes, int, int]],
    max_age_h: int,
    live: dict[bytes, int],
) -> None:
    lib = await open_library(state)
    try:
        record = await ConduitManager(lib.db).get_by_name("photos")
        assert record is not None
        rows = await lib.db.fetch_all(
            "SELECT location_id FROM entry WHERE id IN (?, ?) ORDER BY id",
            (record.source_entry_id, record.target_entry_id),
        )
        locations = [int(r[0]) for r in rows]
        async with lib.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM sync_trash WHERE conduit_id = ?", (record.id,)
            )
            for location in locations:
                await delete_entries(tx, location, PATHS)
            for path, side in live.items():
                await upsert_entries(tx, locations[side], [(path, _FILE)])
            await record_trashed(
                tx,
                [
                    TrashRow(
                        conduit_id=record.id,
                        generation=generation,
                        root="target",
                        relative_path=path,
                        trash_path=b"t/%d" % i,
                        reason=TrashReason.OVERWRITTEN,
                        size=1,
                        mtime_ns=0,
                        content_id=None,
                        trashed_at=format_utc(NOW - timedelta(hours=age_h)),
                    )
                    for i, (path, generation, age_h) in enumerate(specs)
                ],
            )
        # Half an hour off every row's age: no row sits at the boundary.
        max_age_s = max_age_h * 3600 + 1800
        policy = RetentionPolicy(max_age_s=max_age_s, max_bytes=None)
        trashed = await list_trashed(lib.db, record.id)
        expected = select_prunable(trashed, policy, NOW, set(live))
        cutoff = format_utc(NOW - timedelta(seconds=max_age_s - 1))
        found = await expired_unprotected_exists(lib.db, record.id, locations, cutoff)
        assert found == bool(expected), (expected, found)
    finally:
        await lib.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(PATHS),
            st.integers(min_value=1, max_value=4),  # generation
            st.integers(min_value=0, max_value=96),  # age in hours
        ),
        max_size=8,
    ),
    st.integers(min_value=0, max_value=72),
    st.dictionaries(st.sampled_from(PATHS), st.integers(min_value=0, max_value=1)),
)
def test_the_sql_shortcut_agrees_with_select_prunable(
    state: Path,
    specs: list[tuple[bytes, int, int]],
    max_age_h: int,
    live: dict[bytes, int],
) -> None:
    """Versions too old are prunable unless they are the newest trashed copy
    (by generation, time, id) of a path on neither side: the query must find
    one exactly when `select_prunable` would choose one by age."""
    anyio.run(_agree, state, specs, max_age_h, live)


async def _plan(state: Path) -> list[str]:
    lib = await open_library(state)
    try:
        rows = await lib.db.fetch_all(
            "EXPLAIN QUERY PLAN " + expired_unprotected_sql(2), (1, "x", 1, 2)
        )
        return [str(row[3]) for row in rows]
    finally:
        await lib.close()


def test_the_sql_shortcut_looks_copies_up_by_path(state: Path) -> None:
    """Each old version's newer copies are found through the path index: by
    generation, the planner's first choice, it compared every row with every
    row (470 s for 68k trashed versions)."""
    plan = anyio.run(_plan, state)
    assert any("idx_sync_trash_path" in step for step in plan), plan
    assert not any("generation>" in step for step in plan), plan


async def _age_plans(state: Path) -> list[list[str]]:
    lib = await open_library(state)
    try:
        plans = []
        for sql, args in (
            ("SELECT MIN(trashed_at) FROM sync_trash WHERE conduit_id = ?", (1,)),
            (expired_unprotected_sql(2), (1, "x", 1, 2)),
        ):
            rows = await lib.db.fetch_all("EXPLAIN QUERY PLAN " + sql, args)
            plans.append([str(row[3]) for row in rows])
        return plans
    finally:
        await lib.close()


def test_the_pass_after_a_run_reads_trash_ages_from_an_index(state: Path) -> None:
    """The oldest version, and the versions past the retention, are ranges of
    idx_sync_trash_age: the pass after every run does not read every row
    (23 ms a run at 118k trashed versions, growing with them)."""
    oldest, expired = anyio.run(_age_plans, state)
    assert any("idx_sync_trash_age" in step for step in oldest), oldest
    assert any(
        "idx_sync_trash_age (conduit_id=? AND trashed_at<?)" in s for s in expired
    )


def test_the_pass_after_a_run_prunes_what_a_counted_pass_prunes(
    tmp_path: Path,
) -> None:
    """Without a size cap, the pass after a run skips counting the trash; it
    still prunes a version past the retention, keeps a recent one and the
    last copy of a file gone from both sides."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "edited").write_text("one")
    (src / "gone").write_text("last copy")
    conduit = {"name": "docs", "source": src, "target": dst, "trash_retention": "1d"}
    config = load_config(
        write_config(tmp_path / "c.toml", tmp_path / "state", [conduit])
    )

    def run() -> None:
        anyio.run(lambda: sync_once(config, "docs", force=False))

    run()
    (src / "edited").write_text("two")
    (src / "gone").unlink()
    run()  # the target's "one" and "gone" go to trash

    async def prune(now: datetime) -> tuple[int, list[bytes]]:
        lib = await open_library(config.daemon.state_dir)
        try:
            tm = await open_transaction_manager(lib)
            summary = await prune_conduit_trash(
                lib, tm, config.conduits[0], now=now, summarize=False
            )
            record = await ConduitManager(lib.db).get_by_name("docs")
            assert record is not None
            left = sorted(
                r.relative_path for r in await list_trashed(lib.db, record.id)
            )
            return summary.pruned, left
        finally:
            await lib.close()

    assert anyio.run(prune, datetime.now(UTC)) == (0, [b"edited", b"gone"])
    later = datetime.now(UTC) + timedelta(days=2)
    assert anyio.run(prune, later) == (1, [b"gone"])
    assert list((dst / ".conduitd" / "trash").rglob("gone"))
    assert not list((dst / ".conduitd" / "trash").rglob("edited"))
