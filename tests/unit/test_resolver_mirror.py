from __future__ import annotations

import dataclasses

import pytest

from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.operations import Held, SyncOperations
from conduitd.sync.resolver import (
    agreed_entry,
    resolve_mirror,
    same_content,
    same_metadata,
)
from conduitd.sync.rules import IndexRules

S = 1_000_000_000
RULES = IndexRules(ignore=["*.tmp", "node_modules/"])


def d(path: bytes, mode: int = 0o755, mtime_ns: int = S) -> EntryRow:
    return EntryRow(path, EntryKind.DIRECTORY, 0, mtime_ns, 0o40000 | mode)


def f(
    path: bytes,
    content: str = "aa",
    *,
    mtime_ns: int = S,
    mode: int = 0o644,
    unreadable: bool = False,
) -> EntryRow:
    return EntryRow(
        path,
        EntryKind.FILE,
        len(content),
        mtime_ns,
        0o100000 | mode,
        content_id=content,
        unreadable=unreadable,
    )


def link(
    path: bytes, to: bytes = b"elsewhere", *, mtime_ns: int = S, mode: int = 0o777
) -> EntryRow:
    return EntryRow(
        path, EntryKind.SYMLINK, len(to), mtime_ns, 0o120000 | mode, symlink_target=to
    )


def tree(*entries: EntryRow) -> dict[bytes, EntryRow]:
    found = {b"": d(b"")}
    found.update((e.relative_path, e) for e in entries)
    return found


def copied(ops: SyncOperations) -> list[bytes]:
    return [op.dest_path for op in ops.source_to_target.to_copy]


def updated(ops: SyncOperations) -> list[bytes]:
    return [op.relative_path for op in ops.source_to_target.to_update]


def deleted(ops: SyncOperations) -> list[bytes]:
    return [op.relative_path for op in ops.source_to_target.to_delete]


def test_identical_trees_need_nothing() -> None:
    both = tree(d(b"a"), f(b"a/x"), link(b"l"))
    ops = resolve_mirror(both, dict(both), RULES)
    assert ops.is_empty()
    assert ops.target_to_source is None
    assert not ops.held


def test_source_only_entries_are_copied_parents_first() -> None:
    source = tree(d(b"a"), d(b"a/b"), f(b"a/b/x"), f(b"a/y"), f(b"z"), link(b"l"))
    ops = resolve_mirror(source, tree(), RULES)
    assert copied(ops) == [b"a", b"l", b"z", b"a/b", b"a/y", b"a/b/x"]
    assert all(op.target is None for op in ops.source_to_target.to_copy)
    assert ops.count_files_copied() == 4  # the symlink counts, directories do not
    assert ops.bytes_to_copy() == 6


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (f(b"p", "new"), f(b"p", "old")),
        (f(b"p", "aa"), dataclasses.replace(f(b"p", "aa"), size=3)),
        (link(b"p", b"one"), link(b"p", b"two")),
        (f(b"p"), link(b"p")),
        (link(b"p"), f(b"p")),
        (d(b"p"), f(b"p")),
    ],
)
def test_different_kind_content_or_link_target_is_copied(
    src: EntryRow, dst: EntryRow
) -> None:
    ops = resolve_mirror(tree(src), tree(dst), RULES)
    (op,) = ops.source_to_target.to_copy
    assert (op.relative_path, op.source, op.target) == (b"p", src, dst)
    assert op.changes_kind is (src.kind != dst.kind)
    assert not op.replaces_directory


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (f(b"p", mode=0o600), f(b"p", mode=0o644)),
        (f(b"p", mtime_ns=2 * S), f(b"p", mtime_ns=S)),
        (link(b"p", mtime_ns=2 * S), link(b"p", mtime_ns=S)),
        (d(b"p", mode=0o700), d(b"p", mode=0o755)),
    ],
)
def test_same_content_other_metadata_is_an_update(src: EntryRow, dst: EntryRow) -> None:
    ops = resolve_mirror(tree(src), tree(dst), RULES)
    assert not ops.source_to_target.to_copy
    (op,) = ops.source_to_target.to_update
    assert (op.relative_path, op.source, op.target) == (b"p", src, dst)
    assert ops.count_updates() == 1


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (link(b"p", mode=0o777), link(b"p", mode=0o755)),  # no mode for symlinks
        (d(b"p", mtime_ns=5 * S), d(b"p", mtime_ns=S)),  # directory mtimes: best effort
    ],
)
def test_metadata_that_is_not_preserved_is_not_compared(
    src: EntryRow, dst: EntryRow
) -> None:
    assert resolve_mirror(tree(src), tree(dst), RULES).is_empty()


