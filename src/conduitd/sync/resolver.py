"""Pure resolution: the operations that make a conduit's two sides agree.

Inputs are index snapshots (`relative_path -> EntryRow`, the root under `b""`,
which the resolver never touches) and, for bidirectional mode, the baseline the
sides last agreed on. Paths are visited deepest first, so a directory is
decided knowing what stays beneath it on each side; then every copy gets the
parent directories it needs.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

from conduitd.storage.models import BaselineRow, EntryKind, EntryRow
from conduitd.sync.operations import (
    Conflict,
    ConflictReason,
    CopyOp,
    DeleteOp,
    DirectionalOps,
    Held,
    SyncOperations,
    UpdateOp,
    path_depth,
)
from conduitd.sync.rules import IndexRules

Entries = Mapping[bytes, EntryRow]
Baseline = Mapping[bytes, BaselineRow]
Comparable = EntryRow | BaselineRow

_SOURCE: Final = 0
_TARGET: Final = 1
_DIR: Final = EntryKind.DIRECTORY


def same_content(a: Comparable, b: Comparable) -> bool:
    """True when two entries hold the same thing (metadata aside).

    Files compare content_id and size, symlinks their target; two directories
    always hold the same thing (their contents are paths of their own).
    """
    if a.kind != b.kind:
        return False
    if a.kind is EntryKind.FILE:
        return a.content_id == b.content_id and a.size == b.size
    if a.kind is EntryKind.SYMLINK:
        return a.symlink_target == b.symlink_target
    return True


def same_metadata(a: Comparable, b: Comparable, mtime_granularity_ns: int = 1) -> bool:
    """True when two entries of one kind carry the same preserved metadata.

    Files: permission bits and mtime; symlinks: mtime only (no mode); directories:
    permission bits only (their mtimes are best effort). mtimes are floored to
    `mtime_granularity_ns` first, so a coarse filesystem clock never loops.
    """
    if a.kind is not EntryKind.SYMLINK and stat.S_IMODE(a.mode) != stat.S_IMODE(b.mode):
        return False
    if a.kind is _DIR:
        return True
    return a.mtime_ns // mtime_granularity_ns == b.mtime_ns // mtime_granularity_ns


def same_state(a: Comparable, b: Comparable, mtime_granularity_ns: int = 1) -> bool:
    """Same content and same metadata."""
    return same_content(a, b) and same_metadata(a, b, mtime_granularity_ns)


def agreed_entry(
    source: EntryRow | None, target: EntryRow | None, mtime_granularity_ns: int = 1
) -> EntryRow | None:
    """The state both sides agree on (the source's row), or None if they differ.

    The definition of the baseline a run leaves for the paths it touched:
    agreed → upsert the row, both absent → drop it, otherwise keep the old row
    (a skipped copy must still look changed to the next run). The service
    writes it in SQL (`storage.baselines.record_agreed_paths`); a property
    test holds that to this function.
    """
    if source is None or target is None:
        return None
    return source if same_state(source, target, mtime_granularity_ns) else None


def _parent(relative_path: bytes) -> bytes:
    return relative_path.rpartition(b"/")[0]


def _agree(a: EntryRow | None, b: EntryRow | None, granularity_ns: int) -> bool:
    if a is None or b is None:
        return a is b
    return same_state(a, b, granularity_ns)


class _Unreadable:
    """Which paths of one side lie at or under an unreadable entry."""

    def __init__(self, entries: Entries) -> None:
        self._paths = frozenset(p for p, e in entries.items() if e.unreadable)

    def covers(self, relative_path: bytes) -> bool:
        if not self._paths:
            return False
        path = relative_path
        while path not in self._paths:
            if not path:
                return False
            path = _parent(path)
        return True


class _Scope:
    """Membership in the incremental scope: listed paths and their subtrees."""

    def __init__(self, paths: Iterable[bytes]) -> None:
        self._roots = frozenset(paths)
        self._memo: dict[bytes, bool] = {b"": b"" in self._roots}

    def contains(self, relative_path: bytes) -> bool:
        memo = self._memo
        chain: list[bytes] = []
        path = relative_path
        while path not in memo:
            if path in self._roots:
                result = True
                break
            chain.append(path)
            path = _parent(path)
        else:
            result = memo[path]
        for visited in chain:
            memo[visited] = result
        return result


def _candidates(
    maps: Iterable[Collection[bytes]], paths: Iterable[bytes] | None
) -> list[bytes]:
    """Every path to decide, deepest first (the root excluded)."""
    keys: set[bytes] = set()
    for keys_of_map in maps:
        keys.update(keys_of_map)
    keys.discard(b"")
    if paths is not None:
        scope = _Scope(paths)
        keys = {p for p in keys if scope.contains(p)}
    return sorted(keys, key=path_depth, reverse=True)


class _Plan:
    """Operations collected during one resolution, indexed by the side written."""

    def __init__(
        self, source: Entries, target: Entries, mtime_granularity_ns: int
    ) -> None:
        self.sides = (source, target)
        self.granularity_ns = mtime_granularity_ns
        self.unreadable = (_Unreadable(source), _Unreadable(target))
        self.copies: tuple[dict[bytes, CopyOp], dict[bytes, CopyOp]] = ({}, {})
        self.updates: tuple[list[UpdateOp], list[UpdateOp]] = ([], [])
        self.deletes: tuple[dict[bytes, DeleteOp], dict[bytes, DeleteOp]] = ({}, {})
        self._deletes_below: tuple[dict[bytes, list[bytes]], ...] = ({}, {})
        # Directories with something staying beneath them after the run, per side.
        self.kept: tuple[set[bytes], set[bytes]] = (set(), set())
        # Paths that become directories through a conflict settlement (dir wins).
        self.future_dirs: tuple[set[bytes], set[bytes]] = (set(), set())
        self.conflicts: list[Conflict] = []
        self.held: list[Held] = []
        self.baseline_updates: list[EntryRow] = []
        self.baseline_deletes: list[bytes] = []

    def covered(self, relative_path: bytes) -> bool:
        """True when the path is at or under an unreadable entry on either side."""
        return any(u.covers(relative_path) for u in self.unreadable)

    def copy(
        self, side: int, path: bytes, entry: EntryRow, current: EntryRow | None
    ) -> None:
        self.copies[side][path] = CopyOp(path, entry, current)

    def update(
        self, side: int, path: bytes, entry: EntryRow, current: EntryRow
    ) -> None:
        self.updates[side].append(UpdateOp(path, entry, current))

    def delete(self, side: int, path: bytes, current: EntryRow) -> None:
        self.deletes[side][path] = DeleteOp(path, current)
        self._deletes_below[side].setdefault(_parent(path), []).append(path)

    def replace_directory(
        self, side: int, path: bytes, entry: EntryRow, current: EntryRow
    ) -> None:
        """Copy a non-directory over a directory whose whole subtree is going.

        The subtree's DeleteOps are absorbed: the jobs trash it as one with the
        directory, before deletes run.
        """
        below = self._deletes_below[side]
        stack = [path]
        while stack:
            for child in below.pop(stack.pop(), ()):
                del self.deletes[side][child]
                stack.append(child)
        self.copy(side, path, entry, current)

    def settle_presence(self, path: bytes) -> None:
        """Record, per side, whether `path` exists after the run."""
        parent = _parent(path)
        for side in (_SOURCE, _TARGET):
            present = path in self.sides[side] and path not in self.deletes[side]
            if present or path in self.copies[side]:
                self.kept[side].add(parent)

    def hold(self, path: bytes, reason: str) -> None:
        self.held.append(Held(path, reason))

    def ensure_parents(self, side: int) -> None:
        """Give every copy into `side` the directories above its destination.

        Missing ancestors are created from the other side's directories; a copy
        whose parent cannot become a directory is dropped and held.
        """
        into, have = self.copies[side], self.sides[side]
        other, unreadable = self.sides[1 - side], self.unreadable[side]
        ready: set[bytes] = {b""}
        for dest in sorted(into, key=path_depth):
            chain: list[bytes] = []
            ancestor = _parent(dest)
            while ancestor not in ready:
                chain.append(ancestor)
                ancestor = _parent(ancestor)
            for ancestor in reversed(chain):
                if not self._make_ready(side, ancestor, into, have, other, unreadable):
                    del into[dest]
                    self.hold(dest, "parent")
                    break
                ready.add(ancestor)

    def _make_ready(
        self,
        side: int,
        path: bytes,
        into: dict[bytes, CopyOp],
        have: Entries,
        other: Entries,
        unreadable: _Unreadable,
    ) -> bool:
        planned = into.get(path)
        if planned is not None:
            return planned.source.kind is _DIR
        if path in self.future_dirs[side]:
            return True
        current = have.get(path)
        if current is not None:
            return current.kind is _DIR and path not in self.deletes[side]
        model = other.get(path)
        if model is None or model.kind is not _DIR or unreadable.covers(path):
            return False
        self.copy(side, path, model, None)
        return True

    def operations(self, *, two_way: bool, union: bool) -> SyncOperations:
        for side in (_SOURCE, _TARGET):
            self.ensure_parents(side)
        source_to_target = DirectionalOps.of(
            self.copies[_TARGET].values(),
            self.updates[_TARGET],
            self.deletes[_TARGET].values(),
        )
        target_to_source = DirectionalOps.of(
            self.copies[_SOURCE].values(),
            self.updates[_SOURCE],
            self.deletes[_SOURCE].values(),
        )
        return SyncOperations(
            source_to_target=source_to_target,
            target_to_source=target_to_source if two_way else None,
            conflicts=tuple(sorted(self.conflicts, key=lambda c: c.relative_path)),
            union=union,
            baseline_updates=tuple(
                sorted(self.baseline_updates, key=lambda e: e.relative_path)
            ),
            baseline_deletes=tuple(sorted(self.baseline_deletes)),
            held=tuple(sorted(self.held, key=lambda h: h.relative_path)),
        )


def _is_ignored(rules: IndexRules, path: bytes, *entries: Comparable | None) -> bool:
    """Ignored as any kind the path has on either side (or had in the baseline)."""
    as_dir = {e.kind is _DIR for e in entries if e is not None}
    return any(rules.is_ignored(path, is_dir) for is_dir in as_dir)


# --- one-way modes: mirror and selective -------------------------------------

InScope = Callable[[bytes, EntryRow | None, EntryRow | None], bool]


def _one_way_path(
    plan: _Plan, path: bytes, s: EntryRow | None, t: EntryRow | None, union: bool
) -> None:
    """Make the target's `path` equal to the source's."""
    if plan.covered(path):
        if not _agree(s, t, plan.granularity_ns):
            plan.hold(path, "unreadable")
        return
    if s is None:
        assert t is not None  # a candidate exists on some side
        if union or (t.kind is _DIR and path in plan.kept[_TARGET]):
            return
        plan.delete(_TARGET, path, t)
    elif t is None:
        plan.copy(_TARGET, path, s, None)
    elif not same_content(s, t):
        if t.kind is not _DIR or s.kind is _DIR:
            plan.copy(_TARGET, path, s, t)
        elif path in plan.kept[_TARGET]:
            plan.hold(path, "occupied")
        else:
            plan.replace_directory(_TARGET, path, s, t)
    elif not same_metadata(s, t, plan.granularity_ns):
        plan.update(_TARGET, path, s, t)


def _resolve_one_way(
    source: Entries,
    target: Entries,
    in_scope: InScope,
    *,
    union: bool,
    mtime_granularity_ns: int,
    paths: Iterable[bytes] | None,
) -> SyncOperations:
    plan = _Plan(source, target, mtime_granularity_ns)
    for path in _candidates((source, target), paths):
        s, t = source.get(path), target.get(path)
        if in_scope(path, s, t):
            _one_way_path(plan, path, s, t, union)
        plan.settle_presence(path)
    return plan.operations(two_way=False, union=union)


def resolve_mirror(
    source: Entries,
    target: Entries,
    rules: IndexRules,
    *,
    union: bool = False,
    mtime_granularity_ns: int = 1,
    paths: Iterable[bytes] | None = None,
) -> SyncOperations:
    """Operations that make the target equal to the source (ignored paths aside).

    Args:
        union: an endpoint's index was lost: copy and update, never delete.
        mtime_granularity_ns: the target filesystem's mtime granularity.
        paths: resolve only these paths and everything beneath them.
    """

    def in_scope(path: bytes, s: EntryRow | None, t: EntryRow | None) -> bool:
        return not _is_ignored(rules, path, s, t)

    return _resolve_one_way(
        source,
        target,
        in_scope,
        union=union,
        mtime_granularity_ns=mtime_granularity_ns,
        paths=paths,
    )


def resolve_selective(
    source: Entries,
    target: Entries,
    rules: IndexRules,
    *,
    now_ns: int,
    recent_s: float | None = None,
    union: bool = False,
    mtime_granularity_ns: int = 1,
    paths: Iterable[bytes] | None = None,
) -> SyncOperations:
    """A mirror restricted to the selection; nothing outside it is touched.

    A non-directory is selected when the include patterns select it and, with
    `recent_s`, its mtime (the source's, else the target's) lies within
    `recent_s` of `now_ns`. A directory is selected when the include patterns
    select it and `recent_s` is off; other directories are only created as
    parents of selected entries, and never deleted.
    """
    recent_ns = None if recent_s is None else int(recent_s * 1_000_000_000)

    def in_scope(path: bytes, s: EntryRow | None, t: EntryRow | None) -> bool:
        if _is_ignored(rules, path, s, t):
            return False
        entry = s if s is not None else t
        assert entry is not None  # a candidate exists on some side
        is_dir = entry.kind is _DIR
        if not rules.is_selected(path, is_dir):
            return False
        if recent_ns is None:
            return True
        return not is_dir and now_ns - entry.mtime_ns <= recent_ns

    return _resolve_one_way(
        source,
        target,
        in_scope,
        union=union,
        mtime_granularity_ns=mtime_granularity_ns,
        paths=paths,
    )


# --- bidirectional -------------------------------------------------------------


def _changed(entry: EntryRow, base: BaselineRow | None, granularity_ns: int) -> bool:
    return base is None or not same_state(entry, base, granularity_ns)


def _one_side_present(
    plan: _Plan, path: bytes, side: int, entry: EntryRow, base: BaselineRow | None
) -> None:
    """`path` exists on `side` only: propagate it, or propagate its deletion."""
    if base is None:
        plan.copy(1 - side, path, entry, None)
        return
    if entry.kind is _DIR:
        deletable = base.kind is _DIR and path not in plan.kept[side]
    else:
        deletable = not _changed(entry, base, plan.granularity_ns)
    if deletable:
        plan.delete(side, path, entry)
    else:  # modified (or still holding something) on one side, deleted on the other
        plan.copy(1 - side, path, entry, None)


def _older_side(s: EntryRow, t: EntryRow, base: BaselineRow | None, g: int) -> int:
    """The side whose metadata gives way when both hold the same content."""
    if base is not None:
        if same_state(s, base, g):
            return _SOURCE
        if same_state(t, base, g):
            return _TARGET
    return _TARGET if s.mtime_ns >= t.mtime_ns else _SOURCE


def _kind_mismatch(
    plan: _Plan, path: bytes, s: EntryRow, t: EntryRow, base: BaselineRow | None
) -> None:
    """A directory on one side, a file or symlink on the other."""
    dir_side = _SOURCE if s.kind is _DIR else _TARGET
    file_side = 1 - dir_side
    directory, other = (s, t) if dir_side == _SOURCE else (t, s)
    if base is not None and not _changed(other, base, plan.granularity_ns):
        plan.copy(file_side, path, directory, other)
    elif base is not None and base.kind is _DIR and path not in plan.kept[dir_side]:
        plan.replace_directory(dir_side, path, other, directory)
    else:  # the directory wins; the settlement keeps the file as a conflict copy
        plan.conflicts.append(Conflict(path, s, t, base, ConflictReason.KIND))
        plan.future_dirs[file_side].add(path)


def _both_present(
    plan: _Plan,
    path: bytes,
    s: EntryRow,
    t: EntryRow,
    base: BaselineRow | None,
    stored: BaselineRow | None,
) -> None:
    g = plan.granularity_ns
    if same_content(s, t):
        if same_metadata(s, t, g):
            if stored is None or not same_state(s, stored, g):
                plan.baseline_updates.append(s)
        elif _older_side(s, t, base, g) == _TARGET:
            plan.update(_TARGET, path, s, t)
        else:
            plan.update(_SOURCE, path, t, s)
    elif s.kind is _DIR or t.kind is _DIR:
        _kind_mismatch(plan, path, s, t, base)
    elif base is not None and same_content(s, base):
        plan.copy(_SOURCE, path, t, s)
    elif base is not None and same_content(t, base):
        plan.copy(_TARGET, path, s, t)
    else:
        reason = (
            ConflictReason.BOTH_ADDED if base is None else ConflictReason.BOTH_MODIFIED
        )
        plan.conflicts.append(Conflict(path, s, t, base, reason))


def _bidirectional_path(
    plan: _Plan,
    path: bytes,
    stored: BaselineRow | None,
    rules: IndexRules,
    union: bool,
) -> None:
    s, t = plan.sides[_SOURCE].get(path), plan.sides[_TARGET].get(path)
    present = tuple(e for e in (s, t) if e is not None)
    if _is_ignored(rules, path, *(present or (stored,))) or not present:
        # An ignored path's stale row must not become a delete if the rule goes.
        if stored is not None:
            plan.baseline_deletes.append(path)
        return
    if union and stored is not None and not _agree(s, t, plan.granularity_ns):
        # The baseline is not trusted in a union run: a row the sides do not
        # agree on now must not outlive it (the service rewrites touched paths).
        plan.baseline_deletes.append(path)
    base = None if union else stored
    if plan.covered(path):
        if not _agree(s, t, plan.granularity_ns):
            plan.hold(path, "unreadable")
    elif t is None:
        assert s is not None  # `present` holds one of them
        _one_side_present(plan, path, _SOURCE, s, base)
    elif s is None:
        _one_side_present(plan, path, _TARGET, t, base)
    else:
        _both_present(plan, path, s, t, base, stored)


def resolve_bidirectional(
    source: Entries,
    target: Entries,
    baseline: Baseline,
    rules: IndexRules,
    *,
    union: bool = False,
    mtime_granularity_ns: int = 1,
    paths: Iterable[bytes] | None = None,
) -> SyncOperations:
    """Three-way resolution of both sides against the baseline they agreed on.

    Args:
        union: a first sync in all but name (an endpoint's index was lost): the
            baseline is not trusted, nothing is deleted, differences conflict.
        mtime_granularity_ns: the coarser granularity of the two filesystems.
        paths: resolve only these paths and everything beneath them.
    """
    plan = _Plan(source, target, mtime_granularity_ns)
    for path in _candidates((source, target, baseline), paths):
        _bidirectional_path(plan, path, baseline.get(path), rules, union)
        plan.settle_presence(path)
    return plan.operations(two_way=True, union=union)
