"""`conduitd unit`: the systemd unit and launchd plist for a config."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conduitd.daemon.units import (
    UnitSpec,
    render_launchd_plist,
    render_systemd_unit,
    unit_spec,
)
from conduitd.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
SERVICE_DIRECTIVES = (
    "Type=notify",
    "ExecReload=/bin/kill -HUP $MAINPID",
    "WatchdogSec=30",
    "Restart=on-failure",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "RestrictAddressFamilies=AF_UNIX",
    "SystemCallFilter=@system-service",
    "UMask=0077",
)
CAPABILITIES = (
    "CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH"
)


def write_config(path: Path, *, state_dir: str | None) -> Path:
    lines = ["[daemon]", f'state_dir = "{state_dir}"'] if state_dir else []
    path.write_text("\n".join(lines) + "\n")
    return path


def spec(tmp_path: Path, *roots: Path, system: bool = True) -> UnitSpec:
    config = write_config(tmp_path / "c.toml", state_dir=str(tmp_path / "state"))
    return unit_spec(config, tmp_path / "state", roots, 30.0, system=system)


def directives(unit: str) -> list[str]:
    return [line for line in unit.splitlines() if line and line[0] not in "#["]


def test_system_unit_is_notify_sandboxed_and_names_every_root(tmp_path: Path) -> None:
    roots = (Path("/srv/photos"), Path("/mnt/backup/photos"))
    unit = render_systemd_unit(spec(tmp_path, *roots), system=True)
    lines = directives(unit)
    for directive in (*SERVICE_DIRECTIVES, CAPABILITIES, "ProtectHome=read-only"):
        assert directive in lines, directive
    assert f"ReadWritePaths={tmp_path / 'state'}" in lines
    assert "ReadWritePaths=-/srv/photos" in lines
    assert "ReadWritePaths=-/mnt/backup/photos" in lines
    assert "WantedBy=multi-user.target" in lines
    [exec_start] = [line for line in lines if line.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert Path(argv[0]).is_absolute()
    assert argv[-3:] == ["--config", str(tmp_path / "c.toml"), "daemon"]


def test_user_unit_has_no_capabilities_and_leaves_home_writable(tmp_path: Path) -> None:
    unit = render_systemd_unit(
        spec(tmp_path, Path("/srv/a"), system=False), system=False
    )
    lines = directives(unit)
    for directive in SERVICE_DIRECTIVES:
        assert directive in lines, directive
    assert not any(line.startswith("CapabilityBoundingSet") for line in lines)
    assert not any(line.startswith("ProtectHome") for line in lines)
    assert "WantedBy=default.target" in lines


def test_system_unit_refuses_a_config_without_state_dir(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", state_dir=None)
    with pytest.raises(UsageError, match="state_dir"):
        unit_spec(config, tmp_path / "state", (), 30.0, system=True)
    # A user unit may use the default state dir.
    unit_spec(config, tmp_path / "state", (), 30.0, system=False)


def test_var_lib_state_dir_becomes_a_state_directory(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", state_dir="/var/lib/conduitd")
    built = unit_spec(config, Path("/var/lib/conduitd"), (), 30.0, system=True)
    lines = directives(render_systemd_unit(built, system=True))
    assert "StateDirectory=conduitd" in lines
    assert "StateDirectoryMode=0700" in lines


def test_paths_with_spaces_and_percent_are_quoted(tmp_path: Path) -> None:
    unit = render_systemd_unit(spec(tmp_path, Path("/srv/my 100% photos")), system=True)
    assert 'ReadWritePaths=-"/srv/my 100%% photos"' in unit


def test_roots_under_tmp_are_warned_about(tmp_path: Path) -> None:
    built = spec(tmp_path, Path("/tmp/photos"), Path("/srv/ok"))
    assert any("/tmp/photos" in warning for warning in built.warnings)
    assert not any("/srv/ok" in warning for warning in built.warnings)


def test_launchd_plist_keeps_alive_and_logs(tmp_path: Path) -> None:
    plist = plistlib.loads(render_launchd_plist(spec(tmp_path), system=False).encode())
    assert plist["Label"] == "io.conduitd"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ProgramArguments"][-1] == "daemon"
    assert plist["StandardErrorPath"].endswith("conduitd.log")
    assert Path(plist["StandardOutPath"]).is_absolute()


@pytest.mark.parametrize("system", [True, False])
def test_generated_units_pass_systemd_analyze_verify(
    tmp_path: Path, system: bool
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit_file = tmp_path / "conduitd.service"
    (tmp_path / "root").mkdir()
    unit_file.write_text(
        render_systemd_unit(
            spec(tmp_path, tmp_path / "root", system=system), system=system
        )
    )
    # A user unit is verified as a system one: --user needs a running manager.
    result = subprocess.run(
        [analyze, "verify", str(unit_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # Unknown or invalid settings are only warnings: "<file>:<line>: ...".
    assert f"{unit_file}:" not in result.stderr


@pytest.mark.parametrize("name", ["conduitd.service", "conduitd-user.service"])
def test_static_unit_templates_carry_the_same_directives(name: str) -> None:
    lines = directives((REPO / "systemd" / name).read_text())
    for directive in SERVICE_DIRECTIVES:
        assert directive in lines, directive
    assert (CAPABILITIES in lines) == (name == "conduitd.service")


def test_static_plist_template_parses() -> None:
    plist = plistlib.loads((REPO / "launchd" / "io.conduitd.plist").read_bytes())
    assert plist["Label"] == "io.conduitd"
    assert plist["RunAtLoad"] is True
    assert "KeepAlive" in plist


def test_unit_command_uses_this_interpreter(tmp_path: Path) -> None:
    argv = spec(tmp_path).command
    assert argv[0] in (sys.executable, str(Path(sys.argv[0]).absolute()))
