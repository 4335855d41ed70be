"""Safety brakes: refuse a run that looks like an accident, before it starts.

Each check returns a reason for `SafetyRefusal`, or None to let the run go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.operations import Direction, DirectionalOps, SyncOperations
from conduitd.sync.rules import IndexRules

Entries = Mapping[bytes, EntryRow]


def holds_entries(
    entries: Iterable[tuple[bytes, EntryKind]], rules: IndexRules
) -> bool:
    """Whether any (path, kind) but the root's is not ignored: what makes a
    side count as not empty."""
    return any(
        path and not rules.is_ignored(path, kind is EntryKind.DIRECTORY)
        for path, kind in entries
    )


def _has_entries(entries: Entries, rules: IndexRules) -> bool:
    return holds_entries(((p, e.kind) for p, e in entries.items()), rules)


def _is_counted_file(path: bytes, entry: EntryRow, rules: IndexRules) -> bool:
    return (
        bool(path)
        and entry.kind is not EntryKind.DIRECTORY
        and not rules.is_ignored(path, False)
    )


def check_empty_source(
    source: Entries,
    target: Entries,
    rules: IndexRules,
    *,
    bidirectional: bool = False,
    first_sync: bool = False,
) -> str | None:
    """Refuse an empty side facing a full one (usually an unmounted disk).

    Applies whatever `--force` or `max_delete_percent` say, first run included.
    In bidirectional mode both sides are sources, but a first sync (union) onto
    an empty side is allowed: it deletes nothing. Unreadable entries count as
    entries, so an unreadable directory is never taken for an empty one.
    """
    return check_empty_sides(
        _has_entries(source, rules),
        _has_entries(target, rules),
        bidirectional=bidirectional,
        first_sync=first_sync,
    )


def check_empty_sides(
    source_has: bool,
    target_has: bool,
    *,
    bidirectional: bool = False,
    first_sync: bool = False,
) -> str | None:
    """`check_empty_source` once each side is known to hold entries or not."""
    if bidirectional and first_sync:
        return None
    if target_has and not source_has:
        return (
            "the source has no entries (ignored ones aside) while the target has;"
            " an empty source is far more often an unmounted disk than a wish"
        )
    if bidirectional and source_has and not target_has:
        return (
            "the target has no entries (ignored ones aside) while the source has;"
            " in bidirectional mode an empty side is far more often an unmounted"
            " disk than a wish"
        )
    return None


def _files_removed(ops: DirectionalOps, entries: Entries, rules: IndexRules) -> int:
    """Non-directory entries removed: deletes, and subtrees replaced by a file."""
    removed = ops.count_files_deleted()
    replaced = tuple(
        op.relative_path + b"/" for op in ops.to_copy if op.replaces_directory
    )
    if replaced:
        removed += sum(
            path.startswith(replaced) and _is_counted_file(path, entry, rules)
            for path, entry in entries.items()
        )
    return removed


def check_delete_ratio(
    ops: SyncOperations,
    target: Entries,
    rules: IndexRules,
    max_delete_percent: int,
    force: bool,
    *,
    source: Entries | None = None,
) -> str | None:
    """Refuse a run removing more than `max_delete_percent` of a side's files.

    Files are the non-ignored, non-directory entries; a directory replaced by a
    file counts with every file beneath it. 100 disables the brake, `force`
    overrides it. Two-way operations are checked on both sides.

    Raises:
        ValueError: `ops` has target_to_source operations and `source` is None.
    """
    if force or max_delete_percent >= 100:
        return None
    for direction, directional in ops.directions():
        if direction is Direction.SOURCE_TO_TARGET:
            entries, side = target, "target"
        elif source is None:
            raise ValueError("two-way operations need the source entries too")
        else:
            entries, side = source, "source"
        removed = _files_removed(directional, entries, rules)
        if not removed:
            continue
        total = sum(_is_counted_file(p, e, rules) for p, e in entries.items())
        if removed * 100 > max_delete_percent * total:
            percent = removed * 100 // max(total, 1)
            return (
                f"the run would delete {removed} of {total} files on the {side}"
                f" ({percent}%), more than max_delete_percent = {max_delete_percent};"
                " --force overrides"
            )
    return None
