"""Bidirectional mode on real trees through the CLI: changes that merge cleanly.

Issue 6: changes on one side only, the same change on both, deletes on both,
renames, many files at once, unicode and case-only renames, the first sync
(a union) and the baseline written after every generation.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from helpers.twoway import BASE_NS, Pair

# Files that stay put, so moving two files stays under max_delete_percent.
OTHERS = {f"other{i}.txt": str(i) for i in range(4)}


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path)


def synced(pair: Pair, files: dict[str, str]) -> None:
    """Both sides hold `files` and one generation agreed on them."""
    for rel, data in files.items():
        pair.write("source", rel, data)
    pair.sync()
    pair.assert_equal()


def test_bidirectional_propagates_source_only_changes(pair: Pair) -> None:
    synced(pair, {"keep.txt": "k", "edit.txt": "old", "gone.txt": "g"})
    pair.write("source", "edit.txt", "new on source")
    pair.write("source", "sub/new.txt", "added")
    (pair.source / "gone.txt").unlink()

    result = pair.sync()

    assert result["files_copied"] == 2
    assert result["files_deleted"] == 1
    assert result["verification_status"] == "verified"
    assert pair.assert_equal() == {
        "keep.txt": b"k",
        "edit.txt": b"new on source",
        "sub": "<dir>",
        "sub/new.txt": b"added",
    }
    assert sorted(pair.trashed("target")) == [b"g", b"old"]


def test_bidirectional_propagates_target_only_changes(pair: Pair) -> None:
    synced(pair, {"keep.txt": "k", "edit.txt": "old", "gone.txt": "g"})
    pair.write("target", "edit.txt", "new on target")
    pair.write("target", "deep/er/new.txt", "added")
    (pair.target / "gone.txt").unlink()
    os.chmod(pair.target / "keep.txt", 0o600)

    result = pair.sync()

    assert result["files_copied"] == 2
    assert result["files_deleted"] == 1
    assert result["metadata_updated"] == 1
    assert pair.assert_equal()["edit.txt"] == b"new on target"
    assert (pair.source / "deep/er/new.txt").read_bytes() == b"added"
    assert not (pair.source / "gone.txt").exists()
    assert (pair.source / "keep.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(pair.trashed("source")) == [b"g", b"old"]
    reasons = {(r["root"], r["reason"]) for r in pair.trash_rows()}
    assert reasons == {("source", "deleted"), ("source", "overwritten")}


def test_bidirectional_same_change_on_both_sides_copies_nothing(pair: Pair) -> None:
    synced(pair, {"same.txt": "old"})
    pair.write("source", "same.txt", "agreed", mtime_ns=BASE_NS)
    pair.write("target", "same.txt", "agreed", mtime_ns=BASE_NS + 5)
    pair.write("source", "both-new.txt", "twin", mtime_ns=BASE_NS)
    pair.write("target", "both-new.txt", "twin", mtime_ns=BASE_NS)

    result = pair.sync()

    assert result["files_copied"] == 0
    assert result["conflicts_resolved"] == result["conflicts_pending"] == 0
    # Same content, different metadata: the newer metadata wins.
    assert result["metadata_updated"] == 1
    assert (pair.source / "same.txt").stat().st_mtime_ns == BASE_NS + 5
    baseline = pair.baseline()
    assert baseline["same.txt"]["mtime_ns"] == BASE_NS + 5
    assert baseline["both-new.txt"]["generation"] == result["generation"]


def test_bidirectional_delete_on_both_sides_drops_the_baseline(pair: Pair) -> None:
    synced(pair, {"a.txt": "a", "dir/b.txt": "b"})
    for root in (pair.source, pair.target):
        (root / "a.txt").unlink()
        (root / "dir/b.txt").unlink()
        (root / "dir").rmdir()

    result = pair.sync()

    assert result["files_deleted"] == 0
    assert pair.assert_equal() == {}
    assert pair.baseline() == {}


def test_bidirectional_deleted_directory_goes_only_when_empty(pair: Pair) -> None:
    synced(pair, {"keep.txt": "k", "dir/a.txt": "a", "dir/b.txt": "b"})
    for rel in ("dir/a.txt", "dir/b.txt"):
        (pair.source / rel).unlink()
    (pair.source / "dir").rmdir()
    pair.write("target", "dir/b.txt", "changed on target")

    pair.sync()

    # b.txt was modified where the directory was deleted: both survive.
    assert pair.assert_equal() == {
        "keep.txt": b"k",
        "dir": "<dir>",
        "dir/b.txt": b"changed on target",
    }


def test_bidirectional_rename_on_one_side_while_the_other_modifies(pair: Pair) -> None:
    synced(pair, {"report.txt": "draft", "other.txt": "x"})
    os.rename(pair.source / "report.txt", pair.source / "report-final.txt")
    pair.write("target", "report.txt", "draft, edited on target")

    result = pair.sync()

    assert result["errors_encountered"] == 0
    assert pair.assert_equal() == {
        "report-final.txt": b"draft",
        "report.txt": b"draft, edited on target",
        "other.txt": b"x",
    }


def test_bidirectional_rename_of_a_directory_moves_its_files(pair: Pair) -> None:
    synced(pair, {"album/a.jpg": "A", "album/b.jpg": "B", **OTHERS})
    os.rename(pair.target / "album", pair.target / "album-2024")

    pair.sync()

    tree = pair.assert_equal()
    assert {k: v for k, v in tree.items() if k.startswith("album")} == {
        "album-2024": "<dir>",
        "album-2024/a.jpg": b"A",
        "album-2024/b.jpg": b"B",
    }
    assert sorted(pair.trashed("source")) == [b"A", b"B"]


def test_bidirectional_many_files_changed_at_once(pair: Pair) -> None:
    synced(pair, {f"d{i % 7}/f{i:03d}.txt": f"v0 {i}" for i in range(300)})
    for i in range(0, 300, 3):
        pair.write("source", f"d{i % 7}/f{i:03d}.txt", f"source {i}")
    for i in range(1, 300, 3):
        pair.write("target", f"d{i % 7}/f{i:03d}.txt", f"target {i}")
    for i in range(50):
        pair.write("source", f"s/new{i}.txt", f"s{i}")
        pair.write("target", f"t/new{i}.txt", f"t{i}")

    result = pair.sync()

    assert result["files_copied"] == 300
    assert result["errors_encountered"] == 0
    tree = pair.assert_equal()
    assert tree["d0/f000.txt"] == b"source 0"
    assert tree["d1/f001.txt"] == b"target 1"
    assert tree["d2/f002.txt"] == b"v0 2"
    assert pair.sync()["files_copied"] == 0


def test_bidirectional_unicode_names_and_renames(pair: Pair) -> None:
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    synced(pair, {f"{nfc}.txt": "nfc", "日本/文字.txt": "kanji", "emoji-🎉.txt": "e"})
    os.rename(pair.source / f"{nfc}.txt", pair.source / f"{nfd}.txt")
    os.rename(pair.target / "日本/文字.txt", pair.target / "日本/もじ.txt")

    pair.sync()

    tree = pair.assert_equal()
    assert tree[f"{nfd}.txt"] == b"nfc"
    assert f"{nfc}.txt" not in tree
    assert tree["日本/もじ.txt"] == b"kanji"
    assert "日本/文字.txt" not in tree


def test_bidirectional_case_only_rename(pair: Pair) -> None:
    synced(pair, {"readme.md": "hello", "Docs/a.txt": "a"})
    os.rename(pair.target / "readme.md", pair.target / "README.md")
    os.rename(pair.source / "Docs", pair.source / "docs")

    pair.sync()

    assert pair.assert_equal() == {
        "README.md": b"hello",
        "docs": "<dir>",
        "docs/a.txt": b"a",
    }


def test_bidirectional_non_utf8_name_round_trips(pair: Pair) -> None:
    name = b"caf\xe9.txt"
    with open(os.path.join(bytes(pair.source), name), "wb") as handle:
        handle.write(b"latin-1 name")

    pair.sync()

    assert os.listdir(bytes(pair.target)).count(name) == 1
    assert pair.sync()["files_copied"] == 0


def test_bidirectional_first_sync_is_a_union(pair: Pair) -> None:
    pair.write("source", "only-source.txt", "s")
    pair.write("target", "only-target.txt", "t")
    pair.write("source", "same.txt", "same")
    pair.write("target", "same.txt", "same")
    pair.write("source", "differs.txt", "source version", mtime_ns=BASE_NS + 10)
    pair.write("target", "differs.txt", "target version", mtime_ns=BASE_NS)

    result = pair.sync()

    assert result["files_deleted"] == 0
    assert result["conflicts_resolved"] == 1  # newest_wins: the source's
    tree = pair.assert_equal()
    assert tree["only-source.txt"] == b"s"
    assert tree["only-target.txt"] == b"t"
    assert tree["differs.txt"] == b"source version"
    assert pair.trashed("target") == [b"target version"]
    assert set(pair.baseline()) == {
        "only-source.txt",
        "only-target.txt",
        "same.txt",
        "differs.txt",
    }


def test_bidirectional_first_sync_onto_an_empty_side(pair: Pair) -> None:
    pair.write("target", "a/b.txt", "from the target")

    result = pair.sync()

    assert result["files_copied"] == 1
    assert pair.assert_equal()["a/b.txt"] == b"from the target"


def test_bidirectional_baseline_written_after_every_generation(pair: Pair) -> None:
    pair.write("source", "a.txt", "1")
    first = pair.sync()
    rows = pair.baseline()
    assert set(rows) == {"a.txt"}
    assert rows["a.txt"]["generation"] == first["generation"]

    pair.write("target", "b/c.txt", "2")
    second = pair.sync()
    rows = pair.baseline()
    assert set(rows) == {"a.txt", "b", "b/c.txt"}
    assert rows["b/c.txt"]["generation"] == second["generation"]
    stat = (pair.source / "b/c.txt").stat()
    assert rows["b/c.txt"]["mtime_ns"] == stat.st_mtime_ns
    assert rows["b/c.txt"]["size"] == 1

    (pair.source / "a.txt").unlink()
    pair.sync()
    assert set(pair.baseline()) == {"b", "b/c.txt"}
    generations = pair.query("SELECT generation, status FROM sync_generation")
    assert [tuple(r) for r in generations] == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
    ]


def test_bidirectional_second_sync_does_nothing(pair: Pair) -> None:
    pair.write("source", "x/y.txt", "y")
    pair.write("target", "z.txt", "z")
    pair.sync()

    again = pair.sync()

    for key in ("files_copied", "metadata_updated", "files_deleted"):
        assert again[key] == 0
    assert again["verification_status"] == "verified"


def test_bidirectional_symlinks_propagate_without_being_followed(pair: Pair) -> None:
    synced(pair, {"real.txt": "r"})
    os.symlink("real.txt", pair.target / "link")
    os.symlink("/etc/passwd", pair.source / "outside")

    pair.sync()

    tree = pair.assert_equal()
    assert tree["link"] == ("->", "real.txt")
    assert tree["outside"] == ("->", "/etc/passwd")
