"""A real daemon syncing real trees: instant, interval, manual, signals, restarts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from conduitd.client import call
from helpers.cli import run_cli, write_config
from helpers.daemon import DaemonProcess, running_daemon, wait_for


def _conduit(tmp_path: Path, name: str, **settings: object) -> dict[str, object]:
    for side in ("src", "dst"):
        (tmp_path / f"{name}-{side}").mkdir(exist_ok=True)
    return {
        "name": name,
        "source": str(tmp_path / f"{name}-src"),
        "target": str(tmp_path / f"{name}-dst"),
        **settings,
    }


def _generations(config: Path, name: str) -> list[dict[str, object]]:
    result = run_cli("history", name, "--json", config=config)
    assert result.returncode == 0, result.stderr
    history = json.loads(result.stdout)
    assert isinstance(history, list)
    return history


def test_instant_conduit_propagates_create_edit_and_delete(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [_conduit(tmp_path, "m", schedule="instant")],
    )
    src, dst = tmp_path / "m-src", tmp_path / "m-dst"
    # Deleting a source's last file would meet the empty-source brake.
    (src / "keep.txt").write_text("keep")
    with running_daemon(config, tmp_path):
        (src / "note.txt").write_text("first")
        wait_for(lambda: _read(dst / "note.txt") == "first", "the new file")
        (src / "note.txt").write_text("second version")
        wait_for(lambda: _read(dst / "note.txt") == "second version", "the edit")
        (src / "note.txt").unlink()
        wait_for(lambda: not (dst / "note.txt").exists(), "the delete")
    trashed = sorted(
        p.read_text() for p in (dst / ".conduitd" / "trash").rglob("note*")
    )
    assert trashed == ["first", "second version"]


def test_own_writes_never_retrigger_a_mirror_conduit(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            _conduit(tmp_path, "m", schedule="instant"),
            _conduit(tmp_path, "probe", schedule="instant"),
        ],
    )
    with running_daemon(config, tmp_path) as daemon:
        for i in range(5):
            (tmp_path / "m-src" / f"f{i}").write_text(str(i))
        wait_for(lambda: (tmp_path / "m-dst" / "f4").exists(), "the burst")
        daemon.wait_logged("generation_finished", conduit="m")
        settled = len(_generations(config, "m"))
        # A later run of another conduit proves the daemon had time to see the
        # events of m's own writes; none of them may have started a run of m.
        (tmp_path / "probe-src" / "x").write_text("x")
        wait_for(lambda: (tmp_path / "probe-dst" / "x").exists(), "the probe")
        daemon.wait_logged("generation_finished", conduit="probe")
        assert len(_generations(config, "m")) == settled


def test_interval_conduit_runs_on_its_schedule(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [_conduit(tmp_path, "tick", schedule="interval:1s")],
    )
    with running_daemon(config, tmp_path):
        (tmp_path / "tick-src" / "later.txt").write_text("scheduled")
        wait_for(
            lambda: _read(tmp_path / "tick-dst" / "later.txt") == "scheduled",
            "the scheduled run",
        )


def test_manual_conduit_runs_only_on_request(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            _conduit(tmp_path, "hand"),
            _conduit(tmp_path, "probe", schedule="instant"),
        ],
    )
    state = tmp_path / "state"
    with running_daemon(config, tmp_path) as daemon:
        (tmp_path / "hand-src" / "wait.txt").write_text("for me")
        (tmp_path / "probe-src" / "x").write_text("x")
        wait_for(lambda: (tmp_path / "probe-dst" / "x").exists(), "the probe")
        daemon.wait_logged("generation_finished", conduit="probe")
        assert not (tmp_path / "hand-dst" / "wait.txt").exists()
        result = call(state, "sync", {"name": "hand"})
        assert isinstance(result, dict)
        assert result["files_copied"] == 1
        assert (tmp_path / "hand-dst" / "wait.txt").read_text() == "for me"


def test_sigterm_mid_copy_leaves_no_partial_file_and_restart_converges(
    tmp_path: Path,
) -> None:
    slow = _conduit(tmp_path, "big", bandwidth_limit_mbps=8)
    config = write_config(
        tmp_path / "c.toml", tmp_path / "state", [slow], shutdown_timeout="5s"
    )
    payload = os.urandom(8 << 20)
    (tmp_path / "big-src" / "large.bin").write_bytes(payload)
    daemon = DaemonProcess(config, tmp_path).start().wait_ready()
    try:
        tmp_dir = tmp_path / "big-dst" / ".conduitd" / "tmp"
        threading.Thread(
            target=lambda: run_cli("sync", "big", config=config, timeout=120),
            daemon=True,
        ).start()
        wait_for(
            lambda: tmp_dir.is_dir() and any(tmp_dir.iterdir()),
            "the copy to start",
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout_s=30) == 0
    finally:
        daemon.kill()
    assert not (tmp_path / "big-dst" / "large.bin").exists()
    assert list(tmp_dir.iterdir()) == []
    [interrupted] = _generations(config, "big")
    assert interrupted["verification_status"] == "failed:interrupted"
    fast = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [{**slow, "bandwidth_limit_mbps": 0, "schedule": "instant"}],
    )
    with running_daemon(fast, tmp_path):
        wait_for(
            lambda: _read_bytes(tmp_path / "big-dst" / "large.bin") == payload,
            "the start-up catch-up to converge",
        )


def test_bidirectional_conduit_has_no_ping_pong(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            _conduit(tmp_path, "two", schedule="instant", mode="bidirectional"),
            _conduit(tmp_path, "probe", schedule="instant"),
        ],
    )
    with running_daemon(config, tmp_path) as daemon:
        (tmp_path / "two-src" / "a.txt").write_text("from source")
        wait_for(lambda: _read(tmp_path / "two-dst" / "a.txt") == "from source", "a")
        (tmp_path / "two-dst" / "b.txt").write_text("from target")
        wait_for(lambda: _read(tmp_path / "two-src" / "b.txt") == "from target", "b")
        daemon.wait_logged("generation_finished", conduit="two")
        settled = len(_generations(config, "two"))
        (tmp_path / "probe-src" / "x").write_text("x")
        wait_for(lambda: (tmp_path / "probe-dst" / "x").exists(), "the probe")
        daemon.wait_logged("generation_finished", conduit="probe")
        assert len(_generations(config, "two")) == settled


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def test_sync_right_after_a_change_takes_the_change(tmp_path: Path) -> None:
    """`conduitd sync` returns only once what changed before the call is
    synced, even when the watchers have not reported it yet (issue 5 bench:
    such a call came back `verified` with nothing copied)."""
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            _conduit(tmp_path, "hand"),
            _conduit(tmp_path, "both", mode="bidirectional"),
        ],
    )
    for i in range(20):
        (tmp_path / "hand-src" / f"f{i:02d}").write_text(f"v0 {i}")
        (tmp_path / "both-src" / f"f{i:02d}").write_text(f"v0 {i}")
    with running_daemon(config, tmp_path):
        for name in ("hand", "both"):
            assert run_cli("sync", name, config=config).returncode == 0
        for rounds in range(3):
            for i in range(rounds, 20, 3):
                (tmp_path / "hand-src" / f"f{i:02d}").write_text(f"v{rounds + 1} {i}")
                (tmp_path / "both-dst" / f"f{i:02d}").write_text(f"v{rounds + 1} {i}")
            for name, side in (("hand", "src"), ("both", "dst")):
                done = run_cli("sync", name, "--json", config=config)  # at once
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout)["verification_status"] == "verified"
                other = "dst" if side == "src" else "src"
                for path in sorted((tmp_path / f"{name}-{side}").iterdir()):
                    twin = tmp_path / f"{name}-{other}" / path.name
                    if path.name != ".conduitd":
                        assert twin.read_text() == path.read_text(), (name, path)


def test_a_daemon_creates_a_missing_target_on_the_first_run(tmp_path: Path) -> None:
    """Started before the target exists (a new conduit), the daemon finds it
    missing; the first run creates it (DESIGN.md Safety), as a one-shot run
    does, instead of refusing it as unmounted until the next backoff."""
    conduit = _conduit(tmp_path, "m")
    (tmp_path / "m-dst").rmdir()
    (tmp_path / "m-src" / "a.txt").write_text("a")
    config = write_config(tmp_path / "c.toml", tmp_path / "state", [conduit])
    with running_daemon(config, tmp_path) as daemon:
        daemon.wait_logged("location_unmounted")
        result = run_cli("sync", "m", "--json", config=config)
        assert result.returncode == 0, result.stderr + result.stdout
        assert json.loads(result.stdout)["files_copied"] == 1
        assert (tmp_path / "m-dst" / "a.txt").read_text() == "a"
        # Watched from then on: the next run sees a new file at once.
        (tmp_path / "m-src" / "b.txt").write_text("b")
        result = run_cli("sync", "m", "--json", config=config)
        assert result.returncode == 0, result.stderr + result.stdout
        assert (tmp_path / "m-dst" / "b.txt").read_text() == "b"


def test_a_daemon_never_creates_a_target_after_the_first_run(tmp_path: Path) -> None:
    """A target that vanishes after a conduit has run is taken for an
    unmounted disk: refused, never created again."""
    conduit = _conduit(tmp_path, "m")
    (tmp_path / "m-src" / "a.txt").write_text("a")
    config = write_config(tmp_path / "c.toml", tmp_path / "state", [conduit])
    assert run_cli("sync", "m", config=config).returncode == 0
    shutil.rmtree(tmp_path / "m-dst")
    with running_daemon(config, tmp_path):
        result = run_cli("sync", "m", "--json", config=config)
        assert result.returncode == 3, result.stdout
        assert not (tmp_path / "m-dst").exists()


def test_a_restore_asked_during_a_run_waits_for_the_run_to_end(
    tmp_path: Path,
) -> None:
    """A restore (and a trash purge) holds the conduit's writer slot, as a run
    and a resolve do: it never writes a root or its trash while a run does."""
    slow = _conduit(tmp_path, "m", bandwidth_limit_mbps=8)  # 1 MB/s
    src, dst = tmp_path / "m-src", tmp_path / "m-dst"
    config = write_config(tmp_path / "c.toml", tmp_path / "state", [slow])
    (src / "a.txt").write_text("one")
    assert run_cli("sync", "m", config=config).returncode == 0
    (src / "a.txt").write_text("two")  # "one" goes to the target's trash
    assert run_cli("sync", "m", config=config).returncode == 0
    (src / "large.bin").write_bytes(os.urandom(3 << 20))  # ~3 s at 1 MB/s
    state = tmp_path / "state"
    with running_daemon(config, tmp_path) as daemon:
        run = threading.Thread(target=lambda: call(state, "sync", {"name": "m"}))
        run.start()
        tmp_dir = dst / ".conduitd" / "tmp"
        wait_for(lambda: tmp_dir.is_dir() and any(tmp_dir.iterdir()), "the copy")
        restored = call(
            state, "restore", {"name": "m", "path": "a.txt", "to": str(tmp_path / "a")}
        )
        # The run had finished (its file in place) before the restore wrote.
        assert (dst / "large.bin").exists()
        run.join(timeout=30)
        assert isinstance(restored, dict)
        assert (tmp_path / "a").read_text() == "one"
        assert daemon.logged("generation_finished", conduit="m")


def test_on_error_runs_in_the_daemon_when_an_automatic_run_fails(
    tmp_path: Path,
) -> None:
    """The hook of an instant conduit whose run is refused by the daemon
    itself (no CLI involved) gets the JSON summary on stdin."""
    report = tmp_path / "hook.json"
    hook = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"
    conduit = _conduit(
        tmp_path,
        "m",
        schedule="instant",
        on_error=[sys.executable, "-c", hook, str(report)],
    )
    src, dst = tmp_path / "m-src", tmp_path / "m-dst"
    (src / "a.txt").write_text("a")
    config = write_config(tmp_path / "c.toml", tmp_path / "state", [conduit])
    assert run_cli("sync", "m", config=config).returncode == 0
    with running_daemon(config, tmp_path):
        (src / "a.txt").unlink()  # an empty source facing a full target
        wait_for(report.exists, "the on_error hook")
        wait_for(lambda: report.read_text().endswith("}"), "the whole summary")
    summary = json.loads(report.read_text())
    assert (summary["conduit"], summary["outcome"]) == ("m", "refused")
    assert "empty source" in summary["error"]
    assert (dst / "a.txt").read_text() == "a"
