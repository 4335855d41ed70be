"""Run the real `conduitd` for the crash suite: one-shot syncs, crash settings."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from helpers.cli import SRC

CRASH_EXIT = 137
CRASH_ENV = ("CONDUITD_CRASH_AT", "CONDUITD_FAIL_AT")
FORKSERVER = Path(__file__).with_name("forkserver.py")


def trials_per_case(default: int) -> int:
    """`CONDUITD_CRASH_TRIALS` scales the suite (seeds per hook and mode)."""
    raw = os.environ.get("CONDUITD_CRASH_TRIALS", "")
    return max(1, int(raw)) if raw.isdigit() else default


def base_seed() -> int:
    """`CONDUITD_CRASH_SEED` picks other random trees (the default is fixed)."""
    raw = os.environ.get("CONDUITD_CRASH_SEED", "")
    return int(raw) if raw.isdigit() else 8


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without crash settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in CRASH_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def conduitd_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "conduitd", "--config", str(config), *args]


def sync(
    config: Path,
    name: str,
    *,
    crash_at: str | None = None,
    fail_at: str | None = None,
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`conduitd sync NAME --json` in a fresh process, maybe set up to crash."""
    extra = {}
    if crash_at:
        extra["CONDUITD_CRASH_AT"] = crash_at
    if fail_at:
        extra["CONDUITD_FAIL_AT"] = fail_at
    argv = ["--config", str(config), "sync", name, "--json"]
    if os.environ.get("CONDUITD_CRASH_COLD") == "1":
        return subprocess.run(
            [sys.executable, "-m", "conduitd", *argv],
            env=child_env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    return _run_forked(argv, child_env(**extra), timeout_s)


class ForkServer:
    """One `forkserver.py` process; runs one command at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(FORKSERVER)],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.scratch = Path(tempfile.mkdtemp(prefix="conduitd-forkserver-"))

    def run(
        self, argv: list[str], env: dict[str, str], timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        out, err = self.scratch / "stdout", self.scratch / "stderr"
        request = {"argv": argv, "env": env, "stdout": str(out), "stderr": str(err)}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        child = self._reply(timeout_s)["pid"]
        try:
            code = self._reply(timeout_s)["rc"]
        except TimeoutError:
            os.kill(child, signal.SIGKILL)  # the child this request forked
            raise
        return subprocess.CompletedProcess(
            argv, code, out.read_text(errors="replace"), err.read_text(errors="replace")
        )

    def _reply(self, timeout_s: float) -> dict[str, int]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError(f"no reply from the fork server in {timeout_s} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        reply: dict[str, int] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        for name in ("stdout", "stderr"):
            (self.scratch / name).unlink(missing_ok=True)
        self.scratch.rmdir()


_idle: list[ForkServer] = []
_servers: list[ForkServer] = []
_servers_lock = threading.Lock()


def _run_forked(
    argv: list[str], env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run on an idle fork server (started when none is idle), then free it."""
    with _servers_lock:
        server = _idle.pop() if _idle else None
    if server is None or server.process.poll() is not None:
        server = ForkServer()
        with _servers_lock:
            _servers.append(server)
    try:
        result = server.run(argv, env, timeout_s)
    except BaseException:
        server.process.kill()  # out of step with its replies: never reused
        raise
    with _servers_lock:
        _idle.append(server)
    return result


def close_servers() -> None:
    """Stop every fork server (the end of the session)."""
    with _servers_lock:
        servers, _servers[:], _idle[:] = list(_servers), [], []
    for server in servers:
        server.close()


def document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON document a `--json` command printed ({} when none)."""
    try:
        found = json.loads(result.stdout)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}: {result.stdout[-500:]} {result.stderr[-1500:]}"
