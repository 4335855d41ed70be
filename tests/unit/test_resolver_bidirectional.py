from __future__ import annotations

import dataclasses

import pytest

from conduitd.storage.models import BaselineRow, EntryKind, EntryRow
from conduitd.sync.operations import (
    ConflictReason,
    CopyOp,
    Direction,
    Held,
    SyncOperations,
    to_baseline,
)
from conduitd.sync.resolver import resolve_bidirectional
from conduitd.sync.rules import IndexRules

S = 1_000_000_000
RULES = IndexRules(ignore=["*.tmp"])
S2T, T2S = Direction.SOURCE_TO_TARGET, Direction.TARGET_TO_SOURCE


def d(path: bytes, mode: int = 0o755, mtime_ns: int = S) -> EntryRow:
    return EntryRow(path, EntryKind.DIRECTORY, 0, mtime_ns, 0o40000 | mode)


def f(
    path: bytes,
    content: str = "base",
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


def tree(*entries: EntryRow) -> dict[bytes, EntryRow]:
    found = {b"": d(b"")}
    found.update((e.relative_path, e) for e in entries)
    return found


def base(*entries: EntryRow) -> dict[bytes, BaselineRow]:
    return {e.relative_path: to_baseline(e, 1) for e in entries}


def summary(ops: SyncOperations) -> dict[str, list[bytes]]:
    """Non-empty op lists by name, e.g. {"copy s2t": [b"x"]}."""
    found: dict[str, list[bytes]] = {}
    for direction, directional in ops.directions():
        short = "s2t" if direction is S2T else "t2s"
        lists = {
            f"copy {short}": [op.dest_path for op in directional.to_copy],
            f"update {short}": [op.relative_path for op in directional.to_update],
            f"delete {short}": [op.relative_path for op in directional.to_delete],
        }
        found.update((k, v) for k, v in lists.items() if v)
    if ops.conflicts:
        found["conflict"] = [c.relative_path for c in ops.conflicts]
    return found


def resolve(
    source: dict[bytes, EntryRow],
    target: dict[bytes, EntryRow],
    baseline: dict[bytes, BaselineRow],
    **options: bool,
) -> SyncOperations:
    return resolve_bidirectional(source, target, baseline, RULES, **options)


X, X2, X3 = (
    f(b"x"),
    f(b"x", "s-edit", mtime_ns=2 * S),
    f(b"x", "t-edit", mtime_ns=3 * S),
)
XMODE = f(b"x", mode=0o600, mtime_ns=2 * S)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        pytest.param(X, X, {}, id="unchanged"),
        pytest.param(X2, X, {"copy s2t": [b"x"]}, id="modified-on-source"),
        pytest.param(X, X3, {"copy t2s": [b"x"]}, id="modified-on-target"),
        pytest.param(XMODE, X, {"update s2t": [b"x"]}, id="metadata-on-source"),
        pytest.param(X, XMODE, {"update t2s": [b"x"]}, id="metadata-on-target"),
        pytest.param(None, X, {"delete s2t": [b"x"]}, id="deleted-on-source"),
        pytest.param(X, None, {"delete t2s": [b"x"]}, id="deleted-on-target"),
        pytest.param(
            None, X3, {"copy t2s": [b"x"]}, id="deleted-source-modified-target"
        ),
        pytest.param(
            X2, None, {"copy s2t": [b"x"]}, id="modified-source-deleted-target"
        ),
        pytest.param(
            None, XMODE, {"copy t2s": [b"x"]}, id="deleted-source-chmod-target"
        ),
        pytest.param(None, None, {}, id="deleted-on-both"),
        pytest.param(X2, X3, {"conflict": [b"x"]}, id="modified-differently"),
        pytest.param(X2, X2, {}, id="modified-the-same"),
        pytest.param(
            X2,
            dataclasses.replace(X2, mtime_ns=4 * S),
            {"update t2s": [b"x"]},
            id="same-edit-newer-target-metadata-wins",
        ),
        pytest.param(
            dataclasses.replace(XMODE, mtime_ns=3 * S),
            f(b"x", mtime_ns=2 * S),
            {"update s2t": [b"x"]},
            id="both-metadata-newer-source-wins",
        ),
        pytest.param(
            dataclasses.replace(XMODE, mtime_ns=3 * S),
            f(b"x", mtime_ns=3 * S),
            {"update s2t": [b"x"]},
            id="metadata-tie-source-wins",
        ),
        pytest.param(
            XMODE, X3, {"copy t2s": [b"x"]}, id="metadata-vs-content-content-wins"
        ),
    ],
)
def test_three_way_table(
    source: EntryRow | None, target: EntryRow | None, expected: dict[str, list[bytes]]
) -> None:
    ops = resolve(tree(*filter(None, [source])), tree(*filter(None, [target])), base(X))
    assert summary(ops) == expected


