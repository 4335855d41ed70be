"""Whole bidirectional runs under random edits on both sides (issue 6).

A hypothesis RuleBasedStateMachine creates, edits, deletes and renames files
and directories on both sides of a real conduit, interleaved with one-shot
syncs (the service in-process, through `oneshot.writer_session`) and
`resolve` calls. After every sync:

- both sides are equal, pending-conflict paths aside;
- no version that was on a side before the sync is lost: it is on a side or
  in a `.conduitd/trash` afterwards (the trash is never pruned here);
- a second sync with no changes does nothing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from conduitd.config import load_config
from conduitd.oneshot import Session, writer_session
from conduitd.storage.conflicts import ConflictStatus, Resolution
from conduitd.sync.resolve_conflict import ConflictChanged, resolve_conflict
from helpers.digests import ENTRY_ROWS, untrue_digests
from helpers.mirror import query

SIDES = st.sampled_from(["source", "target"])
# A small name space, so that both sides collide often (same names, a file
# where the other side has a directory, renames onto names in use).
NAMES = ["a.txt", "b", "d", "d/a.txt", "d/b", "d/e/a.txt", "e", "e/a.txt"]
STRATEGIES = [
    "newest_wins",
    "source_wins",
    "target_wins",
    "create_conflict_file",
    "prompt_user",
]
ANCHOR = "anchor.txt"  # never touched: neither side is ever empty (a brake)


def _walk(root: Path) -> dict[str, object]:
    """Relative path -> bytes (files) or "<dir>", `.conduitd` excluded."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".conduitd"]
        for name in dirnames:
            found[os.path.normpath(os.path.join(rel_dir, name))] = "<dir>"
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.normpath(os.path.join(rel_dir, name))] = Path(
                path
            ).read_bytes()
    return found


def _trashed(root: Path) -> set[bytes]:
    trash = root / ".conduitd" / "trash"
    if not trash.exists():
        return set()
    return {p.read_bytes() for p in trash.rglob("*") if p.is_file()}


