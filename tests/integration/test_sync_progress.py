"""`conduitd sync --progress`: a rich bar on stderr, stdout left alone.

Real trees, a real `conduitd` process, and for the live bar a real
pseudo-terminal and a real SIGINT. When stderr is not a terminal, rich draws
nothing live and prints the bar's final state once when it stops: those
tests read that line.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cli import conduitd_env, run_cli, run_cli_recording_modules, write_config
from helpers.daemon import running_daemon
from helpers.mirror import Mirror, listing, make_mirror, write

# rich reads these: a pipe stays a pipe (even where CI sets FORCE_COLOR), and
# the final line is wide enough that no counter is cut.
NOT_A_TERMINAL = {"TTY_COMPATIBLE": "0", "COLUMNS": "120"}
A_TERMINAL = {"TTY_COMPATIBLE": "1", "COLUMNS": "120", "TERM": "xterm"}
BODIES = {"a.txt": b"alpha", "d/b.txt": b"bravo!", "d/e/c.bin": bytes(range(256)) * 3}
BODY_BYTES = sum(map(len, BODIES.values()))  # 779: under 1 kB, so rich counts bytes


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    m = make_mirror(tmp_path)
    for rel, body in BODIES.items():
        write(m.source / rel, body)
    return m


def sync_with_progress(
    mirror: Mirror, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "sync",
        mirror.name,
        "--progress",
        *flags,
        config=mirror.config,
        env={**NOT_A_TERMINAL, **(env or {})},
    )


def for_a_daemon(mirror: Mirror) -> Mirror:
    """The same conduit, logged at info: the daemon helper waits for
    `daemon_ready`; its target exists, as a daemon's endpoints do."""
    mirror.target.mkdir(exist_ok=True)
    conduit = {"name": mirror.name, "source": str(mirror.source)}
    conduit |= {"target": str(mirror.target), "mode": "mirror", "min_free": "1%"}
    write_config(mirror.config, mirror.state_dir, [conduit], log_level="info")
    return mirror