def test_propagated_copies_name_what_they_overwrite() -> None:
    ops = resolve(tree(X), tree(X3), base(X))
    assert ops.target_to_source is not None
    assert ops.target_to_source.to_copy == (CopyOp(b"x", X3, X),)


def test_changed_on_both_to_different_content_is_a_conflict() -> None:
    ops = resolve(tree(X2), tree(X3), base(X))
    (conflict,) = ops.conflicts
    assert conflict.reason is ConflictReason.BOTH_MODIFIED
    assert (conflict.source, conflict.target) == (X2, X3)
    assert conflict.baseline == to_baseline(X, 1)


def test_changed_on_both_to_same_content_writes_only_the_baseline() -> None:
    ops = resolve(tree(X2), tree(X2), base(X))
    assert ops.is_empty()
    assert ops.baseline_updates == (X2,)


def test_both_deleted_drops_the_baseline_row() -> None:
    ops = resolve(tree(), tree(), base(X))
    assert ops.is_empty()
    assert ops.baseline_deletes == (b"x",)


def test_equal_paths_with_a_current_baseline_write_nothing() -> None:
    ops = resolve(tree(X), tree(X), base(X))
    assert (ops.baseline_updates, ops.baseline_deletes) == ((), ())


def test_both_added_differently_is_a_conflict_and_alike_is_agreed() -> None:
    source = tree(f(b"a", "one"), f(b"b", "same"))
    target = tree(f(b"a", "two"), f(b"b", "same"))
    ops = resolve(source, target, base(f(b"other")))
    assert summary(ops) == {"conflict": [b"a"]}
    assert ops.conflicts[0].reason is ConflictReason.BOTH_ADDED
    assert ops.baseline_updates == (source[b"b"],)


def test_first_sync_is_a_union() -> None:
    source = tree(f(b"s-only"), f(b"both", "one"), d(b"dir"), f(b"dir/s"))
    target = tree(f(b"t-only"), f(b"both", "two"), d(b"dir"), f(b"dir/t"))
    ops = resolve(source, target, {})
    assert summary(ops) == {
        "copy s2t": [b"s-only", b"dir/s"],
        "copy t2s": [b"t-only", b"dir/t"],
        "conflict": [b"both"],
    }
    assert not ops.union  # the flag reports the caller's union (an index lost)


def test_union_ignores_the_baseline_and_drops_rows_not_agreed_on() -> None:
    baseline = base(X, f(b"y"), f(b"z"))
    ops = resolve(tree(X, f(b"z")), tree(f(b"z")), baseline, union=True)
    assert summary(ops) == {"copy s2t": [b"x"]}  # not a deletion on the source
    assert ops.union
    assert ops.baseline_deletes == (b"x", b"y")


def test_directories_are_created_where_missing() -> None:
    source = tree(d(b"new"), d(b"new/sub"), f(b"new/sub/x"))
    ops = resolve(source, tree(), {})
    assert summary(ops) == {"copy s2t": [b"new", b"new/sub", b"new/sub/x"]}


def test_a_directory_deleted_on_one_side_goes_when_all_beneath_goes() -> None:
    entries = (d(b"a"), d(b"a/b"), f(b"a/b/x"), f(b"a/y"))
    ops = resolve(tree(), tree(*entries), base(*entries))
    assert summary(ops) == {"delete s2t": [b"a/b/x", b"a/b", b"a/y", b"a"]}


def test_a_deleted_directory_is_recreated_when_the_other_side_added_inside() -> None:
    entries = (d(b"a"), f(b"a/old"))
    target = tree(*entries, f(b"a/new"))
    ops = resolve(tree(), target, base(*entries))
    assert summary(ops) == {"copy t2s": [b"a", b"a/new"], "delete s2t": [b"a/old"]}


def test_a_deleted_directory_is_recreated_when_the_other_side_changed_inside() -> None:
    entries = (d(b"a"), f(b"a/kept"), f(b"a/old"))
    target = tree(d(b"a"), f(b"a/kept", "edited"), f(b"a/old"))
    ops = resolve(tree(), target, base(*entries))
    assert summary(ops) == {"copy t2s": [b"a", b"a/kept"], "delete s2t": [b"a/old"]}


def test_a_deleted_directory_holding_ignored_files_is_recreated_not_deleted() -> None:
    entries = (d(b"a"), f(b"a/x"))
    target = tree(*entries, f(b"a/scratch.tmp"))
    ops = resolve(tree(), target, base(*entries))
    assert summary(ops) == {"copy t2s": [b"a"], "delete s2t": [b"a/x"]}


def test_rename_on_one_side_is_a_copy_and_a_delete() -> None:
    old = f(b"old", "data")
    new = f(b"new", "data")
    ops = resolve(tree(new), tree(old), base(old))
    assert summary(ops) == {"copy s2t": [b"new"], "delete s2t": [b"old"]}


