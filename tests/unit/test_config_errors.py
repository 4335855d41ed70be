"""Refused values: each problem names the file, the key path, what and what's allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conduitd.config import load_config
from conduitd.errors import ConfigError, ConfigProblem

BASE = {"name": "photos", "source": "src", "target": "dst"}
DROP = object()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return home


def toml_table(values: dict[str, object]) -> str:
    """TOML key/value lines; JSON scalars and arrays are valid TOML values."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def conduit_toml(**overrides: object) -> str:
    values = {**BASE, **overrides}
    return "[[conduit]]\n" + toml_table(
        {key: value for key, value in values.items() if value is not DROP}
    )


def problems_of(tmp_path: Path, text: str) -> tuple[Path, list[ConfigProblem]]:
    path = tmp_path / "conduitd.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert all(problem.file == str(path) for problem in info.value.problems)
    return path, list(info.value.problems)


def only_problem(tmp_path: Path, text: str) -> ConfigProblem:
    _, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        (
            {"mode": "mirrror"},
            "mode",
            "'mirrror' is not a mode; allowed: mirror, bidirectional, selective",
        ),
        (
            {"conflict": "mine"},
            "conflict",
            (
                "'mine' is not a conflict strategy; allowed: newest_wins, "
                "source_wins, target_wins, create_conflict_file, prompt_user"
            ),
        ),
        (
            {"delete": "shred"},
            "delete",
            "'shred' is not a delete strategy; allowed: trash, permanent",
        ),
        ({"mode": 1}, "mode", "1 is not a mode; allowed: mirror"),
        ({"name": DROP}, "name", "missing; this key is required"),
        ({"source": DROP}, "source", "missing; this key is required"),
        ({"target": DROP}, "target", "missing; this key is required"),
        (
            {"name": "my photos"},
            "name",
            "'my photos' is not a valid name; allowed: 1 to 64 characters from A-Z",
        ),
        ({"name": ""}, "name", "'' is not a valid name"),
        ({"name": "a" * 65}, "name", "is not a valid name"),
        ({"name": "a/b"}, "name", "'a/b' is not a valid name"),
        ({"name": "photos\n"}, "name", "is not a valid name"),
        ({"name": 7}, "name", "must be a string, got 7"),
        (
            {"parallel_transfers": 0},
            "parallel_transfers",
            "0 is out of range; allowed: 1..64",
        ),
        (
            {"parallel_transfers": 65},
            "parallel_transfers",
            "65 is out of range; allowed: 1..64",
        ),
        (
            {"parallel_transfers": "3"},
            "parallel_transfers",
            "must be a whole number (1..64), got '3'",
        ),
        ({"parallel_transfers": 3.0}, "parallel_transfers", "must be a whole number"),
        ({"parallel_transfers": True}, "parallel_transfers", "got true"),
        (
            {"bandwidth_limit_mbps": -1},
            "bandwidth_limit_mbps",
            "-1 is out of range; allowed: 0 or more",
        ),
        ({"max_delete_percent": 101}, "max_delete_percent", "allowed: 0..100"),
        ({"max_delete_percent": -1}, "max_delete_percent", "allowed: 0..100"),
        ({"enabled": "yes"}, "enabled", "must be true or false, got 'yes'"),
        ({"use_index_rules": 1}, "use_index_rules", "must be true or false, got 1"),
        ({"ignore": "*.tmp"}, "ignore", "must be an array, got '*.tmp'"),
        ({"ignore": ["*.tmp", 1]}, "ignore[1]", "must be a string, got 1"),
        ({"on_error": [["x"]]}, "on_error[0]", "must be a string, got an array"),
        ({"debounce": "fast"}, "debounce", "'fast' is not a duration; allowed: "),
        ({"max_delay": "0s"}, "max_delay", "'0s' is not a duration"),
        ({"trash_retention": 30}, "trash_retention", 'must be a string such as "30s"'),
        ({"recent": "1 week"}, "recent", "'1 week' is not a duration"),
        (
            {"schedule": "hourly"},
            "schedule",
            "'hourly' is not a schedule; allowed: manual, instant, interval:<duration>",
        ),
        ({"schedule": "interval:500ms"}, "schedule", "at least 1s"),
        (
            {"schedule": "cron:61 * * * *"},
            "schedule",
            "'cron:61 * * * *' is not a valid cron schedule: minute: '61' is not allowed",
        ),
        ({"trash_max_bytes": "20GB"}, "trash_max_bytes", "'20GB' is not a size"),
        ({"min_free": "1.5G"}, "min_free", "'1.5G' is not a size or a percentage"),
        ({"min_free": "150%"}, "min_free", "'150%' is not a percentage"),
        ({"source": "a\u0000b"}, "source", "contains a NUL byte"),
        ({"target": ""}, "target", "must not be empty"),
        ({"source": 5}, "source", "must be a string"),
        (
            {"source": "~no_such_user_xyz/photos"},
            "source",
            "cannot expand '~no_such_user_xyz'",
        ),
    ],
)
def test_bad_conduit_value_names_file_key_and_what_is_allowed(
    tmp_path: Path, overrides: dict[str, object], key: str, message: str
) -> None:
    problem = only_problem(tmp_path, conduit_toml(**overrides))
    assert problem.key == f"conduit[0].{key}"
    assert message in problem.message
    assert problem.render().startswith(
        f"{tmp_path / 'conduitd.toml'}: conduit[0].{key}: "
    )


