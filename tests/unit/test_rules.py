from __future__ import annotations

import os

import pytest

from conduitd.sync.rules import IndexRules


@pytest.mark.parametrize(
    ("path", "is_dir", "expected"),
    [
        (b"notes.txt", False, False),
        (b"x.tmp", False, True),
        (b"deep/er/x.tmp", False, True),
        (b"node_modules", True, True),
        (b"node_modules", False, False),  # `node_modules/` matches directories only
        (b"app/node_modules", True, True),
        (b"app/node_modules/pkg/index.js", False, True),
        (b"app/node_modules/pkg", True, True),
        (b".DS_Store", False, True),
        (b"photos/.DS_Store", False, True),
        (b"build", True, True),
        (b"build/keep.txt", False, True),  # git: no re-include under an ignored dir
        (b"src/keep.txt", False, False),
    ],
)
def test_ignore_follows_gitignore(path: bytes, is_dir: bool, expected: bool) -> None:
    rules = IndexRules(
        ignore=["*.tmp", "node_modules/", ".DS_Store", "/build/", "!build/keep.txt"]
    )
    assert rules.is_ignored(path, is_dir) is expected


def test_paths_under_a_directory_ignored_by_a_file_pattern_are_ignored() -> None:
    rules = IndexRules(ignore=["*.bundle"])
    assert rules.is_ignored(b"App.bundle", True)
    assert rules.is_ignored(b"App.bundle/Contents/Info.plist", False)


@pytest.mark.parametrize(
    "path",
    [b".conduitd", b".conduitd/marker", b"a/b/.conduitd", b"a/.conduitd/tmp/x"],
)
@pytest.mark.parametrize("use_index_rules", [True, False])
def test_state_dir_is_ignored_at_any_depth(path: bytes, use_index_rules: bool) -> None:
    rules = IndexRules(use_index_rules=use_index_rules)
    assert rules.is_ignored(path, is_dir=False)
    assert rules.is_ignored(path, is_dir=True)


def test_use_index_rules_false_drops_the_ignore_list() -> None:
    rules = IndexRules(ignore=["*.tmp"], use_index_rules=False)
    assert not rules.is_ignored(b"x.tmp", is_dir=False)


def test_root_and_blank_patterns_are_never_ignored() -> None:
    rules = IndexRules(ignore=["", "   ", "*"])
    assert not rules.is_ignored(b"", is_dir=True)
    assert rules.is_ignored(b"anything", is_dir=False)


def test_negation_reincludes_outside_ignored_directories() -> None:
    rules = IndexRules(ignore=["*.log", "!keep.log"])
    assert rules.is_ignored(b"a.log", False)
    assert not rules.is_ignored(b"logs/keep.log", False)


def test_non_utf8_names_are_matched_with_surrogateescape() -> None:
    name = b"caf\xe9.tmp"
    rules = IndexRules(ignore=["*.tmp", os.fsdecode(b"\xff*")])
    assert rules.is_ignored(name, False)
    assert rules.is_ignored(b"\xffdir", True)
    assert not rules.is_ignored(b"caf\xe9.txt", False)


def test_directory_results_are_cached_and_consistent() -> None:
    rules = IndexRules(ignore=["cache/"])
    deep = b"/".join([b"cache"] + [b"d"] * 3000) + b"/f"  # deeper than recursion
    assert rules.is_ignored(deep, False)
    assert rules.is_ignored(b"x/cache/y", False)
    assert not rules.is_ignored(b"/".join([b"d"] * 3000), True)


def test_without_include_everything_is_selected() -> None:
    rules = IndexRules()
    assert not rules.has_include
    assert rules.is_selected(b"a/b.txt", False)


@pytest.mark.parametrize(
    ("path", "is_dir", "expected"),
    [
        (b"photos", True, True),
        (b"photos/a.jpg", False, True),
        (b"photos/2024/b.jpg", False, True),
        (b"photos/raw", True, False),
        (b"photos/raw/c.cr2", False, False),
        (b"docs/readme.md", False, True),
        (b"docs/readme.txt", False, False),
        (b"other/x.jpg", False, False),
        (b"", True, True),
    ],
)
def test_include_selects_with_gitignore_matching(
    path: bytes, is_dir: bool, expected: bool
) -> None:
    rules = IndexRules(include=["/photos/", "!/photos/raw/", "docs/*.md"])
    assert rules.has_include
    assert rules.is_selected(path, is_dir) is expected
