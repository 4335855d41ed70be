"""Issue 9 through a running daemon: trash list, restore and purge over the
socket, pause/resume persisted across a restart, resume's catch-up run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conduitd.client import call
from helpers.cli import run_cli, write_config
from helpers.daemon import running_daemon, wait_for


def make_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    config = write_config(
        tmp_path / "conduitd.toml",
        tmp_path / "state",
        [{"name": "photos", "source": source, "target": target}],
        log_level="debug",
        shutdown_timeout="10s",
    )
    return config, source, target


def sync_until(state_dir: Path, done: Callable[[], bool]) -> None:
    """Sync through the daemon until `done()`: a run resolves from the index,
    which learns of a change only once the watcher reported it."""

    def synced() -> bool:
        call(state_dir, "sync", {"name": "photos"})
        return done()

    wait_for(synced, "a run that saw the change")


def test_restore_through_a_running_daemon(tmp_path: Path) -> None:
    config, source, target = make_config(tmp_path)
    state_dir = tmp_path / "state"
    (source / "keep.txt").write_text("k")
    (source / "cat.jpg").write_text("meow")
    with running_daemon(config, tmp_path) as daemon:
        assert run_cli("sync", "photos", config=config).returncode == 0
        (source / "cat.jpg").unlink()
        sync_until(state_dir, lambda: not (target / "cat.jpg").exists())

        listed = run_cli("trash", "list", "photos", "--json", config=config)
        [row] = json.loads(listed.stdout)
        assert (row["path"], row["reason"], row["root"]) == (
            "cat.jpg",
            "deleted",
            "target",
        )
        restored = run_cli("restore", "photos", "cat.jpg", config=config)
        assert restored.returncode == 0, restored.stderr
        assert (source / "cat.jpg").read_text() == "meow"
        assert daemon.logged("version_restored", conduit="photos")
        # The lock is the daemon's: the CLI went through the socket.
        assert call(state_dir, "trash_list", {"name": "photos"}) == [row]

        purged = call(state_dir, "trash_purge", {"name": "photos", "older_than_s": 0})
        assert purged == {
            "conduit": "photos",
            "pruned": 0,  # the last copy of a vanished path is kept...
            "pruned_bytes": 0,
            "kept": 1,
            "kept_bytes": 4,
            "failed": 0,
        }
        sync_until(state_dir, (target / "cat.jpg").exists)
        assert (target / "cat.jpg").read_text() == "meow"
        # ...but once the path exists again, its old version may go.
        purged = call(state_dir, "trash_purge", {"name": "photos", "older_than_s": 0})
        assert purged["pruned"] == 1  # type: ignore[index]


def test_pause_survives_a_daemon_restart_and_resume_runs_once(
    tmp_path: Path,
) -> None:
    config, source, target = make_config(tmp_path)
    (source / "a.txt").write_text("a")
    with running_daemon(config, tmp_path):
        paused = run_cli("pause", "photos", config=config)
        assert (paused.returncode, paused.stdout) == (0, "paused: photos\n")
    with running_daemon(config, tmp_path) as daemon:
        status = json.loads(run_cli("status", "--json", config=config).stdout)
        assert status["daemon"] is not None
        assert status["conduits"][0]["paused"] is True
        refused = run_cli("sync", "photos", config=config)
        assert refused.returncode == 3
        assert "paused" in refused.stderr
        assert not (target / "a.txt").exists()

        assert run_cli("resume", "photos", config=config).returncode == 0
        daemon.wait_logged("generation_finished", conduit="photos")
        assert any(
            e["event"] == "conduit_run_started" and e["reasons"] == ["resume"]
            for e in daemon.events()
        )
        assert (target / "a.txt").read_text() == "a"
        status = json.loads(run_cli("status", "--json", config=config).stdout)
        assert status["conduits"][0]["paused"] is False
