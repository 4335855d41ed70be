"""`record_agreed_paths` (SQL) writes the baseline the resolver's model says.

After a two-way run the service sets the baseline of every touched path from
both sides' index rows in one SQL statement each; `resolver.agreed_entry` is
the definition. Random rows for both sides and an old baseline, drawn from
small domains so that agreement, near misses (one field apart), kind changes
and absent sides all occur, go into a real library; the table afterwards must
equal the model applied in Python.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from conduitd.config import load_config
from conduitd.oneshot import writer_session
from conduitd.storage.baselines import load_baseline, record_agreed_paths
from conduitd.storage.models import BaselineRow, EntryKind, EntryRow
from conduitd.sync.operations import to_baseline
from conduitd.sync.resolver import agreed_entry

PATHS = [b"a", b"b", b"c", b"d/e", b"d/f", b"g", b"h"]
GENERATION = 7

rows = st.builds(
    lambda kind, size, mtime, mode, cid, link, unreadable: EntryRow(
        relative_path=b"",
        kind=kind,
        size=size if kind is EntryKind.FILE else 0,
        mtime_ns=mtime,
        mode=mode,
        content_id=cid if kind is EntryKind.FILE else None,
        symlink_target=link if kind is EntryKind.SYMLINK else None,
        unreadable=unreadable,
    ),
    st.sampled_from(list(EntryKind)),
    st.sampled_from([0, 3]),
    st.sampled_from([1_000, 2_000]),
    # 0o100644 vs 0o100600: the permission bits differ; 0o100644 vs 0o644:
    # only the type bits, which neither side compares.
    st.sampled_from([0o100644, 0o100600, 0o644]),
    st.sampled_from(["a" * 64, "b" * 64, None]),
    st.sampled_from([b"x", b"y"]),
    st.booleans(),
)
sides = st.dictionaries(st.sampled_from(PATHS), rows, max_size=len(PATHS))
# One field of a row changed at a time: the near misses that agreement must
# tell apart (only the mode's type bits may differ and still agree).
_NUDGES = {
    "kind": lambda r: replace(r, kind=EntryKind((r.kind + 1) % 3)),
    "size": lambda r: replace(r, size=r.size + 1),
    "mtime": lambda r: replace(r, mtime_ns=r.mtime_ns + 1),
    "permissions": lambda r: replace(r, mode=r.mode ^ 0o022),
    "type bits": lambda r: replace(r, mode=r.mode ^ 0o100000),
    "content": lambda r: replace(r, content_id=None if r.content_id else "c" * 64),
    "link": lambda r: replace(r, symlink_target=(r.symlink_target or b"") + b"z"),
    "unreadable": lambda r: replace(r, unreadable=not r.unreadable),
}


@st.composite
def pairs(
    draw: st.DrawFn,
) -> tuple[dict[bytes, EntryRow], dict[bytes, EntryRow]]:
    """Both sides: the target's row of a path is often the source's, as is or
    with one field nudged."""
    source = draw(sides)
    target = draw(sides)
    for path, row in source.items():
        how = draw(st.sampled_from(["own", "same", *_NUDGES]))
        if how == "same":
            target[path] = row
        elif how != "own":
            target[path] = _NUDGES[how](row)
    return source, target


def _at(path: bytes, row: EntryRow) -> EntryRow:
    return EntryRow(
        path,
        row.kind,
        row.size,
        row.mtime_ns,
        row.mode,
        row.content_id,
        row.symlink_target,
        row.unreadable,
    )


def expected_baseline(
    old: dict[bytes, BaselineRow],
    source: dict[bytes, EntryRow],
    target: dict[bytes, EntryRow],
    touched: set[bytes],
) -> dict[bytes, BaselineRow]:
    rows = dict(old)
    for path in touched:
        agreed = agreed_entry(source.get(path), target.get(path))
        if agreed is not None:
            rows[path] = to_baseline(agreed, GENERATION)
        elif path not in source and path not in target:
            rows.pop(path, None)
    return rows


class _Library:
    """A library with one two-way conduit, built once per module; each
    example replaces its rows inside a transaction that it rolls back."""

    def __init__(self, work: Path) -> None:
        self.work = work
        for side in ("src", "dst"):
            (self.work / side).mkdir()
        config_path = self.work / "conduitd.toml"
        config_path.write_text(
            f'[daemon]\nstate_dir = "{self.work / "state"}"\n\n[[conduit]]\n'
            f'name = "s"\nsource = "{self.work / "src"}"\n'
            f'target = "{self.work / "dst"}"\nmode = "bidirectional"\nmin_free = "1%"\n'
        )
        self.config = load_config(config_path)
        anyio.run(self._sync)

    async def _sync(self) -> None:
        async with writer_session(self.config) as session:
            await session.service().sync_now("s")

    async def check(
        self,
        source: dict[bytes, EntryRow],
        target: dict[bytes, EntryRow],
        old: dict[bytes, EntryRow],
        touched: set[bytes],
    ) -> None:
        old_rows = {p: to_baseline(_at(p, r), 1) for p, r in old.items()}
        async with writer_session(self.config) as session:
            db = session.library.db
            with_rows = [(1, source), (2, target)]
            try:
                async with session.tm.transaction() as tx:
                    await tx.execute("DELETE FROM entry WHERE relative_path != x''")
                    await tx.execute("DELETE FROM sync_baseline")
                    for location_id, side in with_rows:
                        await tx.execute_many(
                            "INSERT INTO entry (location_id, name, relative_path,"
                            " kind, size, mtime_ns, mode, content_id, symlink_target,"
                            " unreadable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [
                                (
                                    location_id,
                                    p.rpartition(b"/")[2],
                                    p,
                                    int(r.kind),
                                    r.size,
                                    r.mtime_ns,
                                    r.mode,
                                    r.content_id,
                                    r.symlink_target,
                                    int(r.unreadable),
                                )
                                for p, r in side.items()
                            ],
                        )
                    await tx.execute_many(
                        "INSERT INTO sync_baseline (conduit_id, relative_path, kind,"
                        " content_id, size, mtime_ns, mode, symlink_target,"
                        " generation) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                r.relative_path,
                                int(r.kind),
                                r.content_id,
                                r.size,
                                r.mtime_ns,
                                r.mode,
                                r.symlink_target,
                                r.generation,
                            )
                            for r in old_rows.values()
                        ],
                    )
                    await record_agreed_paths(tx, 1, 1, 2, touched, GENERATION)
                    written = await load_baseline(tx, 1)
                    raise _RollBack(written)
            except _RollBack as done:
                written = done.written
            full = {p: _at(p, r) for p, r in source.items()}
            other = {p: _at(p, r) for p, r in target.items()}
            assert written == expected_baseline(old_rows, full, other, touched)
            # The example's rows went with the transaction: only the roots stay.
            counted = await db.fetch_one("SELECT COUNT(*) FROM entry")
            assert tuple(counted or ()) == (2,)


class _RollBack(Exception):
    def __init__(self, written: dict[bytes, BaselineRow]) -> None:
        super().__init__()
        self.written = written


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> _Library:
    # Module scope: built once, shared by every example hypothesis draws.
    return _Library(tmp_path_factory.mktemp("baseline-sql"))


@settings(max_examples=150, deadline=None)
@given(pairs(), sides, st.sets(st.sampled_from(PATHS)))
def test_sql_baseline_matches_the_model(
    library: _Library,
    both: tuple[dict[bytes, EntryRow], dict[bytes, EntryRow]],
    old: dict[bytes, EntryRow],
    touched: set[bytes],
) -> None:
    anyio.run(library.check, *both, old, touched)