class BidirectionalRuns(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.work = Path(tempfile.mkdtemp(prefix="conduitd-machine-"))
        self.roots = {"source": self.work / "src", "target": self.work / "dst"}
        for root in self.roots.values():
            root.mkdir()
        self.counter = itertools.count()
        self.portal_cm: Any = None
        self.portal: BlockingPortal | None = None
        self.session_cm: Any = None
        self.session: Session | None = None
        self.synced = False

    @initialize(strategy=st.sampled_from(STRATEGIES))
    def open_conduit(self, strategy: str) -> None:
        config_path = self.work / "conduitd.toml"
        config_path.write_text(
            f'[daemon]\nstate_dir = "{self.work / "state"}"\nlog_level = "error"\n\n'
            f'[[conduit]]\nname = "m"\nsource = "{self.roots["source"]}"\n'
            f'target = "{self.roots["target"]}"\nmode = "bidirectional"\n'
            f'conflict = "{strategy}"\nmax_delete_percent = 100\nmin_free = "1%"\n'
        )
        (self.roots["source"] / ANCHOR).write_bytes(b"anchor")
        config = load_config(config_path)
        self.portal_cm = start_blocking_portal()
        self.portal = self.portal_cm.__enter__()
        self.session_cm = self.portal.wrap_async_context_manager(writer_session(config))
        self.session = self.session_cm.__enter__()

    def teardown(self) -> None:
        try:
            if self.session_cm is not None:
                self.session_cm.__exit__(None, None, None)
            if self.portal_cm is not None:
                self.portal_cm.__exit__(None, None, None)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- the user, on either side -------------------------------------------------

    def _content(self) -> bytes:
        return f"version {next(self.counter)}\n".encode()

    def _files(self, side: str) -> list[str]:
        tree = _walk(self.roots[side])
        return sorted(p for p, v in tree.items() if v != "<dir>" and p != ANCHOR)

    def _can_create(self, side: str, rel: str) -> bool:
        root = self.roots[side]
        if os.path.lexists(root / rel):
            return False
        parent = os.path.dirname(rel)
        while parent:
            path = root / parent
            if os.path.lexists(path) and not path.is_dir():
                return False
            parent = os.path.dirname(parent)
        return True

    @rule(side=SIDES, rel=st.sampled_from(NAMES))
    def create(self, side: str, rel: str) -> None:
        if self._can_create(side, rel):
            path = self.roots[side] / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._content())

    @rule(side=SIDES, data=st.data())
    def edit(self, side: str, data: st.DataObject) -> None:
        files = self._files(side)
        if files:
            rel = data.draw(st.sampled_from(files))
            (self.roots[side] / rel).write_bytes(self._content())

    @rule(data=st.data())
    def edit_both_sides(self, data: st.DataObject) -> None:
        """The same file changed on both sides: a conflict, unless it matches."""
        files = sorted(set(self._files("source")) & set(self._files("target")))
        if files:
            rel = data.draw(st.sampled_from(files))
            for side in ("source", "target"):
                (self.roots[side] / rel).write_bytes(self._content())

    @rule(rel=st.sampled_from(NAMES))
    def create_on_both_sides(self, rel: str) -> None:
        if self._can_create("source", rel) and self._can_create("target", rel):
            for side in ("source", "target"):
                path = self.roots[side] / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self._content())

    @rule(side=SIDES, data=st.data())
    def delete(self, side: str, data: st.DataObject) -> None:
        files = self._files(side)
        if files:
            (self.roots[side] / data.draw(st.sampled_from(files))).unlink()

    @rule(side=SIDES, data=st.data())
    def delete_directory(self, side: str, data: st.DataObject) -> None:
        tree = _walk(self.roots[side])
        dirs = sorted(p for p, v in tree.items() if v == "<dir>")
        if dirs:
            shutil.rmtree(self.roots[side] / data.draw(st.sampled_from(dirs)))

    @rule(side=SIDES, data=st.data(), to=st.sampled_from(NAMES))
    def rename(self, side: str, data: st.DataObject, to: str) -> None:
        files = self._files(side)
        if files and self._can_create(side, to):
            rel = data.draw(st.sampled_from(files))
            if to.startswith(rel + "/"):
                return
            destination = self.roots[side] / to
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.roots[side] / rel, destination)

    # -- conduitd -----------------------------------------------------------------

    def _call(self, func: Any, *args: Any) -> Any:
        assert self.portal is not None
        return self.portal.call(func, *args)

    async def _sync(self) -> Any:
        assert self.session is not None
        return await self.session.service().sync_now("m")

    async def _pending(self) -> list[Any]:
        assert self.session is not None
        rows = self.session.service().conflict_rows
        return await rows.list(status=ConflictStatus.PENDING)

    def _check_converged(self) -> set[str]:
        pending = {os.fsdecode(c.relative_path) for c in self._call(self._pending)}
        source, target = (_walk(self.roots[s]) for s in ("source", "target"))
        for tree in (source, target):
            for path in pending:
                tree.pop(path, None)
        assert source == target
        return pending

    @rule()
    def sync(self) -> None:
        before = {
            v
            for side in ("source", "target")
            for v in _walk(self.roots[side]).values()
            if isinstance(v, bytes)
        }
        first = self._call(self._sync)
        assert first.counts.errors_encountered == 0
        assert first.verification_status == "verified"
        assert untrue_digests(query(self.work / "state", ENTRY_ROWS)) == []
        pending = self._check_converged()
        after = set()
        for side in ("source", "target"):
            root = self.roots[side]
            after |= {v for v in _walk(root).values() if isinstance(v, bytes)}
            after |= _trashed(root)
        assert before <= after, before - after
        again = self._call(self._sync)
        counts = again.counts
        assert (
            counts.files_copied,
            counts.metadata_updated,
            counts.files_deleted,
            counts.conflicts_resolved,
            counts.files_skipped,
        ) == (0, 0, 0, 0, 0)
        assert counts.conflicts_pending == len(pending)
        self.synced = True

    @precondition(lambda self: self.synced)
    @rule(data=st.data(), keep=st.sampled_from(list(Resolution)))
    def resolve(self, data: st.DataObject, keep: Resolution) -> None:
        pending = self._call(self._pending)
        if not pending:
            return
        conflict = data.draw(st.sampled_from(pending))
        assert self.session is not None

        async def apply() -> Any:
            assert self.session is not None
            try:
                return await resolve_conflict(self.session.service(), conflict.id, keep)
            except ConflictChanged:
                return None  # edited since the last sync: refused, nothing touched

        outcome = self._call(apply)
        if outcome is not None:
            assert outcome.resolved
            path = os.fsdecode(conflict.relative_path)
            source, target = (_walk(self.roots[s]) for s in ("source", "target"))
            assert source.get(path) == target.get(path)


BidirectionalRuns.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_bidirectional_machine = BidirectionalRuns.TestCase
