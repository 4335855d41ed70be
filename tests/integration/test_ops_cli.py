"""Issue 9 through the real command line, without a daemon: status --check, the
on_error hook, pause/resume, name completion, the free-space guard on a small
filesystem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import conduitd_env, run_cli, write_config

HOOK = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    return source, target


def config_for(tmp_path: Path, roots: tuple[Path, Path], **extra: object) -> Path:
    source, target = roots
    conduit = {"name": "photos", "source": source, "target": target, **extra}
    return write_config(tmp_path / "conduitd.toml", tmp_path / "state", [conduit])


def test_status_check_and_on_error_hook_after_a_refused_run(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    source, target = roots
    report = tmp_path / "hook.json"
    config = config_for(
        tmp_path, roots, on_error=[sys.executable, "-c", HOOK, str(report)]
    )
    (source / "a.txt").write_text("a")
    synced = run_cli("sync", "photos", config=config)
    assert synced.returncode == 0, synced.stderr
    healthy = run_cli("status", "--check", config=config)
    assert (healthy.returncode, healthy.stdout) == (0, "ok\n")
    assert not report.exists()  # the hook runs only when a run fails

    # An empty source facing a full target is refused (exit 3): the hook runs.
    (source / "a.txt").unlink()
    refused = run_cli("sync", "photos", config=config)
    assert refused.returncode == 3, refused.stderr
    summary = json.loads(report.read_text())
    assert summary["conduit"] == "photos"
    assert summary["outcome"] == "refused"
    assert "empty source" in summary["error"]

    check = run_cli("status", "--check", config=config)
    assert check.returncode == 1
    assert check.stdout.startswith("photos: last run failed: refused:")
    as_json = run_cli("status", "--check", "--json", config=config)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["unhealthy"][0]["conduit"] == "photos"
    assert (target / "a.txt").exists()


def test_status_check_flags_an_interval_conduit_no_daemon_runs(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    config = config_for(tmp_path, roots, schedule="interval:5m")
    check = run_cli("status", "--check", config=config)
    assert check.returncode == 1
    assert "no daemon is running" in check.stdout
    paused = run_cli("pause", "photos", config=config)
    assert (paused.returncode, paused.stdout) == (0, "paused: photos\n")
    assert run_cli("status", "--check", config=config).returncode == 0


def test_pause_and_resume_without_a_daemon(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    source, target = roots
    config = config_for(tmp_path, roots)
    (source / "a.txt").write_text("a")
    assert run_cli("pause", "--all", config=config).returncode == 0
    refused = run_cli("sync", "photos", "--json", config=config)
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["error"]["kind"] == "paused"
    assert not (target / "a.txt").exists()
    assert run_cli("resume", "photos", config=config).stdout == "resumed: photos\n"
    assert run_cli("sync", "photos", config=config).returncode == 0
    assert (target / "a.txt").read_text() == "a"
    assert run_cli("pause", config=config).returncode == 2  # neither NAME nor --all


def test_trash_list_json_and_restore_from_the_command_line(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    source, _ = roots
    config = config_for(tmp_path, roots)
    (source / "keep.txt").write_text("k")
    (source / "cat.jpg").write_text("meow")
    assert run_cli("sync", "photos", config=config).returncode == 0
    (source / "cat.jpg").unlink()
    assert run_cli("sync", "photos", config=config).returncode == 0
    listed = run_cli("trash", "list", "photos", "--json", config=config)
    [row] = json.loads(listed.stdout)
    assert (row["path"], row["reason"], row["root"]) == ("cat.jpg", "deleted", "target")
    restored = run_cli("restore", "photos", "cat.jpg", config=config)
    assert restored.returncode == 0, restored.stderr
    assert (source / "cat.jpg").read_text() == "meow"
    missing = run_cli("restore", "photos", "dog.jpg", config=config)
    assert missing.returncode == 1
    assert "no trashed version" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_conduit_names_complete_from_the_config(tmp_path: Path, shell: str) -> None:
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            {"name": "photos", "source": "/a", "target": "/b"},
            {"name": "phones", "source": "/c", "target": "/d"},
            {"name": "music", "source": "/e", "target": "/f"},
        ],
    )
    words = f"conduitd --config {config} restore ph"
    env = {
        "_CONDUITD_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": "ph" if shell == "fish" else "4",
    }
    result = subprocess.run(
        [sys.executable, "-m", "conduitd"],
        env=conduitd_env(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "photos" in result.stdout
    assert "phones" in result.stdout
    assert "music" not in result.stdout
    # The scripts themselves: tests/integration/test_cli_basics.py.


def _tmpfs_allowed(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    tried = subprocess.run(
        ["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return tried.returncode == 0


_GUARD_SCRIPT = """
mount -t tmpfs -o size=4m tmpfs "$TARGET" || exit 99
"$PY" -m conduitd --config "$CONFIG" sync photos >/dev/null; echo "first=$?"
head -c 2097152 /dev/urandom > "$SOURCE/second.bin"
"$PY" -m conduitd --config "$CONFIG" sync photos --dry-run --json; echo "dry=$?"
"$PY" -m conduitd --config "$CONFIG" sync photos >/dev/null; echo "second=$?"
ls -A "$TARGET"
"""


def test_free_space_guard_on_a_small_tmpfs_target(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    if not _tmpfs_allowed(tmp_path):
        pytest.skip("no tmpfs in a user namespace here (unshare -Urm)")
    source, target = roots
    config = config_for(tmp_path, roots, min_free="1M")
    (source / "first.bin").write_bytes(os.urandom(2 << 20))
    env = {
        "PY": sys.executable,
        "CONFIG": str(config),
        "SOURCE": str(source),
        "TARGET": str(target),
    }
    result = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", _GUARD_SCRIPT],
        env=conduitd_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # 4 MiB: 2 MiB to write plus 1 MiB to keep fits; a second 2 MiB does not.
    # The dry run says so too (its plan, refused; exit 3 as the run would).
    lines = result.stdout.splitlines()
    assert lines[0] == "first=0", result.stderr
    plan = json.loads(lines[1])
    assert "not enough free space" in plan["refused"]
    assert [op["path"] for op in plan["operations"]] == ["second.bin"]
    assert lines[2:4] == ["dry=3", "second=3"], result.stderr
    assert sorted(lines[4:]) == [".conduitd", "first.bin"]  # nothing else written
    assert "not enough free space" in result.stderr
    status = json.loads(run_cli("status", "--json", config=config).stdout)
    assert "not enough free space" in status["conduits"][0]["last_error"]
