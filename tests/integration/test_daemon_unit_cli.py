"""`conduitd unit` as a user runs it."""

from __future__ import annotations

from pathlib import Path

from helpers.cli import run_cli, write_config


def test_unit_system_refuses_a_config_without_state_dir(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    config = tmp_path / "conduitd.toml"
    config.write_text('[[conduit]]\nname = "a"\nsource = "src"\ntarget = "dst"\n')
    result = run_cli("unit", "--system", config=config)
    assert result.returncode == 2
    assert "state_dir" in result.stderr
    assert result.stdout == ""


def test_unit_prints_a_unit_naming_the_roots_and_state_dir(tmp_path: Path) -> None:
    for side in ("src", "dst"):
        (tmp_path / side).mkdir()
    conduit = {"name": "a", "source": "src", "target": "dst"}
    config = write_config(tmp_path / "conduitd.toml", tmp_path / "state", [conduit])
    result = run_cli("unit", "--system", config=config)
    assert result.returncode == 0, result.stderr
    assert f"ReadWritePaths=-{tmp_path / 'src'}" in result.stdout
    assert f"ReadWritePaths=-{tmp_path / 'dst'}" in result.stdout
    assert f"ReadWritePaths={tmp_path / 'state'}" in result.stdout
    assert f"--config {config} daemon" in result.stdout
    assert "Type=notify" in result.stdout


def test_unit_needs_a_scope(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conduitd.toml", tmp_path / "state", [])
    result = run_cli("unit", config=config)
    assert result.returncode == 2
    assert "--system or --user" in result.stderr
