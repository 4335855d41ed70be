from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from conduitd.config.enums import ConflictStrategy
from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.conflicts import (
    ConflictResolver,
    Resolution,
    Settlement,
    apply_settlements,
    conflict_copy_name,
    taken_in,
)
from conduitd.sync.operations import (
    Conflict,
    ConflictReason,
    CopyOp,
    DeleteOp,
    DirectionalOps,
    SyncOperations,
)

S = 1_000_000_000
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
STAMP = "20240506-070809"


def f(path: bytes, content: str, mtime_ns: int) -> EntryRow:
    return EntryRow(
        path, EntryKind.FILE, len(content), mtime_ns, 0o100644, content_id=content
    )


def d(path: bytes) -> EntryRow:
    return EntryRow(path, EntryKind.DIRECTORY, 0, S, 0o40755)


def conflict(
    source: EntryRow,
    target: EntryRow,
    reason: ConflictReason = ConflictReason.BOTH_MODIFIED,
) -> Conflict:
    return Conflict(source.relative_path, source, target, None, reason)


# --- names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "side", "expected"),
    [
        (b"report.txt", "source", f"report.conflict-{STAMP}-source.txt"),
        (b"docs/report.txt", "target", f"docs/report.conflict-{STAMP}-target.txt"),
        (b"Makefile", "source", f"Makefile.conflict-{STAMP}-source"),
        (b"a/.bashrc", "target", f"a/.bashrc.conflict-{STAMP}-target"),
        (b"archive.tar.gz", "source", f"archive.tar.conflict-{STAMP}-source.gz"),
        (b"a/b/.config.json", "source", f"a/b/.config.conflict-{STAMP}-source.json"),
    ],
)
def test_conflict_copy_name(path: bytes, side: str, expected: str) -> None:
    assert conflict_copy_name(path, WHEN, side) == expected.encode()


def test_conflict_copy_name_counts_up_before_the_suffix_on_collision() -> None:
    taken = {
        f"d/a.conflict-{STAMP}-source.txt".encode(),
        f"d/a.conflict-{STAMP}-source-2.txt".encode(),
    }
    name = conflict_copy_name(b"d/a.txt", WHEN, "source", taken_in(taken))
    assert name == f"d/a.conflict-{STAMP}-source-3.txt".encode()


def test_conflict_copy_name_shows_detection_time_in_utc() -> None:
    east = WHEN.astimezone(timezone(timedelta(hours=9)))
    assert (
        conflict_copy_name(b"a", east, "target")
        == f"a.conflict-{STAMP}-target".encode()
    )
    naive = WHEN.replace(tzinfo=None)
    assert (
        conflict_copy_name(b"a", naive, "target")
        == f"a.conflict-{STAMP}-target".encode()
    )


def test_conflict_copy_name_keeps_undecodable_bytes() -> None:
    name = conflict_copy_name(b"dir\xff/caf\xe9.txt", WHEN, "source")
    assert name == b"dir\xff/caf\xe9.conflict-" + STAMP.encode() + b"-source.txt"


def test_conflict_copy_name_fits_a_long_name_into_255_bytes() -> None:
    long_name = b"x" * 250 + b".txt"
    name = conflict_copy_name(b"d/" + long_name, WHEN, "source")
    leaf = name.rpartition(b"/")[2]
    assert len(leaf) == 255
    assert leaf.endswith(f".conflict-{STAMP}-source.txt".encode())


def test_conflict_copy_name_rejects_an_unknown_side() -> None:
    with pytest.raises(ValueError, match="not a valid Side"):
        conflict_copy_name(b"a", WHEN, "left")


# --- strategies ---------------------------------------------------------------------

OLD_SRC, NEW_TGT = f(b"x.txt", "s", 1 * S), f(b"x.txt", "t", 2 * S)
NEW_SRC, OLD_TGT = f(b"x.txt", "s", 3 * S), f(b"x.txt", "t", 2 * S)


def only_copy(settlement: Settlement) -> tuple[str, CopyOp]:
    lists = {
        "s2t": settlement.source_to_target,
        "t2s": settlement.target_to_source,
        "within_source": settlement.within_source,
        "within_target": settlement.within_target,
    }
    ((name, ops),) = [(k, v) for k, v in lists.items() if v]
    (op,) = ops
    return name, op


