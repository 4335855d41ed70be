"""Bidirectional conflicts on real trees through the CLI (issue 6).

Both sides changed under every strategy, delete against modify both ways,
new on both sides, file against directory; the losing version is in trash
with a `conflict` row, and conflict copies are named exactly and present on
both sides.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers.twoway import BASE_NS, CONFLICT_NAME, Pair, conflict_copies

OLDER, NEWER = BASE_NS, BASE_NS + 1_000_000_000
STRATEGIES = [
    "newest_wins",
    "source_wins",
    "target_wins",
    "create_conflict_file",
    "prompt_user",
]


def both_modified(pair: Pair, *, newer: str = "target") -> None:
    """notes.txt agreed on, then edited differently on each side."""
    pair.write("source", "notes.txt", "base")
    pair.write("source", "other.txt", "untouched")
    pair.sync()
    older = "source" if newer == "target" else "target"
    pair.write(newer, "notes.txt", f"{newer} edit", mtime_ns=NEWER)
    pair.write(older, "notes.txt", f"{older} edit", mtime_ns=OLDER)


def conflict_rows(pair: Pair) -> list[tuple[str, str]]:
    return [
        (bytes(r["relative_path"]).decode(), r["reason"])
        for r in pair.trash_rows()
        if r["reason"] == "conflict"
    ]


@pytest.mark.parametrize(
    ("strategy", "newer", "winner"),
    [
        ("newest_wins", "target", "target"),
        ("newest_wins", "source", "source"),
        ("source_wins", "target", "source"),
        ("target_wins", "source", "target"),
    ],
)
def test_bidirectional_both_modified_one_version_wins(
    tmp_path: Path, strategy: str, newer: str, winner: str
) -> None:
    pair = Pair(tmp_path, conflict=strategy)
    both_modified(pair, newer=newer)
    loser = "source" if winner == "target" else "target"

    result = pair.sync()

    assert result["conflicts_resolved"] == 1
    assert result["conflicts_pending"] == 0
    assert pair.assert_equal()["notes.txt"] == f"{winner} edit".encode()
    assert pair.trashed(loser) == [f"{loser} edit".encode()]
    assert conflict_rows(pair) == [("notes.txt", "conflict")]
    (row,) = [r for r in pair.trash_rows() if r["reason"] == "conflict"]
    assert row["root"] == loser
    assert row["generation"] == result["generation"]
    assert pair.sync()["conflicts_resolved"] == 0


def test_bidirectional_newest_wins_tie_goes_to_the_source(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    both_modified(pair)
    os.utime(pair.source / "notes.txt", ns=(NEWER, NEWER))

    pair.sync()

    assert pair.assert_equal()["notes.txt"] == b"source edit"


@pytest.mark.parametrize("newer", ["source", "target"])
def test_bidirectional_create_conflict_file_keeps_both_on_both_sides(
    tmp_path: Path, newer: str
) -> None:
    pair = Pair(tmp_path, conflict="create_conflict_file")
    both_modified(pair, newer=newer)
    older = "source" if newer == "target" else "target"
    before = datetime.now(UTC).replace(microsecond=0)

    result = pair.sync()

    after = datetime.now(UTC)
    tree = pair.assert_equal()
    (copy,) = conflict_copies(tree)
    match = CONFLICT_NAME.match(copy)
    assert match is not None
    assert match["stem"] == "notes"
    assert match["suffix"] == ".txt"
    assert match["side"] == older
    assert match["number"] is None
    stamp = datetime.strptime(match["stamp"], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= stamp <= after
    assert tree["notes.txt"] == f"{newer} edit".encode()
    assert tree[copy] == f"{older} edit".encode()
    assert result["conflicts_resolved"] == 1
    # The loser's own name was overwritten: its old version is in its trash too.
    assert pair.trashed(older) == [f"{older} edit".encode()]
    assert conflict_rows(pair) == [("notes.txt", "conflict")]
    assert pair.sync()["files_copied"] == 0


def test_bidirectional_conflict_copy_names_get_numbers_on_collision(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path, conflict="create_conflict_file")
    pair.write("source", "archive.tar.gz", "base")
    pair.write("source", "Makefile", "base")
    pair.sync()
    pair.write("source", "archive.tar.gz", "s", mtime_ns=NEWER)
    pair.write("target", "archive.tar.gz", "t", mtime_ns=OLDER)
    pair.write("source", "Makefile", "s", mtime_ns=OLDER)
    pair.write("target", "Makefile", "t", mtime_ns=NEWER)
    # Squat on every name this second (and the next) could produce.
    now = datetime.now(UTC)
    for moment in (now, now + timedelta(seconds=1), now + timedelta(seconds=2)):
        stamp = moment.strftime("%Y%m%d-%H%M%S")
        pair.write("target", f"archive.tar.conflict-{stamp}-target.gz", "squat")

    pair.sync()

    tree = pair.assert_equal()
    copies = {
        c: tree[c]
        for c in conflict_copies(tree)
        if tree[c] != b"squat" and c.startswith("archive")
    }
    (archive_copy,) = copies
    match = CONFLICT_NAME.match(archive_copy)
    assert match is not None
    assert (match["stem"], match["suffix"], match["number"]) == (
        "archive.tar",
        ".gz",
        "-2",
    )
    assert copies[archive_copy] == b"t"
    (make_copy,) = [c for c in conflict_copies(tree) if c.startswith("Makefile")]
    assert CONFLICT_NAME.match(make_copy)["suffix"] == ""  # type: ignore[index]
    assert tree[make_copy] == b"s"


def test_a_conflict_copy_name_taken_on_both_sides_is_numbered_too(
    tmp_path: Path,
) -> None:
    """Names taken by files both sides agree on are outside the paths a run
    compares: a second conflict on a path in the same second as the first
    chose the first copy's name again, and the run failed verification
    (found by the bidirectional state machine)."""
    pair = Pair(tmp_path, conflict="create_conflict_file")
    pair.write("source", "notes.txt", "base")
    now = datetime.now(UTC)
    squatted = []
    for seconds in range(-1, 4):
        stamp = (now + timedelta(seconds=seconds)).strftime("%Y%m%d-%H%M%S")
        for side in ("source", "target"):
            squatted.append(f"notes.conflict-{stamp}-{side}.txt")
            pair.write("source", squatted[-1], "an earlier copy")
    pair.sync()
    pair.write("source", "notes.txt", "source edit", mtime_ns=OLDER)
    pair.write("target", "notes.txt", "target edit", mtime_ns=NEWER)

    result = pair.sync()

    assert result["verification_status"] == "verified"
    assert result["files_skipped"] == 0
    tree = pair.assert_equal()
    (copy,) = [c for c in conflict_copies(tree) if c not in squatted]
    match = CONFLICT_NAME.match(copy)
    assert match is not None
    assert (match["side"], match["number"]) == ("source", "-2")
    assert tree[copy] == b"source edit"
    assert all(tree[name] == b"an earlier copy" for name in squatted)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bidirectional_losing_version_goes_to_trash_under_every_strategy(
    tmp_path: Path, strategy: str
) -> None:
    pair = Pair(tmp_path, conflict=strategy)
    both_modified(pair)

    result = pair.sync()

    if strategy == "prompt_user":
        assert result["conflicts_pending"] == 1
        assert pair.trashed("source") == pair.trashed("target") == []
        assert pair.files("source")["notes.txt"] == b"source edit"
        assert pair.files("target")["notes.txt"] == b"target edit"
        return
    kept = {*pair.files("source").values(), *pair.trashed("source")}
    kept |= {*pair.files("target").values(), *pair.trashed("target")}
    assert {b"source edit", b"target edit"} <= kept
    assert conflict_rows(pair) == [("notes.txt", "conflict")]


def test_bidirectional_permanent_delete_keeps_no_trash(tmp_path: Path) -> None:
    pair = Pair(tmp_path, delete="permanent")
    both_modified(pair)

    pair.sync()

    assert pair.assert_equal()["notes.txt"] == b"target edit"
    assert pair.trashed("source") == []
    assert pair.trash_rows() == []


@pytest.mark.parametrize("deleted_on", ["source", "target"])
@pytest.mark.parametrize("strategy", ["newest_wins", "source_wins", "target_wins"])
def test_bidirectional_modify_beats_delete(
    tmp_path: Path, deleted_on: str, strategy: str
) -> None:
    pair = Pair(tmp_path, conflict=strategy)
    pair.write("source", "doc.txt", "v1")
    pair.write("source", "other.txt", "o")
    pair.sync()
    modified_on = "target" if deleted_on == "source" else "source"
    (pair.side(deleted_on) / "doc.txt").unlink()
    pair.write(modified_on, "doc.txt", "v2", mtime_ns=OLDER)

    result = pair.sync()

    assert result["files_deleted"] == 0
    assert pair.assert_equal()["doc.txt"] == b"v2"
    assert pair.trashed(modified_on) == []


def test_bidirectional_new_on_both_sides_with_different_content(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path, conflict="create_conflict_file")
    pair.write("source", "seed.txt", "s")
    pair.sync()
    pair.write("source", "plan.md", "source plan", mtime_ns=NEWER)
    pair.write("target", "plan.md", "target plan", mtime_ns=OLDER)

    result = pair.sync()

    tree = pair.assert_equal()
    assert result["conflicts_resolved"] == 1
    assert tree["plan.md"] == b"source plan"
    (copy,) = conflict_copies(tree)
    assert copy.startswith("plan.conflict-")
    assert copy.endswith("-target.md")
    assert tree[copy] == b"target plan"


@pytest.mark.parametrize("dir_on", ["source", "target"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bidirectional_directory_beats_file(
    tmp_path: Path, dir_on: str, strategy: str
) -> None:
    pair = Pair(tmp_path, conflict=strategy)
    pair.write("source", "seed.txt", "s")
    pair.sync()
    file_on = "target" if dir_on == "source" else "source"
    pair.write(dir_on, "thing/inside.txt", "in the directory")
    pair.write(file_on, "thing", "a plain file")

    result = pair.sync()

    assert result["errors_encountered"] == 0
    tree = pair.assert_equal()
    assert tree["thing"] == "<dir>"
    assert tree["thing/inside.txt"] == b"in the directory"
    (copy,) = conflict_copies(tree)
    match = CONFLICT_NAME.match(copy)
    assert match is not None
    assert (match["stem"], match["side"], match["suffix"]) == ("thing", file_on, "")
    assert tree[copy] == b"a plain file"
    # The file made way for the directory: into its side's trash, as a conflict.
    assert pair.trashed(file_on) == [b"a plain file"]
    rows = [(r["root"], r["reason"]) for r in pair.trash_rows()]
    assert rows == [(file_on, "conflict")]
    assert pair.sync()["files_copied"] == 0


def test_bidirectional_file_replaced_by_directory_on_one_side(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.write("source", "node", "was a file")
    pair.write("source", "seed.txt", "s")
    pair.sync()
    (pair.target / "node").unlink()
    pair.write("target", "node/child.txt", "now a directory")

    pair.sync()

    tree = pair.assert_equal()
    assert tree["node"] == "<dir>"
    assert tree["node/child.txt"] == b"now a directory"
    assert pair.trashed("source") == [b"was a file"]
