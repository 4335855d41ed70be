from __future__ import annotations

import dataclasses

import pytest

from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.brakes import check_delete_ratio, check_empty_source
from conduitd.sync.operations import CopyOp, DeleteOp, DirectionalOps, SyncOperations
from conduitd.sync.resolver import resolve_mirror
from conduitd.sync.rules import IndexRules

RULES = IndexRules(ignore=["*.tmp"])


def d(path: bytes) -> EntryRow:
    return EntryRow(path, EntryKind.DIRECTORY, 0, 1, 0o40755)


def f(path: bytes) -> EntryRow:
    return EntryRow(path, EntryKind.FILE, 1, 1, 0o100644, content_id="c")


def tree(*entries: EntryRow) -> dict[bytes, EntryRow]:
    found = {b"": d(b"")}
    found.update((e.relative_path, e) for e in entries)
    return found


def files(n: int, prefix: bytes = b"f") -> list[EntryRow]:
    return [f(prefix + str(i).encode()) for i in range(n)]


# --- empty source ----------------------------------------------------------------------


@pytest.mark.parametrize("first_sync", [False, True])
def test_an_empty_source_facing_a_full_target_is_refused(first_sync: bool) -> None:
    reason = check_empty_source(tree(), tree(f(b"x")), RULES, first_sync=first_sync)
    assert reason is not None
    assert "unmounted" in reason


def test_a_source_holding_only_ignored_entries_counts_as_empty() -> None:
    source = tree(f(b"x.tmp"), d(b".conduitd"), f(b".conduitd/marker"))
    assert check_empty_source(source, tree(f(b"y")), RULES) is not None


def test_a_target_holding_only_ignored_entries_is_not_full() -> None:
    assert check_empty_source(tree(), tree(f(b"y.tmp")), RULES) is None


@pytest.mark.parametrize(
    ("source", "target"),
    [(tree(), tree()), (tree(f(b"x")), tree()), (tree(f(b"x")), tree(f(b"y")))],
)
def test_mirror_allows_a_non_empty_source_or_two_empty_sides(
    source: dict[bytes, EntryRow], target: dict[bytes, EntryRow]
) -> None:
    assert check_empty_source(source, target, RULES) is None


def test_an_unreadable_directory_is_not_taken_for_an_empty_source() -> None:
    locked = dataclasses.replace(d(b"photos"), unreadable=True)
    assert check_empty_source(tree(locked), tree(f(b"x")), RULES) is None


def test_an_unreadable_empty_root_is_refused() -> None:
    source = {b"": dataclasses.replace(d(b""), unreadable=True)}
    assert check_empty_source(source, tree(f(b"x")), RULES) is not None


@pytest.mark.parametrize(
    ("source", "target"),
    [(tree(), tree(f(b"x"))), (tree(f(b"x")), tree())],
)
def test_bidirectional_refuses_either_side_empty(
    source: dict[bytes, EntryRow], target: dict[bytes, EntryRow]
) -> None:
    assert check_empty_source(source, target, RULES, bidirectional=True) is not None


@pytest.mark.parametrize(
    ("source", "target"),
    [(tree(), tree(f(b"x"))), (tree(f(b"x")), tree())],
)
def test_bidirectional_first_sync_onto_an_empty_side_is_allowed(
    source: dict[bytes, EntryRow], target: dict[bytes, EntryRow]
) -> None:
    assert (
        check_empty_source(source, target, RULES, bidirectional=True, first_sync=True)
        is None
    )


# --- delete ratio ------------------------------------------------------------------------


def deleting(n: int, *, also_dirs: int = 0) -> SyncOperations:
    deletes = [DeleteOp(e.relative_path, e) for e in files(n)]
    deletes += [
        DeleteOp(b"d" + str(i).encode(), d(b"d" + str(i).encode()))
        for i in range(also_dirs)
    ]
    return SyncOperations(source_to_target=DirectionalOps.of(deletes=deletes))


TEN = tree(*files(10))


@pytest.mark.parametrize(
    ("deleted", "max_percent", "refused"),
    [
        (5, 50, False),  # exactly at the limit
        (6, 50, True),
        (1, 0, True),
        (0, 0, False),
        (10, 99, True),
        (10, 100, False),  # 100 disables the brake
    ],
)
def test_delete_ratio_limit(deleted: int, max_percent: int, refused: bool) -> None:
    reason = check_delete_ratio(deleting(deleted), TEN, RULES, max_percent, force=False)
    assert (reason is not None) is refused
    if reason is not None:
        assert f"{deleted} of 10 files" in reason
        assert "--force" in reason


def test_force_overrides_the_delete_ratio() -> None:
    assert check_delete_ratio(deleting(10), TEN, RULES, 10, force=True) is None


def test_directories_and_ignored_files_are_not_counted() -> None:
    target = tree(
        *files(4), *(d(b"d" + str(i).encode()) for i in range(6)), f(b"junk.tmp")
    )
    assert (
        check_delete_ratio(deleting(2, also_dirs=6), target, RULES, 50, force=False)
        is None
    )
    assert check_delete_ratio(deleting(3), target, RULES, 50, force=False) is not None


def test_a_directory_replaced_by_a_file_counts_every_file_beneath() -> None:
    target = tree(d(b"photos"), *files(8, b"photos/p"), *files(2))
    ops = resolve_mirror(tree(f(b"photos"), *files(2)), target, RULES)
    assert ops.source_to_target.to_delete == ()
    reason = check_delete_ratio(ops, target, RULES, 50, force=False)
    assert reason is not None
    assert "8 of 10 files" in reason


def test_two_way_operations_are_checked_against_the_source() -> None:
    source = tree(*files(4))
    ops = SyncOperations(
        source_to_target=DirectionalOps(),
        target_to_source=DirectionalOps.of(
            deletes=[DeleteOp(e.relative_path, e) for e in files(3)]
        ),
    )
    reason = check_delete_ratio(ops, tree(), RULES, 50, force=False, source=source)
    assert reason is not None
    assert "on the source" in reason
    with pytest.raises(ValueError, match="source entries"):
        check_delete_ratio(ops, tree(), RULES, 50, force=False)


def test_copies_over_existing_files_are_not_deletes() -> None:
    target = tree(*files(2))
    ops = SyncOperations(
        source_to_target=DirectionalOps.of(
            [
                CopyOp(e.relative_path, dataclasses.replace(e, content_id="n"), e)
                for e in files(2)
            ]
        )
    )
    assert check_delete_ratio(ops, target, RULES, 0, force=False) is None