@pytest.mark.parametrize(
    ("strategy", "source", "target", "direction", "resolution"),
    [
        (ConflictStrategy.NEWEST_WINS, NEW_SRC, OLD_TGT, "s2t", Resolution.SOURCE),
        (ConflictStrategy.NEWEST_WINS, OLD_SRC, NEW_TGT, "t2s", Resolution.TARGET),
        (
            ConflictStrategy.NEWEST_WINS,
            f(b"x.txt", "s", S),
            f(b"x.txt", "t", S),
            "s2t",
            Resolution.SOURCE,
        ),
        (ConflictStrategy.SOURCE_WINS, OLD_SRC, NEW_TGT, "s2t", Resolution.SOURCE),
        (ConflictStrategy.TARGET_WINS, NEW_SRC, OLD_TGT, "t2s", Resolution.TARGET),
    ],
)
def test_a_winner_overwrites_the_loser_by_copy(
    strategy: ConflictStrategy,
    source: EntryRow,
    target: EntryRow,
    direction: str,
    resolution: Resolution,
) -> None:
    settlement = ConflictResolver(strategy).settle(conflict(source, target), WHEN)
    assert settlement.resolution is resolution
    assert not settlement.pending
    name, op = only_copy(settlement)
    assert name == direction
    winner, loser = (source, target) if direction == "s2t" else (target, source)
    assert op == CopyOp(b"x.txt", winner, loser)  # the loser is overwritten: trashed


@pytest.mark.parametrize(
    ("source", "target", "winner", "loser_side"),
    [(NEW_SRC, OLD_TGT, "source", "target"), (OLD_SRC, NEW_TGT, "target", "source")],
)
def test_create_conflict_file_keeps_both_versions_on_both_sides(
    source: EntryRow, target: EntryRow, winner: str, loser_side: str
) -> None:
    resolver = ConflictResolver(ConflictStrategy.CREATE_CONFLICT_FILE)
    settlement = resolver.settle(conflict(source, target), WHEN, taken_in({b"x.txt"}))
    assert settlement.resolution is Resolution.BOTH
    name = f"x.conflict-{STAMP}-{loser_side}.txt".encode()
    kept, lost = (source, target) if winner == "source" else (target, source)
    to_winner, to_loser = (
        (settlement.source_to_target, settlement.target_to_source)
        if winner == "target"
        else (settlement.target_to_source, settlement.source_to_target)
    )
    within_loser = (
        settlement.within_source if loser_side == "source" else settlement.within_target
    )
    within_winner = (
        settlement.within_target if loser_side == "source" else settlement.within_source
    )
    assert within_loser == (CopyOp(b"x.txt", lost, None, name),)
    assert to_winner == (CopyOp(b"x.txt", lost, None, name),)
    assert to_loser == (CopyOp(b"x.txt", kept, lost),)
    assert within_winner == ()
    assert settlement.copy_destinations() == {name, b"x.txt"}


def test_create_conflict_file_tie_keeps_the_source_under_the_name() -> None:
    source, target = f(b"a", "s", S), f(b"a", "t", S)
    resolver = ConflictResolver(ConflictStrategy.CREATE_CONFLICT_FILE)
    settlement = resolver.settle(conflict(source, target), WHEN)
    assert (
        settlement.within_target[0].dest_path == f"a.conflict-{STAMP}-target".encode()
    )
    assert settlement.source_to_target == (CopyOp(b"a", source, target),)


def test_prompt_user_leaves_the_path_alone() -> None:
    settlement = ConflictResolver(ConflictStrategy.PROMPT_USER).settle(
        conflict(NEW_SRC, OLD_TGT), WHEN
    )
    assert settlement.pending
    assert settlement.resolution is None
    assert settlement.copy_destinations() == set()


