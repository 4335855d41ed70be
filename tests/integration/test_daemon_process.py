"""The daemon as systemd runs it: a real process, its socket, signals and CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest

from conduitd import __version__
from conduitd.client import MAX_LINE_BYTES, call
from conduitd.errors import ConduitdError
from helpers.cli import run_cli, write_config
from helpers.daemon import DaemonProcess, request_lines, running_daemon, wait_for


def conduit(tmp_path: Path, name: str, schedule: str = "manual") -> dict[str, str]:
    for side in ("src", "dst"):
        (tmp_path / f"{name}-{side}").mkdir(exist_ok=True)
    return {
        "name": name,
        "source": str(tmp_path / f"{name}-src"),
        "target": str(tmp_path / f"{name}-dst"),
        "schedule": schedule,
    }


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def config(tmp_path: Path, state_dir: Path) -> Path:
    return write_config(
        tmp_path / "conduitd.toml",
        state_dir,
        [conduit(tmp_path, "photos")],
        shutdown_timeout="10s",
    )


def status_json(config: Path) -> dict[str, object]:
    result = run_cli("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def conduit_names(config: Path) -> list[str]:
    conduits = status_json(config)["conduits"]
    assert isinstance(conduits, list)
    return [c["name"] for c in conduits]


def test_second_daemon_on_the_same_state_dir_exits_2_naming_the_pid(
    tmp_path: Path, config: Path
) -> None:
    with running_daemon(config, tmp_path) as first:
        second = run_cli("daemon", config=config, timeout=30)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr
        assert second.stdout == ""


def test_socket_is_0600_in_a_0700_state_dir(
    tmp_path: Path, config: Path, state_dir: Path
) -> None:
    with running_daemon(config, tmp_path):
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        socket_mode = (state_dir / "conduitd.sock").stat().st_mode
        assert stat.S_ISSOCK(socket_mode)
        assert stat.S_IMODE(socket_mode) == 0o600
    assert not (state_dir / "conduitd.sock").exists()


def test_status_through_the_daemon_describes_the_daemon(
    tmp_path: Path, config: Path
) -> None:
    with running_daemon(config, tmp_path) as daemon:
        document = status_json(config)
    info = document["daemon"]
    assert isinstance(info, dict)
    assert info["pid"] == daemon.pid
    assert info["version"] == __version__
    assert str(info["started_at"]).endswith("Z")
    assert set(info["leader"]) == {"role", "term", "lease_expires_at"}
    [photos] = document["conduits"]  # type: ignore[misc]
    assert photos["name"] == "photos"
    # Until the sync engine is wired in, every run fails visibly (not silently).
    assert photos["active"] is None


def test_malformed_requests_get_errors_and_the_daemon_keeps_serving(
    tmp_path: Path, config: Path, state_dir: Path
) -> None:
    sock = state_dir / "conduitd.sock"
    with running_daemon(config, tmp_path):
        bad_json, not_object, unknown, wrong_version, good = request_lines(
            sock,
            b"{not json\n"
            b"[1, 2]\n"
            b'{"v": 1, "id": 7, "method": "explode", "params": {}}\n'
            b'{"v": 9, "id": 8, "method": "status"}\n'
            b'{"v": 1, "id": 9, "method": "status"}\n',
        )
        assert (bad_json["ok"], bad_json["error"]["kind"]) == (False, "usage")
        assert not_object["error"]["kind"] == "usage"
        assert (unknown["id"], unknown["error"]["kind"]) == (7, "usage")
        assert "explode" in unknown["error"]["message"]
        assert (wrong_version["id"], wrong_version["error"]["kind"]) == (8, "usage")
        assert (good["id"], good["ok"]) == (9, True)
        [too_long] = request_lines(sock, b"x" * (MAX_LINE_BYTES + 10) + b"\n")
        assert too_long["error"]["kind"] == "usage"
        assert "longer than" in too_long["error"]["message"]
        [after] = request_lines(sock, b'{"v": 1, "id": 1, "method": "status"}\n')
        assert after["ok"] is True


def test_sighup_with_a_valid_config_adds_a_conduit(
    tmp_path: Path, config: Path, state_dir: Path
) -> None:
    with running_daemon(config, tmp_path) as daemon:
        write_config(
            config,
            state_dir,
            [conduit(tmp_path, "photos"), conduit(tmp_path, "notes", "interval:1h")],
        )
        daemon.signal(signal.SIGHUP)
        daemon.wait_logged("config_reloaded")
        assert conduit_names(config) == ["photos", "notes"]
        notes = status_json(config)["conduits"][1]  # type: ignore[index]
        assert notes["next_run"] is not None


def test_broken_config_is_rejected_and_the_old_one_kept(
    tmp_path: Path, config: Path
) -> None:
    with running_daemon(config, tmp_path) as daemon:
        good_text = config.read_text()
        config.write_text(good_text + '\n[[conduit]]\nname = "bad name!"\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_logged("reload_rejected")
        assert daemon.logged("config_problem")
        reload = run_cli("reload", config=config)
        assert reload.returncode == 2
        assert "conduit[1]" in reload.stdout
        assert "kept its old config" in reload.stderr
        # Even invalid TOML: `reload` reads only state_dir, leniently.
        config.write_text(good_text + "\n[[conduit\n")
        assert run_cli("reload", config=config).returncode == 2
        config.write_text(good_text)
        assert conduit_names(config) == ["photos"]
        ok = run_cli("reload", config=config)
        assert ok.returncode == 0, ok.stderr
        assert "reloaded" in ok.stdout


def test_conduitd_stop_waits_until_the_daemon_is_gone(
    tmp_path: Path, config: Path, state_dir: Path
) -> None:
    daemon = DaemonProcess(config, tmp_path).start().wait_ready()
    result = run_cli("stop", config=config)
    assert result.returncode == 0, result.stderr
    assert f"pid {daemon.pid}" in result.stdout
    assert daemon.wait_exit() == 0
    assert not (state_dir / "conduitd.sock").exists()


def test_sigterm_stops_gracefully_with_exit_0(tmp_path: Path, config: Path) -> None:
    daemon = DaemonProcess(config, tmp_path).start().wait_ready()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.logged("daemon_stopping")
    assert daemon.logged("daemon_stopped")


def test_reload_and_stop_without_a_daemon_exit_3(config: Path) -> None:
    for command in ("reload", "stop"):
        result = run_cli(command, config=config)
        assert result.returncode == 3, command
        assert "no daemon running" in result.stderr


def test_sigusr1_runs_every_enabled_conduit(tmp_path: Path, state_dir: Path) -> None:
    disabled = {**conduit(tmp_path, "off"), "enabled": False}
    config = write_config(
        tmp_path / "conduitd.toml",
        state_dir,
        [conduit(tmp_path, "a"), conduit(tmp_path, "b"), disabled],
    )
    for name in ("a", "b", "off"):
        (tmp_path / f"{name}-src" / "file.txt").write_text(name)
    with running_daemon(config, tmp_path) as daemon:
        daemon.signal(signal.SIGUSR1)
        for name in ("a", "b"):
            daemon.wait_logged("generation_finished", conduit=name)
            assert (tmp_path / f"{name}-dst" / "file.txt").read_text() == name
        daemon.wait_logged("sync_all_requested")
        requested = [e for e in daemon.events() if e["event"] == "sync_all_requested"]
        assert requested[0]["conduits"] == ["a", "b"]
        assert not (tmp_path / "off-dst" / "file.txt").exists()


def test_sigusr2_logs_a_status_dump(tmp_path: Path, config: Path) -> None:
    with running_daemon(config, tmp_path) as daemon:
        daemon.signal(signal.SIGUSR2)
        daemon.wait_logged("status_dump")
        [dump] = [e for e in daemon.events() if e["event"] == "status_dump"]
        assert dump["status"]["conduits"][0]["name"] == "photos"


def test_a_conduit_whose_source_vanished_is_reported_while_others_sync(
    tmp_path: Path, state_dir: Path
) -> None:
    config = write_config(
        tmp_path / "conduitd.toml",
        state_dir,
        [conduit(tmp_path, "gone"), conduit(tmp_path, "fine", "instant")],
    )
    with running_daemon(config, tmp_path) as daemon:
        shutil.rmtree(tmp_path / "gone-src")
        with pytest.raises(ConduitdError, match="source") as refused:
            call(state_dir, "sync", {"name": "gone"})
        assert refused.value.exit_code == 3
        wait_for(
            lambda: _conduit_status(config, "gone")["last_error"] is not None,
            "last_error in status",
        )
        (tmp_path / "fine-src" / "new.txt").write_text("still syncing")
        wait_for(
            lambda: (tmp_path / "fine-dst" / "new.txt").exists(),
            "the healthy conduit to keep syncing",
        )
        assert daemon.process is not None
        assert daemon.process.poll() is None


def _conduit_status(config: Path, name: str) -> dict[str, object]:
    conduits = status_json(config)["conduits"]
    assert isinstance(conduits, list)
    [found] = [c for c in conduits if c["name"] == name]
    assert isinstance(found, dict)
    return found


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, config: Path) -> None:
    import socket

    address = os.fspath(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(address)
        receiver.settimeout(20)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
        daemon = DaemonProcess(config, tmp_path, env).start()
        try:
            seen: list[str] = []

            def receive_until(state: str) -> None:
                while not any(state in m.splitlines() for m in seen):
                    seen.append(receiver.recv(4096).decode())

            receive_until("READY=1")
            receive_until("WATCHDOG=1")
            # Until READY (the first scans), startup time is extended.
            assert any("EXTEND_TIMEOUT_USEC=" in m for m in seen)
            daemon.signal(signal.SIGTERM)
            receive_until("STOPPING=1")
            assert daemon.wait_exit() == 0
        finally:
            daemon.kill()
    ready = next(m for m in seen if "READY=1" in m)
    assert "STATUS=" in ready


def test_reload_restarts_only_conduits_whose_identity_changed(
    tmp_path: Path, state_dir: Path
) -> None:
    config = write_config(
        tmp_path / "conduitd.toml",
        state_dir,
        [conduit(tmp_path, "a"), conduit(tmp_path, "b"), conduit(tmp_path, "c")],
    )
    with running_daemon(config, tmp_path):
        moved = {**conduit(tmp_path, "b"), "target": str(tmp_path / "b-elsewhere")}
        (tmp_path / "b-elsewhere").mkdir()
        rescheduled = conduit(tmp_path, "c", "cron:0 3 * * *")
        write_config(config, state_dir, [conduit(tmp_path, "a"), moved, rescheduled])
        result = call(state_dir, "reload")
        assert isinstance(result, dict)
        assert result["changed"] == ["b", "c"]
        assert result["restarted"] == ["b"]
        assert result["unchanged"] == ["a"]
        conduits = status_json(config)["conduits"]
        assert isinstance(conduits, list)
        assert conduits[2]["next_run"] is not None


def test_pause_and_resume_through_the_socket(
    tmp_path: Path, config: Path, state_dir: Path
) -> None:
    with running_daemon(config, tmp_path):
        assert call(state_dir, "pause", {"name": "photos"}) == {"paused": ["photos"]}
        assert status_json(config)["conduits"][0]["paused"] is True  # type: ignore[index]
        with pytest.raises(ConduitdError, match="paused") as refused:
            call(state_dir, "sync", {"name": "photos"})
        assert refused.value.exit_code == 3
        assert call(state_dir, "resume", {"all": True}) == {"resumed": ["photos"]}
        assert status_json(config)["conduits"][0]["paused"] is False  # type: ignore[index]
        with pytest.raises(ConduitdError, match="no conduit named"):
            call(state_dir, "pause", {"name": "nope"})


def test_a_change_in_an_instant_source_triggers_its_conduit(
    tmp_path: Path, state_dir: Path
) -> None:
    config = write_config(
        tmp_path / "conduitd.toml",
        state_dir,
        [conduit(tmp_path, "live", "instant")],
        log_level="debug",
    )
    with running_daemon(config, tmp_path) as daemon:
        (tmp_path / "live-src" / "new.txt").write_text("hello")

        def triggered_by_changes() -> bool:
            return any(
                e["event"] == "conduit_run_started" and "changes" in e["reasons"]
                for e in daemon.events()
            )

        wait_for(triggered_by_changes, "a run triggered by the new file")