@pytest.mark.parametrize(
    ("src_ns", "dst_ns", "granularity_ns", "update"),
    [
        (3_100_000_000, 2_000_000_000, 2 * S, False),  # FAT: both floor to 2 s
        (3_900_000_000, 4_000_000_000, 2 * S, True),
        (1_999_999_999, 1_000_000_000, S, False),
        (1_000_000_001, 1_000_000_000, 1, True),
    ],
)
def test_mtimes_are_compared_at_the_granularity(
    src_ns: int, dst_ns: int, granularity_ns: int, update: bool
) -> None:
    ops = resolve_mirror(
        tree(f(b"p", mtime_ns=src_ns)),
        tree(f(b"p", mtime_ns=dst_ns)),
        RULES,
        mtime_granularity_ns=granularity_ns,
    )
    assert bool(ops.source_to_target.to_update) is update


def test_target_only_entries_are_deleted_children_first() -> None:
    target = tree(d(b"a"), d(b"a/b"), f(b"a/b/x"), f(b"a/y"), f(b"z"))
    ops = resolve_mirror(tree(), target, RULES)
    assert deleted(ops) == [b"a/b/x", b"a/b", b"a/y", b"a", b"z"]
    assert ops.count_files_deleted() == 3


def test_ignored_paths_are_never_copied_nor_deleted() -> None:
    source = tree(
        f(b"s.tmp"), d(b"node_modules"), f(b"node_modules/pkg.js"), f(b"keep")
    )
    target = tree(
        f(b"t.tmp"), d(b"app"), d(b"app/node_modules"), f(b"app/node_modules/m.js")
    )
    ops = resolve_mirror(source, target, RULES)
    assert copied(ops) == [b"keep"]
    assert deleted(ops) == []  # `app` holds an ignored directory, so it stays


def test_a_directory_holding_ignored_files_stays_while_the_rest_goes() -> None:
    target = tree(d(b"a"), f(b"a/x"), f(b"a/scratch.tmp"), d(b"a/sub"), f(b"a/sub/y"))
    ops = resolve_mirror(tree(), target, RULES)
    assert deleted(ops) == [b"a/sub/y", b"a/sub", b"a/x"]


def test_state_dir_is_never_synced() -> None:
    source = tree(d(b".conduitd"), f(b".conduitd/marker"), d(b"a"), d(b"a/.conduitd"))
    target = tree(
        d(b".conduitd"), f(b".conduitd/marker", "other"), f(b".conduitd/tmp/x")
    )
    ops = resolve_mirror(source, target, IndexRules(use_index_rules=False))
    assert copied(ops) == [b"a"]
    assert deleted(ops) == []


def test_the_root_entry_is_never_touched() -> None:
    source = {b"": d(b"", mode=0o700)}
    target = {b"": d(b"", mode=0o755)}
    assert resolve_mirror(source, target, RULES).is_empty()


def test_unreadable_source_file_is_not_copied_and_target_kept() -> None:
    source = tree(f(b"new", unreadable=True), f(b"changed", "v2", unreadable=True))
    target = tree(f(b"changed", "v1"))
    ops = resolve_mirror(source, target, RULES)
    assert ops.is_empty()
    assert ops.held == (Held(b"changed", "unreadable"), Held(b"new", "unreadable"))


def test_unreadable_target_entries_are_neither_deleted_nor_overwritten() -> None:
    source = tree(f(b"x", "v2"))
    target = tree(f(b"x", "v1", unreadable=True), f(b"gone", unreadable=True))
    ops = resolve_mirror(source, target, RULES)
    assert ops.is_empty()
    assert {h.relative_path for h in ops.held} == {b"x", b"gone"}


def test_an_unreadable_directory_covers_its_subtree_on_either_side() -> None:
    unreadable_dir = dataclasses.replace(d(b"a"), unreadable=True)
    # Target side: nothing under it is deleted or overwritten.
    target = tree(unreadable_dir, f(b"a/old"), f(b"a/x", "v1"))
    ops = resolve_mirror(tree(d(b"a"), f(b"a/x", "v2")), target, RULES)
    assert ops.is_empty()
    # Source side: its stale listing is neither copied nor taken as deletions.
    source = tree(unreadable_dir, f(b"a/new"))
    ops = resolve_mirror(source, tree(d(b"a"), f(b"a/old")), RULES)
    assert ops.is_empty()
    assert [h.relative_path for h in ops.held] == [b"a/new", b"a/old"]


def test_an_unreadable_root_covers_everything() -> None:
    source = {b"": dataclasses.replace(d(b""), unreadable=True)}
    ops = resolve_mirror(source, tree(f(b"x")), RULES)
    assert ops.is_empty()