def test_rename_against_an_edit_loses_nothing() -> None:
    old = f(b"old", "data")
    ops = resolve(tree(f(b"new", "data")), tree(f(b"old", "edited")), base(old))
    assert summary(ops) == {"copy s2t": [b"new"], "copy t2s": [b"old"]}


# --- file against directory ---------------------------------------------------------


def test_new_file_against_new_directory_conflicts_and_the_directory_goes_ahead() -> (
    None
):
    source = tree(f(b"p"))
    target = tree(d(b"p"), f(b"p/child"))
    ops = resolve(source, target, {})
    assert summary(ops) == {"copy t2s": [b"p/child"], "conflict": [b"p"]}
    assert ops.conflicts[0].reason is ConflictReason.KIND
    assert not ops.held  # p/child lands once the settlement makes p a directory


def test_directory_replaced_by_file_on_one_side_propagates() -> None:
    entries = (d(b"p"), d(b"p/sub"), f(b"p/sub/x"), f(b"p/y"))
    ops = resolve(tree(f(b"p", "file")), tree(*entries), base(*entries))
    assert summary(ops) == {"copy s2t": [b"p"]}
    (op,) = ops.source_to_target.to_copy
    assert op.replaces_directory


def test_directory_replaced_by_file_while_edited_inside_conflicts() -> None:
    entries = (d(b"p"), f(b"p/x"), f(b"p/y"))
    target = tree(d(b"p"), f(b"p/x", "edited"), f(b"p/y"))
    ops = resolve(tree(f(b"p", "file")), target, base(*entries))
    # The edit survives (copied back once p is a directory again); p/y was
    # deleted with the directory on the source, so it goes on the target.
    assert summary(ops) == {
        "copy t2s": [b"p/x"],
        "delete s2t": [b"p/y"],
        "conflict": [b"p"],
    }


def test_file_replaced_by_directory_on_one_side_propagates() -> None:
    source = tree(d(b"p"), f(b"p/x"))
    ops = resolve(source, tree(f(b"p")), base(f(b"p")))
    assert summary(ops) == {"copy s2t": [b"p", b"p/x"]}
    assert ops.source_to_target.to_copy[0].changes_kind


def test_file_edited_while_replaced_by_directory_conflicts() -> None:
    source = tree(d(b"p"))
    ops = resolve(source, tree(f(b"p", "edited")), base(f(b"p")))
    assert summary(ops) == {"conflict": [b"p"]}


# --- ignored, unreadable, incremental, granularity ----------------------------------


def test_ignored_paths_are_untouched_and_their_rows_dropped() -> None:
    ops = resolve(tree(f(b"a.tmp", "one")), tree(f(b"b.tmp")), base(f(b"b.tmp")))
    assert ops.is_empty()
    assert ops.baseline_deletes == (b"b.tmp",)


def test_unreadable_entries_are_held_and_keep_their_baseline() -> None:
    locked = dataclasses.replace(d(b"a"), unreadable=True)
    source = tree(locked, f(b"a/x"), f(b"y", "edited", unreadable=True))
    target = tree(d(b"a"), f(b"a/new"), f(b"y"))
    ops = resolve(source, target, base(d(b"a"), f(b"a/x"), f(b"y")))
    assert ops.is_empty()
    assert ops.held == (  # `a` itself agrees on both sides
        Held(b"a/new", "unreadable"),
        Held(b"a/x", "unreadable"),
        Held(b"y", "unreadable"),
    )
    assert (ops.baseline_updates, ops.baseline_deletes) == ((), ())


def test_incremental_paths_resolve_only_their_subtrees() -> None:
    entries = (d(b"a"), f(b"a/x"), f(b"b"))
    source = tree(d(b"a"), f(b"a/x", "edited"))
    target = tree(*entries, f(b"c"))
    ops = resolve_bidirectional(source, target, base(*entries), RULES, paths=[b"a"])
    assert summary(ops) == {"copy s2t": [b"a/x"]}


def test_incremental_paths_create_ancestors_on_the_other_side() -> None:
    target = tree(d(b"a"), d(b"a/b"), f(b"a/b/x"))
    ops = resolve_bidirectional(tree(), target, {}, RULES, paths=[b"a/b/x"])
    assert summary(ops) == {"copy t2s": [b"a", b"a/b", b"a/b/x"]}


def test_granularity_hides_sub_granularity_mtime_differences() -> None:
    fat = f(b"x", mtime_ns=2 * S)
    ops = resolve_bidirectional(
        tree(f(b"x", mtime_ns=3 * S - 1)),
        tree(fat),
        base(fat),
        RULES,
        mtime_granularity_ns=2 * S,
    )
    assert ops.is_empty()
