from __future__ import annotations

from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.operations import SyncOperations
from conduitd.sync.resolver import resolve_selective
from conduitd.sync.rules import IndexRules

S = 1_000_000_000
DAY_S = 86_400
NOW_NS = 100 * DAY_S * S


def d(path: bytes, mode: int = 0o755) -> EntryRow:
    return EntryRow(path, EntryKind.DIRECTORY, 0, S, 0o40000 | mode)


def f(
    path: bytes, content: str = "aa", *, age_days: float = 1, mode: int = 0o644
) -> EntryRow:
    mtime_ns = NOW_NS - int(age_days * DAY_S * S)
    return EntryRow(
        path,
        EntryKind.FILE,
        len(content),
        mtime_ns,
        0o100000 | mode,
        content_id=content,
    )


def tree(*entries: EntryRow) -> dict[bytes, EntryRow]:
    found = {b"": d(b"")}
    found.update((e.relative_path, e) for e in entries)
    return found


def copied(ops: SyncOperations) -> list[bytes]:
    return [op.dest_path for op in ops.source_to_target.to_copy]


def deleted(ops: SyncOperations) -> list[bytes]:
    return [op.relative_path for op in ops.source_to_target.to_delete]


def test_only_selected_files_are_copied_and_deleted() -> None:
    rules = IndexRules(include=["*.jpg"])
    source = tree(
        f(b"a.jpg"), f(b"b.txt"), d(b"sub"), d(b"sub/deeper"), f(b"sub/deeper/c.jpg")
    )
    target = tree(f(b"x.txt"), f(b"y.jpg"), f(b"b.txt", "other"))
    ops = resolve_selective(source, target, rules, now_ns=NOW_NS)
    # `sub` and `sub/deeper` are not selected: created only as parents.
    assert copied(ops) == [b"a.jpg", b"sub", b"sub/deeper", b"sub/deeper/c.jpg"]
    assert deleted(ops) == [b"y.jpg"]
    assert ops.target_to_source is None


def test_unselected_directories_are_never_deleted() -> None:
    rules = IndexRules(include=["*.jpg"])
    target = tree(d(b"old"), f(b"old/a.jpg"))
    ops = resolve_selective(tree(), target, rules, now_ns=NOW_NS)
    assert deleted(ops) == [b"old/a.jpg"]


def test_selected_directories_are_mirrored_with_their_subtrees() -> None:
    rules = IndexRules(include=["/photos/", "!/photos/raw/"])
    source = tree(
        d(b"photos"), d(b"photos/empty"), d(b"photos/raw"), f(b"photos/raw/x.cr2")
    )
    target = tree(
        d(b"photos"),
        d(b"photos/gone"),
        f(b"photos/gone/a"),
        d(b"photos/raw"),
        f(b"photos/raw/y"),
    )
    ops = resolve_selective(source, target, rules, now_ns=NOW_NS)
    assert copied(ops) == [b"photos/empty"]
    assert deleted(ops) == [b"photos/gone/a", b"photos/gone"]


def test_recent_limits_the_selection_to_recently_modified_files() -> None:
    rules = IndexRules()
    source = tree(
        f(b"fresh", age_days=2),
        f(b"stale", age_days=40),
        f(b"changed", "v2", age_days=40),
    )
    target = tree(
        f(b"changed", "v1"),
        f(b"deleted-recently", age_days=3),
        f(b"deleted-long-ago", age_days=60),
        d(b"empty-dir"),
    )
    ops = resolve_selective(source, target, rules, now_ns=NOW_NS, recent_s=30 * DAY_S)
    assert copied(ops) == [b"fresh"]
    # A target-only file is judged by its own mtime; directories never go.
    assert deleted(ops) == [b"deleted-recently"]


def test_recent_and_include_combine() -> None:
    rules = IndexRules(include=["*.md"])
    source = tree(
        f(b"a.md", age_days=1), f(b"b.md", age_days=10), f(b"c.txt", age_days=1)
    )
    ops = resolve_selective(source, tree(), rules, now_ns=NOW_NS, recent_s=5 * DAY_S)
    assert copied(ops) == [b"a.md"]


def test_ignore_wins_over_include() -> None:
    rules = IndexRules(ignore=["*.tmp"], include=["*.tmp", "*.jpg"])
    source = tree(f(b"a.tmp"), f(b"b.jpg"))
    target = tree(f(b"c.tmp"))
    ops = resolve_selective(source, target, rules, now_ns=NOW_NS)
    assert copied(ops) == [b"b.jpg"]
    assert deleted(ops) == []


def test_selective_union_never_deletes() -> None:
    rules = IndexRules(include=["*.jpg"])
    ops = resolve_selective(tree(), tree(f(b"y.jpg")), rules, now_ns=NOW_NS, union=True)
    assert ops.is_empty()


def test_selected_metadata_changes_are_updates() -> None:
    rules = IndexRules(include=["*.jpg"])
    source = tree(f(b"a.jpg", mode=0o600), f(b"b.txt", mode=0o600))
    target = tree(f(b"a.jpg"), f(b"b.txt"))
    ops = resolve_selective(source, target, rules, now_ns=NOW_NS)
    assert [op.relative_path for op in ops.source_to_target.to_update] == [b"a.jpg"]


def test_selective_incremental_paths() -> None:
    rules = IndexRules(include=["*.jpg"])
    source = tree(d(b"a"), f(b"a/x.jpg"), f(b"y.jpg"))
    ops = resolve_selective(source, tree(), rules, now_ns=NOW_NS, paths=[b"a/x.jpg"])
    assert copied(ops) == [b"a", b"a/x.jpg"]