def test_union_copies_and_updates_but_never_deletes() -> None:
    source = tree(f(b"new"), f(b"meta", mode=0o600), f(b"changed", "v2"))
    target = tree(f(b"meta"), f(b"changed", "v1"), f(b"extra"), d(b"dir"), f(b"dir/x"))
    ops = resolve_mirror(source, target, RULES, union=True)
    assert ops.union
    assert copied(ops) == [b"changed", b"new"]
    assert updated(ops) == [b"meta"]
    assert deleted(ops) == []


def test_a_directory_replaced_by_a_file_goes_as_one_subtree() -> None:
    source = tree(f(b"a"))
    target = tree(d(b"a"), d(b"a/b"), f(b"a/b/x"), f(b"a/y"))
    ops = resolve_mirror(source, target, RULES)
    (op,) = ops.source_to_target.to_copy
    assert op.replaces_directory
    assert op.target == target[b"a"]
    assert deleted(ops) == []


@pytest.mark.parametrize(
    ("extra", "union"),
    [
        (f(b"a/cache.tmp"), False),
        (f(b"a/locked", unreadable=True), False),
        (f(b"a/z"), True),
    ],
)
def test_a_directory_holding_what_must_stay_is_not_replaced(
    extra: EntryRow, union: bool
) -> None:
    target = tree(d(b"a"), f(b"a/y"), extra)
    ops = resolve_mirror(tree(f(b"a")), target, RULES, union=union)
    assert copied(ops) == []
    assert Held(b"a", "occupied") in ops.held
    assert b"a" not in deleted(ops)


def test_a_file_replaced_by_a_directory_is_a_kind_change_then_children() -> None:
    source = tree(d(b"a"), f(b"a/x"))
    ops = resolve_mirror(source, tree(f(b"a")), RULES)
    first, second = ops.source_to_target.to_copy
    assert first.changes_kind
    assert first.target == f(b"a")
    assert second.relative_path == b"a/x"


def test_incremental_paths_limit_resolution_to_their_subtrees() -> None:
    source = tree(d(b"a"), f(b"a/x", "v2"), d(b"a/b"), f(b"a/b/y"), f(b"other", "v2"))
    target = tree(d(b"a"), f(b"a/x", "v1"), f(b"a/gone"), f(b"other", "v1"))
    ops = resolve_mirror(source, target, RULES, paths=[b"a/b", b"a/gone"])
    assert copied(ops) == [b"a/b", b"a/b/y"]
    assert deleted(ops) == [b"a/gone"]


def test_incremental_paths_still_create_missing_ancestors() -> None:
    source = tree(d(b"a"), d(b"a/b"), f(b"a/b/y"))
    ops = resolve_mirror(source, tree(), RULES, paths=[b"a/b/y"])
    assert copied(ops) == [b"a", b"a/b", b"a/b/y"]
    assert ops.source_to_target.to_copy[0].source == source[b"a"]


def test_incremental_copy_under_a_target_file_is_held() -> None:
    source = tree(d(b"a"), f(b"a/y"))
    ops = resolve_mirror(source, tree(f(b"a")), RULES, paths=[b"a/y"])
    assert ops.is_empty()
    assert ops.held == (Held(b"a/y", "parent"),)


def test_incremental_root_path_means_everything() -> None:
    source = tree(f(b"x"))
    assert copied(resolve_mirror(source, tree(), RULES, paths=[b""])) == [b"x"]


def test_renames_are_a_copy_and_a_delete() -> None:
    source = tree(f(b"new-name", "data"))
    target = tree(f(b"old-name", "data"))
    ops = resolve_mirror(source, target, RULES)
    assert copied(ops) == [b"new-name"]
    assert deleted(ops) == [b"old-name"]


def test_comparison_helpers() -> None:
    assert same_content(f(b"a", "x"), f(b"b", "x", mode=0o600))
    assert not same_content(f(b"a"), link(b"a"))
    assert same_content(d(b"a", mode=0o700), d(b"a"))
    assert same_metadata(link(b"a", mode=0o700), link(b"a"))
    assert not same_metadata(d(b"a", mode=0o700), d(b"a"))
    assert same_metadata(
        f(b"a", mtime_ns=2 * S + 1), f(b"a", mtime_ns=3 * S - 1), 2 * S
    )
    assert agreed_entry(f(b"a"), f(b"a")) == f(b"a")
    assert agreed_entry(f(b"a"), None) is None
    assert agreed_entry(f(b"a", "x"), f(b"a", "y")) is None
