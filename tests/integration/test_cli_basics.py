"""The command line as a user runs it: a real subprocess each time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conduitd import __version__
from helpers.cli import run_cli, run_cli_recording_modules, write_config

# Benchmarks time a one-shot `sync` as a whole process, next to cp and rsync,
# so its imports count: these are never needed on that path.
NOT_IMPORTED_BY_SYNC = ("rich", "pygments", "pathspec", "watchfiles")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    conduit = {"name": "photos", "source": "src", "target": "dst"}
    return write_config(tmp_path / "conduitd.toml", tmp_path / "state", [conduit])


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_check_prints_ok_for_a_valid_config(config: Path) -> None:
    result = run_cli("check", config=config)
    assert (result.returncode, result.stdout.strip()) == (0, "ok")


def test_check_names_the_key_of_every_problem_and_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(
        '[[conduit]]\nname = "a"\nsource = "/x"\ntarget = "/y"\nschedule = "hourly"\n'
        '[[conduit]]\nname = "b"\nsource = "/x2"\ntarget = "/y2"\nmode = "mirrror"\n'
    )
    result = run_cli("check", config=broken)
    assert result.returncode == 2
    assert "conduit[0].schedule" in result.stdout
    assert "conduit[1].mode" in result.stdout
    assert str(broken) in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_config_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("check", config=tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "nope.toml" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_every_command_has_help_with_an_example() -> None:
    commands = [
        "daemon",
        "check",
        "migrate",
        "sync",
        "status",
        "history",
        "conflicts",
        "resolve",
        "log",
        "reload",
        "stop",
        "unit",
        "trash",
        "restore",
        "pause",
        "resume",
        "completion",
    ]
    for command in commands:
        result = run_cli(command, "--help")
        assert result.returncode == 0, command
        assert "Example:" in result.stdout, command


def test_status_json_lists_configured_conduits_from_the_library(config: Path) -> None:
    result = run_cli("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["daemon"] is None
    [conduit] = document["conduits"]
    assert conduit["name"] == "photos"
    assert conduit["mode"] == "mirror"
    assert conduit["schedule"] == "manual"
    assert conduit["last_generation"] is None


def test_migrate_up_then_status_lists_applied_migrations(config: Path) -> None:
    up = run_cli("migrate", "up", config=config)
    assert up.returncode == 0, up.stderr
    status = run_cli("migrate", "status", config=config)
    assert status.returncode == 0
    assert "library.db  0001" in status.stdout
    assert "pending" not in status.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_generated_for_each_shell(shell: str) -> None:
    result = run_cli("completion", shell)
    assert result.returncode == 0
    assert "_CONDUITD_COMPLETE" in result.stdout


@pytest.mark.parametrize("flags", [(), ("--dry-run",)])
def test_one_shot_sync_does_not_import_what_it_does_not_need(
    config: Path, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    args = ["--config", str(config), "sync", "photos", "--json", *flags]
    result, modules = run_cli_recording_modules(args, tmp_path / "modules.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["conduit"] == "photos"
    assert "structlog" in modules  # the check itself ran on the right path
    assert {m.partition(".")[0] for m in modules} & set(NOT_IMPORTED_BY_SYNC) == set()