def bar_line(stderr: str, name: str) -> str:
    """The bar's final state: the one stderr line that starts with its name."""
    lines = [line for line in stderr.splitlines() if line.startswith(f"{name} ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_progress_with_json_keeps_one_document_on_stdout_and_the_bar_on_stderr(
    mirror: Mirror,
) -> None:
    run = sync_with_progress(mirror, "--json")

    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    document = json.loads(run.stdout)
    assert document["verification_status"] == "verified"
    assert document["bytes_transferred"] == BODY_BYTES
    assert listing(mirror.target) == listing(mirror.source)
    # 2 directories and 3 files: one job each. No ANSI codes on a pipe.
    line = bar_line(run.stderr, "m")
    assert line.startswith("m gen 1 ")
    assert "5/5 files" in line
    assert f"{BODY_BYTES}/{BODY_BYTES} bytes" in line
    assert "\x1b[" not in run.stderr


def test_progress_without_json_prints_the_usual_line_on_stdout(
    mirror: Mirror,
) -> None:
    run = sync_with_progress(mirror)

    assert run.returncode == 0, run.stderr
    [summary] = run.stdout.splitlines()
    assert "verified" in summary
    assert "copied 3" in summary
    assert "5/5 files" in bar_line(run.stderr, "m")


def test_progress_of_a_run_with_nothing_to_do_shows_a_finished_bar(
    mirror: Mirror,
) -> None:
    assert sync_with_progress(mirror).returncode == 0

    run = sync_with_progress(mirror, "--json")

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["generation"] == 2
    line = bar_line(run.stderr, "m")
    assert line.startswith("m gen 2 ")
    assert "0/0 files" in line
    assert "0/0 bytes" in line


def test_progress_leaves_no_bar_behind_when_the_run_is_refused(
    mirror: Mirror,
) -> None:
    mirror.rewrite(enabled=False)

    run = sync_with_progress(mirror, "--json")

    assert run.returncode == 3
    assert json.loads(run.stdout)["error"]["kind"] == "disabled"
    assert not [line for line in run.stderr.splitlines() if line.startswith("m ")]


def test_progress_through_a_running_daemon_is_fed_by_its_events(
    mirror: Mirror, tmp_path: Path
) -> None:
    with running_daemon(for_a_daemon(mirror).config, tmp_path) as daemon:
        run = sync_with_progress(mirror, "--json")

        assert run.returncode == 0, run.stderr
        document = json.loads(run.stdout)
        assert document["verification_status"] == "verified"
        # The daemon ran it (a one-shot run would have met its lock).
        assert daemon.logged("generation_finished", conduit="m")
    assert listing(mirror.target) == listing(mirror.source)
    # Without its progress events the bar would end at 0/0.
    line = bar_line(run.stderr, "m")
    assert line.startswith("m gen 1 ")
    assert "5/5 files" in line
    assert f"{BODY_BYTES}/{BODY_BYTES} bytes" in line


@pytest.mark.parametrize("flags", [(), ("--progress",)])
def test_sync_through_a_daemon_imports_rich_only_for_progress(
    mirror: Mirror, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    args = ["--config", str(mirror.config), "sync", "m", "--json", *flags]
    with running_daemon(for_a_daemon(mirror).config, tmp_path):
        result, modules = run_cli_recording_modules(
            args, tmp_path / "modules.json", NOT_A_TERMINAL
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verification_status"] == "verified"
    top_level = {m.partition(".")[0] for m in modules}
    assert "conduitd" in top_level  # the check itself saw the CLI's modules
    # The client path stays light either way (DESIGN.md Layout).
    assert top_level & {"anyio", "structlog", "aiosqlite", "pydantic"} == set()
    assert ("rich" in top_level) == bool(flags)


def test_ctrl_c_stops_the_live_bar_and_gives_the_cursor_back(tmp_path: Path) -> None:
    # ~1 Mbit/s: the 2 MB file takes some 16 s, long enough to interrupt.
    mirror = make_mirror(tmp_path, bandwidth_limit_mbps=1)
    write(mirror.source / "d" / "small.txt", b"first")
    write(mirror.source / "zz-big.bin", os.urandom(2 << 20))
    terminal = Pty()
    args = ["--config", str(mirror.config), "sync", "m", "--progress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "conduitd", *args],
        env=conduitd_env(A_TERMINAL),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal.slave,
    )
    try:
        terminal.close_slave()
        # Drawn live (frames rewrite the line), and the run is under way.
        terminal.read_until(b"m gen 1 ")
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    drawn = terminal.read_until_closed()

    assert process.returncode == 130  # interrupted, not "paths failed" (1)
    assert stdout == b""
    assert drawn.count(b"\x1b[2K") >= 2  # more than one frame, in place
    hidden, shown = drawn.find(b"\x1b[?25l"), drawn.rfind(b"\x1b[?25h")
    assert 0 <= hidden < shown, drawn[-400:]
    assert b"Traceback" not in drawn
    assert not (mirror.target / "zz-big.bin").exists()
    history = json.loads(run_cli("history", "m", "--json", config=mirror.config).stdout)
    assert [g["verification_status"] for g in history] == ["failed:interrupted"]


class Pty:
    """A pseudo-terminal for a child's stderr; we read what it draws."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.drawn = b""

    def close_slave(self) -> None:
        os.close(self.slave)

    def read_until(self, wanted: bytes, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while wanted not in self.drawn:
            if time.monotonic() > deadline:
                raise AssertionError(f"{wanted!r} never drawn: {self.drawn[-400:]!r}")
            if not self._read(0.1):
                raise AssertionError(f"closed before {wanted!r}: {self.drawn!r}")

    def read_until_closed(self, timeout_s: float = 10) -> bytes:
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and self._read(0.1):
                pass
        finally:
            os.close(self.master)
        return self.drawn

    def _read(self, wait_s: float) -> bool:
        """Read what is there; False once every writer closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], wait_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 1 << 16)
        except OSError:  # EIO: the child, the last writer, exited
            return False
        self.drawn += chunk
        return bool(chunk)