@pytest.mark.parametrize("strategy", list(ConflictStrategy))
@pytest.mark.parametrize("dir_on", ["source", "target"])
def test_file_against_directory_keeps_the_directory_under_every_strategy(
    strategy: ConflictStrategy, dir_on: str
) -> None:
    file_entry, dir_entry = f(b"p", "file", 9 * S), d(b"p")
    source, target = (
        (dir_entry, file_entry) if dir_on == "source" else (file_entry, dir_entry)
    )
    file_side = "target" if dir_on == "source" else "source"
    settlement = ConflictResolver(strategy).settle(
        conflict(source, target, ConflictReason.KIND), WHEN
    )
    assert settlement.resolution is Resolution.BOTH
    name = f"p.conflict-{STAMP}-{file_side}".encode()
    to_dir_side, to_file_side = (
        (settlement.target_to_source, settlement.source_to_target)
        if dir_on == "source"
        else (settlement.source_to_target, settlement.target_to_source)
    )
    within_file_side = (
        settlement.within_target if dir_on == "source" else settlement.within_source
    )
    assert within_file_side == (CopyOp(b"p", file_entry, None, name),)
    assert to_dir_side == (CopyOp(b"p", file_entry, None, name),)
    (kind_change,) = to_file_side
    assert kind_change == CopyOp(b"p", dir_entry, file_entry)
    assert kind_change.changes_kind


def test_a_kind_conflict_needs_both_sides() -> None:
    broken = Conflict(b"p", None, d(b"p"), None, ConflictReason.KIND)
    with pytest.raises(ValueError, match="both sides"):
        ConflictResolver(ConflictStrategy.NEWEST_WINS).settle(broken, WHEN)


def test_a_one_sided_conflict_keeps_the_surviving_version() -> None:
    one_sided = Conflict(b"x.txt", None, OLD_TGT, None, ConflictReason.BOTH_MODIFIED)
    settlement = ConflictResolver(ConflictStrategy.SOURCE_WINS).settle(one_sided, WHEN)
    assert settlement.target_to_source == (CopyOp(b"x.txt", OLD_TGT, None),)


def test_settle_all_never_hands_out_one_name_twice() -> None:
    # Two conflicts whose copies would collide: `a` and the would-be copy name.
    first = conflict(f(b"a.txt", "s", 2 * S), f(b"a.txt", "t", S))
    resolver = ConflictResolver(ConflictStrategy.CREATE_CONFLICT_FILE)
    settlements = resolver.settle_all([first, first], WHEN, taken_in({b"a.txt"}))
    names = [s.within_target[0].dest_path for s in settlements]
    assert names == [
        f"a.conflict-{STAMP}-target.txt".encode(),
        f"a.conflict-{STAMP}-target-2.txt".encode(),
    ]


def test_apply_settlements_merges_copies_and_keeps_pending_conflicts() -> None:
    settled = conflict(NEW_SRC, OLD_TGT)
    pending = conflict(f(b"y", "s", S), f(b"y", "t", S))
    existing_copy = CopyOp(b"a/b", f(b"a/b", "z", S), None)
    ops = SyncOperations(
        source_to_target=DirectionalOps.of(
            [existing_copy], deletes=[DeleteOp(b"q", d(b"q"))]
        ),
        target_to_source=DirectionalOps(),
        conflicts=(settled, pending),
    )
    resolver = ConflictResolver(ConflictStrategy.CREATE_CONFLICT_FILE)
    settlements = [
        resolver.settle(settled, WHEN),
        ConflictResolver(ConflictStrategy.PROMPT_USER).settle(pending, WHEN),
    ]
    merged = apply_settlements(ops, settlements)
    assert merged.conflicts == (pending,)
    name = f"x.conflict-{STAMP}-target.txt".encode()
    # Conflict copies first, then parents first.
    assert [op.dest_path for op in merged.source_to_target.to_copy] == [
        b"x.txt",
        b"a/b",
    ]
    assert merged.target_to_source is not None
    assert [op.dest_path for op in merged.target_to_source.to_copy] == [name]
    assert [op.dest_path for op in merged.within_target] == [name]
    assert merged.source_to_target.to_delete == ops.source_to_target.to_delete
    assert merged.count_files_copied() == 4
    assert not merged.is_empty(count_conflicts=False)


def test_apply_settlements_adds_a_return_direction_when_needed() -> None:
    ops = SyncOperations(
        source_to_target=DirectionalOps(), conflicts=(conflict(OLD_SRC, NEW_TGT),)
    )
    settlement = ConflictResolver(ConflictStrategy.TARGET_WINS).settle(
        ops.conflicts[0], WHEN
    )
    merged = apply_settlements(ops, [settlement])
    assert merged.target_to_source is not None
    assert merged.target_to_source.to_copy == (CopyOp(b"x.txt", NEW_TGT, OLD_SRC),)
    assert merged.is_empty() is False
    assert merged.conflicts == ()
