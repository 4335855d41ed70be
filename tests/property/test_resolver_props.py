"""Properties of the resolver, the conflict settlement and verification.

The resolved operations are applied to in-memory maps by a strict simulation
of the jobs: every copy, update and delete re-checks what it expects to find,
parents must exist, directories must be empty when removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conduitd.config.enums import ConflictStrategy
from conduitd.storage.models import BaselineRow, EntryKind, EntryRow
from conduitd.sync.conflicts import ConflictResolver, apply_settlements, taken_in
from conduitd.sync.operations import CopyOp, SyncOperations, to_baseline
from conduitd.sync.resolver import (
    agreed_entry,
    resolve_bidirectional,
    resolve_mirror,
    same_content,
    same_state,
)
from conduitd.sync.rules import IndexRules
from conduitd.sync.verification import (
    TRANSITIONS,
    InvalidTransition,
    Step,
    Verification,
    advance,
    parse_status,
)

Tree = dict[bytes, EntryRow]
DIR, FILE, LINK = EntryKind.DIRECTORY, EntryKind.FILE, EntryKind.SYMLINK
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
RULES = IndexRules(ignore=["*.tmp", "b/"])
NAMES = (b"a", b"b", b"c.txt", b"d.tmp", b"e")
CONTENTS = ("c1", "c2", "c3")
OLD_MTIMES = (1_000_000_000, 2_000_000_000)
NEW_MTIMES = (3_000_000_000, 4_000_000_000)

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(b"/".join)


def parent(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


def under(path: bytes, top: bytes) -> bool:
    return path.startswith(top + b"/")


def make(
    path: bytes, kind: EntryKind, content: str, mtime_ns: int, private: bool
) -> EntryRow:
    if kind is DIR:
        return EntryRow(path, DIR, 0, mtime_ns, 0o40700 if private else 0o40755)
    if kind is LINK:
        return EntryRow(
            path, LINK, 1, mtime_ns, 0o120777, symlink_target=content.encode()
        )
    size = int(content[1:]) * 10
    mode = 0o100600 if private else 0o100644
    return EntryRow(path, FILE, size, mtime_ns, mode, content_id=content)


def put(tree: Tree, entry: EntryRow) -> None:
    """Place an entry, making its ancestors directories and dropping a replaced subtree."""
    path = entry.relative_path
    ancestor = parent(path)
    chain = []
    while ancestor:
        chain.append(ancestor)
        ancestor = parent(ancestor)
    for ancestor in reversed(chain):
        if ancestor not in tree or tree[ancestor].kind is not DIR:
            remove(tree, ancestor)
            tree[ancestor] = make(ancestor, DIR, "", OLD_MTIMES[0], False)
    if entry.kind is not DIR or (path in tree and tree[path].kind is not DIR):
        remove(tree, path)
    tree[path] = entry


def remove(tree: Tree, path: bytes) -> None:
    for key in [k for k in tree if k == path or under(k, path)]:
        del tree[key]


def empty_tree() -> Tree:
    return {b"": EntryRow(b"", DIR, 0, 0, 0o40755)}


entry_specs = st.tuples(
    paths,
    st.sampled_from((FILE, FILE, DIR, LINK)),
    st.sampled_from(CONTENTS),
    st.sampled_from(OLD_MTIMES),
    st.booleans(),
)


@st.composite
def trees(draw: st.DrawFn, max_size: int = 10) -> Tree:
    tree = empty_tree()
    for path, kind, content, mtime_ns, private in draw(
        st.lists(entry_specs, max_size=max_size)
    ):
        put(tree, make(path, kind, content, mtime_ns, private))
    return tree


Edit = tuple[str, bytes, str, int]


def edits(tree: Tree) -> st.SearchStrategy[list[Edit]]:
    """Random edits, mostly of paths the tree already has."""
    existing = sorted(p for p in tree if p)
    targets = st.sampled_from(existing) | paths if existing else paths
    edit = st.tuples(
        st.sampled_from(
            ("write", "write", "touch", "chmod", "delete", "mkdir", "link")
        ),
        targets,
        st.sampled_from(CONTENTS),
        st.sampled_from(NEW_MTIMES),
    )
    return st.lists(edit, max_size=4)


def edited(tree: Tree, changes: Iterable[Edit]) -> Tree:
    tree = dict(tree)
    for action, path, content, mtime_ns in changes:
        current = tree.get(path)
        if action == "write":
            put(tree, make(path, FILE, content, mtime_ns, False))
        elif action == "link":
            put(tree, make(path, LINK, content, mtime_ns, False))
        elif action == "mkdir":
            put(tree, make(path, DIR, content, mtime_ns, False))
        elif action == "delete":
            remove(tree, path)
        elif current is not None and action == "touch" and current.kind is not DIR:
            tree[path] = dataclasses.replace(current, mtime_ns=mtime_ns)
        elif current is not None and action == "chmod":
            tree[path] = dataclasses.replace(current, mode=current.mode ^ 0o077)
    return tree


# --- the simulated jobs ----------------------------------------------------------


def ignored(path: bytes, *trees_: Mapping[bytes, EntryRow]) -> bool:
    kinds = {t[path].kind for t in trees_ if path in t} or {FILE}
    return any(RULES.is_ignored(path, kind is DIR) for kind in kinds)


def content_key(entry: EntryRow) -> tuple[EntryKind, str | None, int, bytes | None]:
    return (entry.kind, entry.content_id, entry.size, entry.symlink_target)


class Jobs:
    """Applies operations to two trees the way the jobs do, checking as it goes."""

    def __init__(self, source: Tree, target: Tree) -> None:
        self.trees = {"source": dict(source), "target": dict(target)}
        self.trashed: set[tuple[EntryKind, str | None, int, bytes | None]] = set()

    def copy(self, origin: str, dest: str, op: CopyOp) -> None:
        read, write = self.trees[origin], self.trees[dest]
        assert read.get(op.relative_path) == op.source, ("source changed", op)
        where = op.dest_path
        assert write.get(where) == op.target, ("destination changed", op)
        assert write.get(parent(where), empty_tree()[b""]).kind is DIR, (
            "no parent",
            op,
        )
        assert parent(where) in write, ("no parent", op)
        assert not ignored(where, write) or op.is_conflict_copy, ("writes ignored", op)
        if op.target is not None:
            self.trashed.add(content_key(op.target))
            if op.target.kind is DIR and op.source.kind is not DIR:
                for key in [k for k in write if under(k, where)]:
                    assert not ignored(key, write), ("trashes ignored", op, key)
                    self.trashed.add(content_key(write.pop(key)))
        write[where] = dataclasses.replace(op.source, relative_path=where)

    def run(self, ops: SyncOperations, *, target_first: bool = False) -> None:
        directions = [("source", "target", ops.source_to_target)]
        if ops.target_to_source is not None:
            directions.append(("target", "source", ops.target_to_source))
        if target_first:
            directions.reverse()
        for op in ops.within_source:
            self.copy("source", "source", op)
        for op in ops.within_target:
            self.copy("target", "target", op)
        for conflict_phase in (True, False):
            for origin, dest, directional in directions:
                for op in directional.to_copy:
                    if op.is_conflict_copy == conflict_phase:
                        self.copy(origin, dest, op)
        for origin, dest, directional in directions:
            for update in directional.to_update:
                write = self.trees[dest]
                assert self.trees[origin].get(update.relative_path) == update.source
                assert write.get(update.relative_path) == update.target, update
                write[update.relative_path] = dataclasses.replace(
                    update.target,
                    mode=update.source.mode,
                    mtime_ns=update.source.mtime_ns,
                )
        for _, dest, directional in directions:
            write = self.trees[dest]
            for delete in directional.to_delete:
                assert write.get(delete.relative_path) == delete.target, delete
                assert not any(under(k, delete.relative_path) for k in write), delete
                assert not ignored(delete.relative_path, write), delete
                del write[delete.relative_path]

    def check_structure(self) -> None:
        for tree in self.trees.values():
            for path in tree:
                if path:
                    assert tree[parent(path)].kind is DIR, path


def in_scope(path: bytes, scope: Iterable[bytes] | None) -> bool:
    if scope is None:
        return True
    return any(path == top or under(path, top) for top in scope)


def scopes(*trees_: Mapping[bytes, object]) -> st.SearchStrategy[list[bytes] | None]:
    """No scope (a full resolution) or a few dirty paths (an incremental one)."""
    known = sorted({p for tree in trees_ for p in tree if p})
    if not known:
        return st.none()
    return st.none() | st.lists(st.sampled_from(known) | paths, min_size=1, max_size=3)


def touched(ops: SyncOperations) -> set[bytes]:
    found = {op.dest_path for op in (*ops.within_source, *ops.within_target)}
    for _, directional in ops.directions():
        found |= {op.dest_path for op in directional.to_copy}
        found |= {op.relative_path for op in directional.to_update}
        found |= {op.relative_path for op in directional.to_delete}
    return found


def equal_on(source: Tree, target: Tree, paths_: Iterable[bytes]) -> None:
    for path in paths_:
        s, t = source.get(path), target.get(path)
        assert s is not None, ("missing on source", path, t)
        assert t is not None, ("missing on target", path, s)
        assert same_state(s, t), (path, s, t)


# --- mirror ------------------------------------------------------------------------


@st.composite
def with_unreadable(draw: st.DrawFn, tree: Tree) -> Tree:
    flagged = (
        draw(st.sets(st.sampled_from(sorted(tree)), max_size=2))
        if len(tree) > 1
        else set()
    )
    return {
        p: dataclasses.replace(e, unreadable=True) if p in flagged and p else e
        for p, e in tree.items()
    }


@given(data=st.data(), source=trees(), target=trees(), union=st.booleans())
def test_mirror_makes_target_equal_and_is_then_idle(
    data: st.DataObject, source: Tree, target: Tree, union: bool
) -> None:
    if data.draw(st.booleans()):
        source = data.draw(with_unreadable(source))
        target = data.draw(with_unreadable(target))
    scope = data.draw(scopes(source, target), label="paths")
    ops = resolve_mirror(source, target, RULES, union=union, paths=scope)
    note(repr(ops))
    jobs = Jobs(source, target)
    jobs.run(ops)
    jobs.check_structure()
    after = jobs.trees["target"]
    assert jobs.trees["source"] == source

    def covered(path: bytes) -> bool:
        return any(
            tree.get(p) is not None and tree[p].unreadable
            for tree in (source, target)
            for p in (path, *_ancestors(path))
        )

    def excluded(path: bytes) -> bool:
        held = any(
            path == h.relative_path or under(path, h.relative_path) for h in ops.held
        )
        return held or covered(path) or ignored(path, source, target)

    def outside(path: bytes) -> bool:
        return not in_scope(path, scope) or excluded(path)

    equal_on(source, after, [p for p in source if p and not outside(p)])
    for path, entry in target.items():
        if path and (ignored(path, source, target) or covered(path)):
            assert after.get(path) == entry, path
        if path and not in_scope(path, scope) and after.get(path) != entry:
            # Only an ancestor created for a copy in scope may change outside it.
            assert after[path] == source.get(path), path
            assert after[path].kind is DIR, path
            assert entry.kind is not DIR, path
    if not union:
        extra = [p for p in after if p and p not in source and not outside(p)]
        assert all(after[p].kind is DIR for p in extra), extra
    again = resolve_mirror(source, after, RULES, union=union, paths=scope)
    assert again.is_empty(), again


def _ancestors(path: bytes) -> list[bytes]:
    found = []
    while path:
        path = parent(path)
        found.append(path)
    return found


@given(source=trees(), target=trees())
def test_mirror_never_touches_ignored_or_unreadable(source: Tree, target: Tree) -> None:
    target = {
        p: dataclasses.replace(e, unreadable=p.endswith(b"c.txt"))
        for p, e in target.items()
    }
    ops = resolve_mirror(source, target, RULES)
    touched = [op.dest_path for op in ops.source_to_target.to_copy]
    touched += [op.relative_path for op in ops.source_to_target.to_update]
    touched += [op.relative_path for op in ops.source_to_target.to_delete]
    for path in touched:
        assert not ignored(path, source, target), path
        assert not any(
            target.get(p) is not None and target[p].unreadable
            for p in (path, *_ancestors(path))
        ), path


# --- bidirectional -------------------------------------------------------------------


def baseline_of(tree: Tree) -> dict[bytes, BaselineRow]:
    return {p: to_baseline(e, 1) for p, e in tree.items() if p}


def written_baseline(
    baseline: Mapping[bytes, BaselineRow],
    ops: SyncOperations,
    source: Tree,
    target: Tree,
) -> dict[bytes, BaselineRow]:
    """The baseline as the service writes it: the resolution's rows, then the
    final state of every path the run touched (agreed, gone, or left as it was)."""
    rows = dict(baseline)
    for path in ops.baseline_deletes:
        del rows[path]
    rows.update((e.relative_path, to_baseline(e, 2)) for e in ops.baseline_updates)
    for path in touched(ops):
        agreed = agreed_entry(source.get(path), target.get(path))
        if agreed is not None:
            rows[path] = to_baseline(agreed, 2)
        elif path not in source and path not in target:
            rows.pop(path, None)
    return rows


def user_written(
    tree: Tree, baseline: Mapping[bytes, BaselineRow], union: bool
) -> set[object]:
    written = set()
    for path, entry in tree.items():
        if not path or entry.kind is DIR or ignored(path, tree):
            continue
        base = None if union else baseline.get(path)
        if base is None or not same_content(entry, base):
            written.add(content_key(entry))
    return written


@given(
    data=st.data(),
    start=trees(),
    union=st.booleans(),
    strategy=st.sampled_from(
        (ConflictStrategy.NEWEST_WINS, ConflictStrategy.CREATE_CONFLICT_FILE)
    ),
    target_first=st.booleans(),
)
def test_bidirectional_converges_without_losing_user_data(
    data: st.DataObject,
    start: Tree,
    union: bool,
    strategy: ConflictStrategy,
    target_first: bool,
) -> None:
    source = edited(start, data.draw(edits(start), label="source edits"))
    target = edited(start, data.draw(edits(start), label="target edits"))
    baseline = {} if union and len(start) % 2 else baseline_of(start)
    scope = data.draw(scopes(source, target, baseline), label="paths")
    ops = resolve_bidirectional(
        source, target, baseline, RULES, union=union, paths=scope
    )
    settlements = ConflictResolver(strategy).settle_all(
        ops.conflicts, WHEN, taken_in(source, target)
    )
    final = apply_settlements(ops, settlements)
    note(repr(final))
    assert not final.conflicts
    # Only an incremental scope may leave a copy without its parent (the parent's
    # own kind conflict lies outside the scope).
    assert scope is not None or not final.held
    assert all(h.reason == "parent" for h in final.held)
    held = [h.relative_path for h in final.held]
    trusted = {} if union else baseline
    for _, directional in final.directions():
        for delete in directional.to_delete:
            if delete.target.kind is not DIR:
                base = trusted.get(delete.relative_path)
                assert base is not None, delete
                assert same_content(delete.target, base), delete

    jobs = Jobs(source, target)
    jobs.run(final, target_first=target_first)
    jobs.check_structure()
    after_s, after_t = jobs.trees["source"], jobs.trees["target"]
    visible = {
        p
        for p in set(after_s) | set(after_t)
        if p
        and in_scope(p, scope)
        and not ignored(p, after_s, after_t)
        and not any(p == h or under(p, h) for h in held)
    }
    equal_on(after_s, after_t, visible)
    for tree, before in ((after_s, source), (after_t, target)):
        for path, entry in before.items():
            if not in_scope(path, scope) and tree.get(path) != entry:
                assert tree[path].kind is DIR, path
                assert entry.kind is not DIR, path

    written = user_written(source, trusted, union) | user_written(
        target, trusted, union
    )
    kept = {content_key(e) for tree in (after_s, after_t) for e in tree.values()}
    if strategy is ConflictStrategy.CREATE_CONFLICT_FILE:
        assert written <= kept, written - kept
    else:
        assert written <= kept | jobs.trashed, written - kept - jobs.trashed

    new_baseline = written_baseline(baseline, final, after_s, after_t)
    again = resolve_bidirectional(after_s, after_t, new_baseline, RULES, paths=scope)
    assert again.is_empty(), again


# --- verification ----------------------------------------------------------------------


class VerificationMachine(RuleBasedStateMachine):
    """Random steps, legal or not, against the verification state machine."""

    def __init__(self) -> None:
        super().__init__()
        self.state = Verification.UNVERIFIED
        self.was_terminal = False

    @rule(step=st.sampled_from(Step))
    def take(self, step: Step) -> None:
        before = self.state
        if (before, step) in TRANSITIONS:
            self.state = advance(before, step)
            assert not before.is_terminal
        else:
            with pytest.raises(InvalidTransition):
                advance(before, step)

    @precondition(lambda self: not self.state.is_terminal)
    @rule()
    def interrupt(self) -> None:
        self.state = advance(self.state, Step.INTERRUPTED)
        assert self.state is Verification.FAILED_INTERRUPTED

    @invariant()
    def state_is_valid(self) -> None:
        assert parse_status(str(self.state)) is self.state
        assert isinstance(self.state, Verification)

    @invariant()
    def terminal_stays_terminal(self) -> None:
        if self.was_terminal:
            assert self.state.is_terminal
        self.was_terminal = self.state.is_terminal


TestVerificationMachine = VerificationMachine.TestCase
