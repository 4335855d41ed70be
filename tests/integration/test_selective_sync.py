"""Selective mode on real trees through the CLI (issue 6).

A mirror restricted to the `include` patterns and, with `recent`, to files
modified within the window; nothing outside the selection is copied, and
nothing outside it is ever deleted on the target.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from helpers.twoway import Pair

DAY_NS = 86_400 * 1_000_000_000


def test_selective_copies_only_included_paths(tmp_path: Path) -> None:
    pair = Pair(tmp_path, mode="selective", include=["*.jpg", "docs/"])
    pair.write("source", "a.jpg", "A")
    pair.write("source", "deep/b.jpg", "B")
    pair.write("source", "notes.txt", "not selected")
    pair.write("source", "docs/readme.md", "selected by directory")

    result = pair.sync()

    assert result["files_copied"] == 3
    assert pair.files("target") == {
        "a.jpg": b"A",
        "deep/b.jpg": b"B",
        "docs/readme.md": b"selected by directory",
    }


def test_selective_never_deletes_outside_the_selection(tmp_path: Path) -> None:
    pair = Pair(tmp_path, mode="selective", include=["*.jpg"])
    for i in range(4):
        pair.write("source", f"p{i}.jpg", str(i))
    pair.write("target", "mine.txt", "the target's own")
    pair.write("target", "old/list.csv", "also the target's")
    pair.sync()
    (pair.source / "p0.jpg").unlink()

    result = pair.sync()

    assert result["files_deleted"] == 1
    target = pair.files("target")
    assert "p0.jpg" not in target
    assert target["mine.txt"] == b"the target's own"
    assert target["old/list.csv"] == b"also the target's"
    assert pair.trashed("target") == [b"0"]
    assert "mine.txt" not in pair.files("source")


def test_selective_propagates_edits_of_selected_files_only(tmp_path: Path) -> None:
    pair = Pair(tmp_path, mode="selective", include=["*.md"])
    pair.write("source", "a.md", "v1")
    pair.write("source", "b.txt", "v1")
    pair.sync()
    pair.write("source", "a.md", "v2")
    pair.write("source", "b.txt", "v2")
    pair.write("target", "b.txt", "target's b")

    pair.sync()

    assert pair.files("target") == {"a.md": b"v2", "b.txt": b"target's b"}
    assert pair.trashed("target") == [b"v1"]


def test_selective_recent_selects_files_by_mtime(tmp_path: Path) -> None:
    pair = Pair(tmp_path, mode="selective", recent="7d")
    now_ns = time.time_ns()
    pair.write("source", "fresh.txt", "new", mtime_ns=now_ns - DAY_NS)
    pair.write("source", "old/stale.txt", "old", mtime_ns=now_ns - 30 * DAY_NS)
    pair.write("target", "kept-old.txt", "old on target", mtime_ns=now_ns - 90 * DAY_NS)

    result = pair.sync()

    assert result["files_copied"] == 1
    assert result["files_deleted"] == 0
    assert pair.files("target") == {
        "fresh.txt": b"new",
        "kept-old.txt": b"old on target",
    }


def test_selective_include_and_recent_together(tmp_path: Path) -> None:
    pair = Pair(tmp_path, mode="selective", include=["*.log"], recent="1d")
    now_ns = time.time_ns()
    pair.write("source", "today.log", "t", mtime_ns=now_ns - 60_000_000_000)
    pair.write("source", "today.txt", "t", mtime_ns=now_ns - 60_000_000_000)
    pair.write("source", "last-week.log", "w", mtime_ns=now_ns - 7 * DAY_NS)

    pair.sync()

    assert pair.files("target") == {"today.log": b"t"}


def test_selective_with_neither_include_nor_recent_is_refused_by_check(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path, mode="selective")

    result = pair.cli("check")

    assert result.returncode == 2
    assert "selective" in result.stdout + result.stderr


def test_selective_dry_run_lists_only_the_selection(tmp_path: Path) -> None:
    pair = Pair(tmp_path, mode="selective", include=["keep/"])
    pair.write("source", "keep/x.txt", "x")
    pair.write("source", "skip/y.txt", "y")

    result = pair.cli("sync", "pair", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    paths = {op["path"] for op in json.loads(result.stdout)["operations"]}
    assert paths == {"keep", "keep/x.txt"}
    assert not (pair.target / ".conduitd").exists()
    assert os.listdir(pair.target) == []
