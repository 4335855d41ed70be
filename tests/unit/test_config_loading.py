"""Loading: defaults, paths, the config and state dir locations, file errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import conduitd.config
from conduitd.config import (
    ConduitConfig,
    ConflictStrategy,
    DaemonConfig,
    DeleteStrategy,
    LogFormat,
    LogLevel,
    MinFree,
    ScheduleKind,
    SyncMode,
    default_state_dir,
    load_config,
    read_state_dir_leniently,
    resolve_config_path,
)
from conduitd.errors import ConfigError, UsageError

# The [[conduit]] keys of DESIGN.md's Config block, in its order.
DESIGN_CONDUIT_KEYS = [
    "name", "source", "target", "mode", "schedule", "enabled", "conflict", "delete",
    "parallel_transfers", "bandwidth_limit_mbps", "use_index_rules", "ignore",
    "include", "recent", "debounce", "max_delay", "max_delete_percent",
    "trash_retention", "trash_max_bytes", "min_free", "on_error",
]  # fmt: skip
DESIGN_DAEMON_KEYS = [
    "state_dir", "log_level", "log_format", "rescan_interval", "shutdown_timeout",
    "max_parallel_transfers",
]  # fmt: skip
MINIMAL = """
[[conduit]]
name = "photos"
source = "src"
target = "dst"
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and no XDG or CONDUITD variables, for every test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "CONDUITD_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    return home


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conduitd.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def only_problem(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1, info.value.problems
    problem = info.value.problems[0]
    assert problem.file == str(path)
    return problem.render()


def test_defaults_are_exactly_those_of_the_design(tmp_path: Path, home: Path) -> None:
    config = load_config(write_config(tmp_path, MINIMAL))
    assert config.daemon == DaemonConfig.model_validate({})
    daemon = config.daemon
    assert daemon.state_dir == home / ".local" / "state" / "conduitd"
    assert (daemon.log_level, daemon.log_format) == (LogLevel.INFO, LogFormat.AUTO)
    assert (daemon.rescan_interval_s, daemon.shutdown_timeout_s) == (3600.0, 30.0)
    assert daemon.max_parallel_transfers == 8
    (conduit,) = config.conduits
    assert conduit.mode is SyncMode.MIRROR
    assert conduit.schedule.kind is ScheduleKind.MANUAL
    assert conduit.enabled is True
    assert conduit.conflict is ConflictStrategy.NEWEST_WINS
    assert conduit.delete is DeleteStrategy.TRASH
    assert conduit.parallel_transfers == 3
    assert (conduit.bandwidth_limit_mbps, conduit.bandwidth_limit) == (0, None)
    assert conduit.use_index_rules is True
    assert conduit.ignore == conduit.include == conduit.on_error == ()
    assert conduit.recent_s is None
    assert (conduit.debounce_s, conduit.max_delay_s) == (0.05, 10.0)
    assert conduit.max_delete_percent == 50
    assert conduit.trash_retention_s == 30 * 86_400
    assert conduit.trash_max_bytes is None
    assert conduit.min_free == MinFree(size_bytes=2**30)
    assert config.warnings == ()


def test_models_accept_exactly_the_keys_of_the_design() -> None:
    assert [f.alias or n for n, f in ConduitConfig.model_fields.items()] == (
        DESIGN_CONDUIT_KEYS
    )
    assert [f.alias or n for n, f in DaemonConfig.model_fields.items()] == (
        DESIGN_DAEMON_KEYS
    )


def test_every_value_is_parsed_once_into_a_typed_field(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
        [daemon]
        rescan_interval = "15m"
        [[conduit]]
        name = "docs"
        source = "src"
        target = "dst"
        mode = "selective"
        schedule = "instant"
        include = ["*.pdf"]
        recent = "30d"
        debounce = "200ms"
        max_delay = "1m"
        bandwidth_limit_mbps = 8
        trash_max_bytes = "20G"
        min_free = "5%"
        on_error = ["notify-send", "conduitd"]
        """,
    )
    config = load_config(path)
    docs = config.conduit("docs")
    assert config.daemon.rescan_interval_s == 900.0
    assert (docs.recent_s, docs.debounce_s, docs.max_delay_s) == (
        2_592_000.0,
        0.2,
        60.0,
    )
    assert (docs.bandwidth_limit, docs.bandwidth_limit_bytes_per_s) == (8, 1_000_000)
    assert docs.trash_max_bytes == 20 * 2**30
    assert docs.min_free == MinFree(percent=5.0)
    assert docs.on_error == ("notify-send", "conduitd")
    assert docs.include == ("*.pdf",)


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path / "home")
    path = write_config(
        tmp_path / "etc",
        '[daemon]\nstate_dir = "state"\n' + MINIMAL.replace('"dst"', '"../data/dst"'),
    )
    config = load_config(path)
    assert config.path == path
    assert config.daemon.state_dir == tmp_path / "etc" / "state"
    assert config.conduits[0].source == tmp_path / "etc" / "src"
    assert config.conduits[0].target == tmp_path / "data" / "dst"


def test_tilde_expands_to_home(tmp_path: Path, home: Path) -> None:
    path = write_config(
        tmp_path / "etc",
        """
        [daemon]
        state_dir = "~/state"
        [[conduit]]
        name = "photos"
        source = "~/Photos"
        target = "/mnt/backup/Photos"
        """,
    )
    config = load_config(path)
    assert config.daemon.state_dir == home / "state"
    assert config.conduits[0].source == home / "Photos"


def test_endpoints_are_real_paths(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    path = write_config(tmp_path, MINIMAL.replace('"src"', '"link/photos"'))
    assert load_config(path).conduits[0].source == tmp_path / "real" / "photos"


def test_config_path_prefers_the_option_then_env_then_xdg(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_config_path(None) == home / ".config" / "conduitd" / "conduitd.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert resolve_config_path(None) == tmp_path / "xdg" / "conduitd" / "conduitd.toml"
    monkeypatch.setenv("CONDUITD_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_config_path(None) == tmp_path / "env.toml"
    assert resolve_config_path("~/cli.toml") == home / "cli.toml"


def test_config_path_ignores_empty_and_relative_variables(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDUITD_CONFIG", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert resolve_config_path(None) == home / ".config" / "conduitd" / "conduitd.toml"


def test_default_state_dir_follows_xdg_state_home(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_state_dir() == home / ".local" / "state" / "conduitd"
    monkeypatch.setenv("XDG_STATE_HOME", "relative")
    assert default_state_dir() == home / ".local" / "state" / "conduitd"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert default_state_dir() == tmp_path / "xdg-state" / "conduitd"
    assert load_config(write_config(tmp_path, MINIMAL)).daemon.state_dir == (
        tmp_path / "xdg-state" / "conduitd"
    )


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert only_problem(path) == (
        f"{path}: config file not found; create it or pass --config"
    )


def test_directory_instead_of_file_is_one_problem(tmp_path: Path) -> None:
    assert only_problem(tmp_path).endswith("is a directory, not a config file")


def test_file_that_is_not_utf8_is_one_problem_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "conduitd.toml"
    path.write_bytes(b'[[conduit]]\nname = "caf\xe9"\n')
    assert only_problem(path) == (
        f"{path}: not valid UTF-8 (byte 0xe9 at line 2, column 12); "
        "save the file as UTF-8"
    )


def test_invalid_toml_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[conduit]]\nname = "a"\nsource = = "b"\n')
    assert only_problem(path) == (
        f"{path}: invalid TOML at line 3, column 10: invalid value"
    )


def test_invalid_toml_at_end_of_document_points_at_the_end(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[conduit]]\nname = "a')
    message = only_problem(path)
    assert message.startswith(f"{path}: invalid TOML at line 2, column 10: ")
    assert "unterminated string" in message


def test_invalid_toml_names_a_table_declared_twice(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[daemon]\n[conduit.x]\n[conduit.x]\n")
    assert only_problem(path) == (
        f"{path}: invalid TOML at line 3, column 11: cannot declare 'conduit.x' twice"
    )


def test_empty_file_loads_with_a_warning(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    config = load_config(path)
    assert config.conduits == ()
    assert config.warnings == (
        f"{path}: no [[conduit]] tables; there is nothing to sync",
    )


def test_conduit_lookup_by_name(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, MINIMAL))
    assert config.conduit("photos").name == "photos"
    assert config.names == ("photos",)
    with pytest.raises(
        UsageError, match=r"no conduit named 'music'.*configured: photos"
    ):
        config.conduit("music")


def test_written_roots_are_the_target_or_both_sides(tmp_path: Path) -> None:
    text = MINIMAL + MINIMAL.replace("photos", "notes").replace('"src"', '"a"').replace(
        '"dst"', '"b"'
    )
    text += 'mode = "bidirectional"\n'
    photos, notes = load_config(write_config(tmp_path, text)).conduits
    assert photos.written_roots == (photos.target,)
    assert notes.written_roots == (notes.source, notes.target) == notes.roots


class TestLenientStateDir:
    """`reload` and `stop` find the state dir while the config is broken."""

    def test_equals_the_loaded_state_dir_for_a_valid_file(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, '[daemon]\nstate_dir = "~/state"\n' + MINIMAL)
        assert read_state_dir_leniently(path) == load_config(path).daemon.state_dir

    def test_ignores_invalid_values_elsewhere(self, tmp_path: Path) -> None:
        path = write_config(
            tmp_path,
            '[daemon]\nstate_dir = "st"\nlog_level = "loud"\n[[conduit]]\nmode = 5\n',
        )
        assert read_state_dir_leniently(path) == tmp_path / "st"

    def test_reads_the_daemon_table_of_invalid_toml(self, tmp_path: Path) -> None:
        path = write_config(
            tmp_path,
            """
            [[conduit]]
            name = "a" "b"
            [daemon]  # where the daemon keeps its state
            log_level = = "x"
            state_dir = "/srv/conduitd"   # comment
            [[conduit]]
            state_dir = "/wrong"
            """,
        )
        assert read_state_dir_leniently(path) == Path("/srv/conduitd")

    def test_reads_a_dotted_key_of_invalid_toml(self, tmp_path: Path) -> None:
        path = write_config(tmp_path, 'daemon.state_dir = "/srv/x"\n[[conduit]\n')
        assert read_state_dir_leniently(path) == Path("/srv/x")

    def test_reads_a_file_that_is_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "conduitd.toml"
        path.write_bytes(b'[daemon]\nstate_dir = "/srv/x"\n# caf\xe9\n')
        assert read_state_dir_leniently(path) == Path("/srv/x")

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "[daemon\n",
            '[daemon]\nstate_dir = "a\\u0000b"\n',
            "[daemon]\nstate_dir = 5\n",
            '[[conduit]]\nstate_dir = "/wrong"\n',
            'daemon = "x"\n',
        ],
    )
    def test_falls_back_to_the_default(self, tmp_path: Path, text: str) -> None:
        path = write_config(tmp_path, text)
        assert read_state_dir_leniently(path) == default_state_dir()

    def test_missing_file_falls_back_to_the_default(self, tmp_path: Path) -> None:
        assert read_state_dir_leniently(tmp_path / "absent.toml") == default_state_dir()


def test_package_exports_resolve() -> None:
    for name in conduitd.config.__all__:
        assert getattr(conduitd.config, name) is not None
    with pytest.raises(AttributeError):
        _ = conduitd.config.nothing_here


def test_heavy_imports_happen_only_on_the_paths_that_need_them(tmp_path: Path) -> None:
    plain = write_config(tmp_path / "plain", MINIMAL)
    cron = write_config(tmp_path / "cron", MINIMAL + 'schedule = "cron:0 3 * * 0"\n')
    script = f"""
import json, sys
from pathlib import Path
from conduitd.config import read_state_dir_leniently, resolve_config_path
resolve_config_path(None); read_state_dir_leniently(Path({str(plain)!r}))
light = sorted(m for m in ("pydantic", "apscheduler") if m in sys.modules)
from conduitd.config import load_config
load_config(Path({str(plain)!r}))
plain = "apscheduler" in sys.modules
load_config(Path({str(cron)!r}))
print(json.dumps([light, plain, "apscheduler" in sys.modules]))
"""
    src = Path(conduitd.config.__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src), "HOME": str(tmp_path / "home")},
    )
    assert json.loads(out.stdout) == [[], False, True]
