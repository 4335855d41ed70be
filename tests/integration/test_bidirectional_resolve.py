"""`prompt_user` conflicts, `conduitd conflicts` and `conduitd resolve` (issue 6).

Through the real command line, without a daemon and through a running one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.daemon import running_daemon, wait_for
from helpers.twoway import BASE_NS, CONFLICT_NAME, Pair, conflict_copies

OLDER, NEWER = BASE_NS, BASE_NS + 1_000_000_000


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path, conflict="prompt_user")


def pending_conflict(pair: Pair, path: str = "notes.txt") -> dict[str, object]:
    """`path` edited on both sides after a first sync; one sync leaves it pending."""
    pair.write("source", path, "base")
    pair.write("source", "other.txt", "o")
    pair.sync()
    pair.write("source", path, "source edit", mtime_ns=NEWER)
    pair.write("target", path, "target edit", mtime_ns=OLDER)
    result = pair.sync()
    assert result["conflicts_pending"] == 1
    (conflict,) = [c for c in pair.conflicts() if c["status"] == "pending"]
    return conflict


def test_prompt_user_leaves_the_path_alone_and_lists_it(pair: Pair) -> None:
    conflict = pending_conflict(pair)

    assert pair.files("source")["notes.txt"] == b"source edit"
    assert pair.files("target")["notes.txt"] == b"target edit"
    assert conflict["conduit"] == "pair"
    assert conflict["path"] == "notes.txt"
    assert conflict["resolution"] is None
    assert conflict["resolved_at"] is None
    assert conflict["detected_generation"] == 2
    assert conflict["source"] == {
        "kind": "file",
        "size": len(b"source edit"),
        "mtime_ns": NEWER,
        "content_id": pair.query(
            "SELECT content_id FROM entry WHERE relative_path = ? AND size = ?",
            (b"notes.txt", len(b"source edit")),
        )[0]["content_id"],
    }
    assert conflict["target"]["mtime_ns"] == OLDER  # type: ignore[index]
    # Still pending after another sync, and not recorded twice.
    again = pair.sync()
    assert again["conflicts_pending"] == 1
    assert again["verification_status"] == "verified"
    assert len(pair.conflicts("pair")) == 1
    text = pair.cli("conflicts")
    assert text.returncode == 0
    assert "notes.txt" in text.stdout
    assert "pending" in text.stdout


@pytest.mark.parametrize("keep", ["source", "target"])
def test_resolve_keeps_one_side_and_trashes_the_other(pair: Pair, keep: str) -> None:
    conflict = pending_conflict(pair)
    lost = "target" if keep == "source" else "source"

    result = pair.resolve(int(conflict["id"]), keep)  # type: ignore[call-overload]

    assert "resolved" in result.stdout
    assert pair.assert_equal()["notes.txt"] == f"{keep} edit".encode()
    assert pair.trashed(lost) == [f"{lost} edit".encode()]
    (listed,) = pair.conflicts()
    assert listed["status"] == "resolved"
    assert listed["resolution"] == keep
    assert str(listed["resolved_at"]).endswith("Z")
    generations = pair.query(
        "SELECT generation, conflicts_resolved FROM sync_generation"
        " ORDER BY generation DESC LIMIT 1"
    )
    assert tuple(generations[0]) == (3, 1)
    rows = [r for r in pair.trash_rows() if r["reason"] == "conflict"]
    assert [(r["root"], r["generation"]) for r in rows] == [(lost, 3)]
    assert pair.baseline()["notes.txt"]["generation"] == 3
    follow = pair.sync()
    assert follow["files_copied"] == follow["conflicts_pending"] == 0


def test_resolve_both_keeps_the_older_as_a_conflict_copy(pair: Pair) -> None:
    conflict = pending_conflict(pair)

    pair.resolve(int(conflict["id"]), "both")  # type: ignore[call-overload]

    tree = pair.assert_equal()
    assert tree["notes.txt"] == b"source edit"
    (copy,) = conflict_copies(tree)
    match = CONFLICT_NAME.match(copy)
    assert match is not None
    assert (match["stem"], match["side"], match["suffix"]) == (
        "notes",
        "target",
        ".txt",
    )
    assert tree[copy] == b"target edit"
    assert pair.conflicts()[0]["resolution"] == "both"
    assert pair.sync()["files_copied"] == 0


@pytest.mark.parametrize("changed", ["source", "target"])
def test_resolve_refuses_when_a_side_changed(pair: Pair, changed: str) -> None:
    conflict = pending_conflict(pair)
    pair.write(changed, "notes.txt", "changed again")
    before = (pair.tree("source"), pair.tree("target"))

    result = pair.resolve(int(conflict["id"]), "source", expect=3)  # type: ignore[call-overload]

    assert "changed" in result.stderr
    assert (pair.tree("source"), pair.tree("target")) == before
    assert pair.trashed("source") == pair.trashed("target") == []
    assert pair.conflicts()[0]["status"] == "pending"
    generations = pair.query("SELECT COUNT(*) AS n FROM sync_generation")
    assert generations[0]["n"] == 2


def test_resolve_refuses_a_deleted_side(pair: Pair) -> None:
    conflict = pending_conflict(pair)
    os.unlink(pair.target / "notes.txt")

    pair.resolve(int(conflict["id"]), "source", expect=3)  # type: ignore[call-overload]

    assert pair.files("source")["notes.txt"] == b"source edit"


def test_resolve_rejects_unknown_and_resolved_conflicts(pair: Pair) -> None:
    conflict = pending_conflict(pair)
    pair.resolve(999, "source", expect=2)
    pair.resolve(int(conflict["id"]), "target")  # type: ignore[call-overload]
    again = pair.resolve(int(conflict["id"]), "source", expect=2)  # type: ignore[call-overload]
    assert "already resolved" in again.stderr
    assert pair.assert_equal()["notes.txt"] == b"target edit"


def test_conflicts_of_an_unknown_conduit_is_a_usage_error(pair: Pair) -> None:
    pending_conflict(pair)
    result = pair.cli("conflicts", "nope", "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["kind"] in ("usage", "config")


def test_resolve_and_conflicts_through_a_running_daemon(
    pair: Pair, tmp_path: Path
) -> None:
    conflict = pending_conflict(pair)

    with running_daemon(pair.config, tmp_path) as daemon:
        listed = pair.conflicts()
        assert [c["id"] for c in listed] == [conflict["id"]]
        result = pair.resolve(int(conflict["id"]), "target")  # type: ignore[call-overload]
        assert "resolved" in result.stdout
        assert daemon.logged("conflict_resolved", conflict=conflict["id"])
        assert pair.assert_equal()["notes.txt"] == b"target edit"
        assert pair.conflicts()[0]["resolution"] == "target"
        assert pair.trashed("source") == [b"source edit"]


def test_daemon_records_a_conflict_found_by_an_automatic_run(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path, conflict="prompt_user", schedule="instant")
    pair.write("source", "notes.txt", "base")
    pair.sync()

    with running_daemon(pair.config, tmp_path):
        pair.write("source", "notes.txt", "source edit", mtime_ns=NEWER)
        pair.write("target", "notes.txt", "target edit", mtime_ns=OLDER)
        wait_for(lambda: len(pair.conflicts()) == 1, "the conflict to be recorded")
        (conflict,) = pair.conflicts()
        assert conflict["status"] == "pending"
        pair.resolve(int(conflict["id"]), "both")  # type: ignore[call-overload]
        wait_for(
            lambda: len(conflict_copies(pair.tree("target"))) == 1,
            "the conflict copy",
        )
        assert pair.assert_equal()["notes.txt"] == b"source edit"


def test_a_pending_conflict_edited_again_is_recorded_again(pair: Pair) -> None:
    conflict = pending_conflict(pair)
    pair.write("target", "notes.txt", "target, second edit", mtime_ns=OLDER + 7)
    pair.resolve(int(conflict["id"]), "source", expect=3)  # type: ignore[call-overload]

    assert pair.sync()["conflicts_pending"] == 1

    (again,) = pair.conflicts()
    assert again["id"] == conflict["id"]
    assert again["target"]["mtime_ns"] == OLDER + 7  # type: ignore[index]
    pair.resolve(int(conflict["id"]), "target")  # type: ignore[call-overload]
    assert pair.assert_equal()["notes.txt"] == b"target, second edit"


def test_a_conflict_the_user_settled_by_hand_is_closed(pair: Pair) -> None:
    pending_conflict(pair)
    pair.write("target", "notes.txt", "source edit", mtime_ns=NEWER)

    result = pair.sync()

    assert result["conflicts_pending"] == 0
    (closed,) = pair.conflicts()
    assert closed["status"] == "resolved"
    assert closed["resolution"] is None
    assert pair.assert_equal()["notes.txt"] == b"source edit"


def test_a_conflict_undone_on_both_sides_is_closed(pair: Pair) -> None:
    pair.write("source", "notes.txt", "base", mtime_ns=OLDER - 5)
    pair.write("source", "other.txt", "o")
    pair.sync()
    pair.write("source", "notes.txt", "source edit", mtime_ns=NEWER)
    pair.write("target", "notes.txt", "target edit", mtime_ns=OLDER)
    assert pair.sync()["conflicts_pending"] == 1
    for side in ("source", "target"):  # both back to what they agreed on
        pair.write(side, "notes.txt", "base", mtime_ns=OLDER - 5)

    result = pair.sync()

    assert result["conflicts_pending"] == 0
    (closed,) = pair.conflicts()
    assert (closed["status"], closed["resolution"]) == ("resolved", None)
