"""Cross-field checks: names, nested and shared roots, state dir, mode-only keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduitd.config import Config, load_config
from conduitd.config.validation import _relation
from conduitd.errors import ConfigError, ConfigProblem


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return home


def conduit(name: str, source: str, target: str, **extra: object) -> str:
    values = {"name": name, "source": source, "target": target, **extra}
    return "[[conduit]]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in values.items()
    )


def load(tmp_path: Path, *conduits: str, daemon: str = "") -> Config:
    path = tmp_path / "conduitd.toml"
    path.write_text(daemon + "".join(conduits), encoding="utf-8")
    return load_config(path)


def problems(tmp_path: Path, *conduits: str, daemon: str = "") -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, *conduits, daemon=daemon)
    assert all(p.file == str(tmp_path / "conduitd.toml") for p in info.value.problems)
    return list(info.value.problems)


def test_duplicate_names_are_refused_on_the_later_conduit(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, conduit("a", "s1", "t1"), conduit("a", "s2", "t2"))
    assert problem.key == "conduit[1].name"
    assert problem.message == (
        "'a' is already the name of conduit[0]; names must be unique"
    )


def test_source_equal_to_target_is_refused(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, conduit("a", "same", "./same/"))
    assert problem.key == "conduit[0].target"
    assert f"'{tmp_path / 'same'}' is the same directory as source" in problem.message


def test_source_equal_to_target_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (problem,) = problems(tmp_path, conduit("a", "real", "link"))
    assert problem.key == "conduit[0].target"
    assert "is the same directory as source" in problem.message


@pytest.mark.parametrize(
    ("source", "target", "relation"),
    [("data", "data/backup", "lies inside"), ("data/photos", "data", "contains")],
)
def test_nested_endpoints_are_refused(
    tmp_path: Path, source: str, target: str, relation: str
) -> None:
    (problem,) = problems(tmp_path, conduit("a", source, target))
    assert problem.key == "conduit[0].target"
    assert f"{relation} source" in problem.message
    assert "source and target must be separate, unnested directories" in problem.message


@pytest.mark.parametrize(
    ("first", "second", "key", "says"),
    [
        # Two conduits writing one target.
        (("s1", "t"), ("s2", "t"), "conduit[1].target", "is the same directory as"),
        # A target inside another conduit's source, or containing it.
        (("s1", "t1"), ("s2", "s1/copy"), "conduit[1].target", "lies inside"),
        (("s1/sub", "t1"), ("s2", "s1"), "conduit[1].target", "contains"),
        # A source inside another conduit's target.
        (("s1", "t1"), ("t1/sub", "t2"), "conduit[1].source", "lies inside"),
        (("s1", "t1/sub"), ("t1", "t2"), "conduit[1].source", "contains"),
    ],
)
def test_written_roots_are_not_shared_with_other_conduits(
    tmp_path: Path,
    first: tuple[str, str],
    second: tuple[str, str],
    key: str,
    says: str,
) -> None:
    (problem,) = problems(tmp_path, conduit("a", *first), conduit("b", *second))
    assert problem.key == key
    assert says in problem.message
    assert "('a'); a root a conduit writes" in problem.message


def test_bidirectional_source_is_a_written_root(tmp_path: Path) -> None:
    (problem,) = problems(
        tmp_path,
        conduit("notes", "notes", "sync/notes", mode="bidirectional"),
        conduit("backup", "notes", "backup/notes"),
    )
    assert problem.key == "conduit[1].source"
    assert "is the same directory as conduit[0].source" in problem.message


def test_read_only_sources_may_be_shared_and_nested(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        conduit("a", "photos", "backup1"),
        conduit("b", "photos", "backup2"),
        conduit("c", "photos/2024", "backup3"),
    )
    assert config.names == ("a", "b", "c")


@pytest.mark.parametrize(
    ("state_dir", "relation"),
    [
        ("src/.state", "lies inside conduit[0].source"),
        ("dst", "is the same directory as conduit[0].target"),
        (".", "contains conduit[0].source"),
    ],
)
def test_state_dir_must_lie_outside_every_root(
    tmp_path: Path, state_dir: str, relation: str
) -> None:
    daemon = f"[daemon]\nstate_dir = {json.dumps(state_dir)}\n"
    found = problems(tmp_path, conduit("a", "src", "dst"), daemon=daemon)
    assert {p.key for p in found} == {"daemon.state_dir"}
    assert any(relation in p.message for p in found), found
    assert all("the state dir must lie outside every root" in p.message for p in found)


def test_selective_without_include_or_recent_is_refused(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, conduit("a", "s", "t", mode="selective"))
    assert problem.key == "conduit[0].include"
    assert problem.message.startswith(
        "a selective conduit needs include patterns, recent, or both"
    )


@pytest.mark.parametrize("selection", [{"include": ["*.pdf"]}, {"recent": "30d"}])
def test_selective_with_include_or_recent_is_accepted(
    tmp_path: Path, selection: dict[str, object]
) -> None:
    config = load(tmp_path, conduit("a", "s", "t", mode="selective", **selection))
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            {"conflict": "newest_wins"},
            "conflict",
            "ignored: only used with mode bidirectional (this conduit: mode mirror)",
        ),
        ({"include": ["*.pdf"]}, "include", "only used with mode selective"),
        (
            {"recent": "1d", "mode": "bidirectional"},
            "recent",
            "only used with mode selective (this conduit: mode bidirectional)",
        ),
        (
            {"debounce": "1s"},
            "debounce",
            "ignored: only used with schedule instant (this conduit: schedule manual)",
        ),
        (
            {"max_delay": "1m", "schedule": "interval:5m"},
            "max_delay",
            "(this conduit: schedule interval)",
        ),
    ],
)
def test_key_of_another_mode_is_accepted_with_a_warning(
    tmp_path: Path, extra: dict[str, object], key: str, message: str
) -> None:
    (warning,) = load(tmp_path, conduit("a", "s", "t", **extra)).warnings
    assert warning.startswith(f"{tmp_path / 'conduitd.toml'}: conduit[0].{key}: ")
    assert message in warning


def test_keys_left_at_their_default_or_used_by_the_mode_do_not_warn(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        conduit("a", "s1", "t1"),
        conduit("b", "s2", "t2", mode="bidirectional", conflict="prompt_user"),
        conduit("c", "s3", "t3", schedule="instant", debounce="1s", max_delay="5s"),
    )
    assert config.warnings == ()


@given(
    st.lists(st.sampled_from(["a", "b", "a b", "é", ".x"]), max_size=4),
    st.lists(st.sampled_from(["a", "b", "a b", "é", ".x"]), max_size=4),
)
def test_root_relations_are_those_of_pathlib(
    mine: list[str], theirs: list[str]
) -> None:
    """`_relation` compares components itself (pairs of thousands of conduits
    are checked); it must judge exactly as `is_relative_to` does."""
    path, other = Path("/r", *mine), Path("/r", *theirs)
    expected = (
        "is the same directory as"
        if path == other
        else "lies inside"
        if path.is_relative_to(other)
        else "contains"
        if other.is_relative_to(path)
        else None
    )
    assert _relation(path, other) == expected