@pytest.mark.parametrize(
    ("daemon", "key", "message"),
    [
        (
            {"log_level": "loud"},
            "log_level",
            "'loud' is not a log level; allowed: debug",
        ),
        ({"log_format": "xml"}, "log_format", "allowed: auto, json, console"),
        ({"rescan_interval": "0s"}, "rescan_interval", "'0s' is not a duration"),
        ({"shutdown_timeout": "30"}, "shutdown_timeout", "'30' is not a duration"),
        ({"max_parallel_transfers": 257}, "max_parallel_transfers", "allowed: 1..256"),
        ({"state_dir": "x\u0000"}, "state_dir", "contains a NUL byte"),
        ({"state_dir": ""}, "state_dir", "must not be empty"),
        (
            {"colour": "red"},
            "colour",
            "unknown key; allowed keys: state_dir, log_level",
        ),
    ],
)
def test_bad_daemon_value_names_file_key_and_what_is_allowed(
    tmp_path: Path, daemon: dict[str, object], key: str, message: str
) -> None:
    problem = only_problem(tmp_path, "[daemon]\n" + toml_table(daemon) + conduit_toml())
    assert problem.key == f"daemon.{key}"
    assert message in problem.message


def test_unknown_conduit_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, conduit_toml(colour="red"))
    assert problem.render() == (
        f"{tmp_path / 'conduitd.toml'}: conduit[0].colour: unknown key; allowed keys: "
        "name, source, target, mode, schedule, enabled, conflict, delete, "
        "parallel_transfers, bandwidth_limit_mbps, use_index_rules, ignore, include, "
        "recent, debounce, max_delay, max_delete_percent, trash_retention, "
        "trash_max_bytes, min_free, on_error"
    )


def test_unknown_key_close_to_a_known_one_gets_a_hint(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, conduit_toml(shedule="instant"))
    assert problem.message.startswith("unknown key (did you mean 'schedule'?); ")


def test_unknown_key_that_toml_quotes_is_shown_quoted(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, conduit_toml() + '"my key" = 1\n')
    assert problem.key == 'conduit[0]."my key"'


def test_unknown_duration_key_is_the_toml_key_not_the_field(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, conduit_toml(debounce_s="1s"))
    assert problem.key == "conduit[0].debounce_s"
    assert "(did you mean 'debounce'?)" in problem.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "conduits = []\n" + conduit_toml())
    assert problem.key == "conduits"
    assert problem.message == (
        "unknown key (did you mean 'conduit'?); allowed keys: daemon, conduit"
    )


def test_conduit_written_as_a_single_table(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, '[conduit]\nname = "a"\n')
    assert problem.key == "conduit"
    assert (
        "must be an array of tables, got a table; write [[conduit]]" in problem.message
    )


def test_conduit_entry_that_is_not_a_table(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "conduit = [1]\n")
    assert (problem.key, problem.message) == ("conduit[0]", "must be a table, got 1")


def test_daemon_that_is_not_a_table(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, 'daemon = "fast"\n')
    assert (problem.key, problem.message) == (
        "daemon",
        "must be a [daemon] table, got 'fast'",
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        '[daemon]\nlog_level = "loud"\n'
        + conduit_toml(mode="mirrror", debounce="soon")
        + conduit_toml(name="b", source="s2", target="t2", schedule="weekly")
        + conduit_toml(name="photos", source="s3", target="t3")
    )
    _, problems = problems_of(tmp_path, text)
    assert [p.key for p in problems] == [
        "daemon.log_level",
        "conduit[0].mode",
        "conduit[0].debounce",
        "conduit[1].schedule",
        "conduit[2].name",
    ]


def test_cross_checks_still_run_on_the_conduits_that_parsed(tmp_path: Path) -> None:
    text = (
        conduit_toml(mode="mirrror")
        + conduit_toml(name="b", source="s2", target="t2")
        + conduit_toml(name="b", source="s3", target="t3")
    )
    _, problems = problems_of(tmp_path, text)
    assert [p.key for p in problems] == ["conduit[0].mode", "conduit[2].name"]
