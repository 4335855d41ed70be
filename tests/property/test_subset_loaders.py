"""The subset loaders return exactly what filtering the whole maps returns.

`load_entry_subset` (rows of the paths, their subtrees and their ancestors)
and `load_baseline_subset` (rows of the paths and their subtrees) query by IN
lists and ranged primary-key lookups; this compares them with the whole maps
filtered in Python, on a real synced tree and random path sets (issue 6 bench
fix: they cost what is asked for, not what exists).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from conduitd.config import load_config
from conduitd.oneshot import writer_session
from conduitd.storage.baselines import load_baseline, load_baseline_subset
from conduitd.storage.entries import load_entry_map, load_entry_subset

# Names chosen so that siblings sort inside a naive [p, p + b"0") range:
# "a" < "a b" < "a.txt" < "a/..." < "a0".
TREE = [
    "a/x.txt",
    "a/y/z.txt",
    "a b/q.txt",
    "a.txt",
    "a0",
    "b/c/d/e.txt",
    "b/c.txt",
    "caf\u00e9/n.txt",
]
CANDIDATES = sorted(
    {b""}
    | {p.encode() for p in TREE}
    | {p.encode().rpartition(b"/")[0] for p in TREE}
    | {b"missing", b"a/missing", b"b/c/d"}
)


def _within(path: bytes, top: bytes) -> bool:
    return not top or path == top or path.startswith(top + b"/")


def _ancestors(path: bytes) -> set[bytes]:
    found = {b""}
    while path:
        path = path.rpartition(b"/")[0]
        found.add(path)
    return found


class _Library:
    """One synced bidirectional conduit over TREE, built once per module."""

    def __init__(self, work: Path) -> None:
        self.work = work
        source, target = self.work / "src", self.work / "dst"
        for rel in TREE:
            path = source / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rel)
        target.mkdir()
        config_path = self.work / "conduitd.toml"
        config_path.write_text(
            f'[daemon]\nstate_dir = "{self.work / "state"}"\n\n[[conduit]]\n'
            f'name = "s"\nsource = "{source}"\ntarget = "{target}"\n'
            'mode = "bidirectional"\nmin_free = "1%"\n'
        )
        self.config = load_config(config_path)
        anyio.run(self._sync)

    async def _sync(self) -> None:
        async with writer_session(self.config) as session:
            await session.service().sync_now("s")

    async def check(self, wanted: set[bytes]) -> None:
        async with writer_session(self.config) as session:
            db = session.library.db
            whole = await load_entry_map(db, 1)
            # The root row always; b"" among the paths means no subtree here.
            need = {b""}.union(*(_ancestors(w) for w in wanted))
            expected = {
                p: row
                for p, row in whole.items()
                if p in need or any(w and _within(p, w) for w in wanted)
            }
            assert await load_entry_subset(db, 1, wanted) == expected
            baseline = await load_baseline(db, 1)
            expected_base = {
                p: row
                for p, row in baseline.items()
                if any(w and _within(p, w) for w in wanted)
            }
            assert await load_baseline_subset(db, 1, wanted) == expected_base


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> _Library:
    # Module scope: built once, shared by every example hypothesis draws.
    return _Library(tmp_path_factory.mktemp("subsets"))


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from(CANDIDATES), max_size=6))
def test_subset_loaders_match_filtered_whole_maps(
    library: _Library, wanted: set[bytes]
) -> None:
    anyio.run(library.check, wanted)
