"""Run a real `conduitd daemon` process for a test, and wait on what it logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers.cli import conduitd_env

DEFAULT_TIMEOUT_S = 20.0


def wait_for(
    condition: Callable[[], bool], what: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class DaemonProcess:
    """`python -m conduitd --config CONFIG daemon`, logs to a file in `workdir`."""

    def __init__(
        self, config: Path, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        self._env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        command = [sys.executable, "-m", "conduitd", "--config", str(self.config)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "daemon"],
                env=conduitd_env(self._env),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (a line being written is skipped)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def logged(self, event: str, **fields: object) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.events()
        )

    def wait_logged(
        self, event: str, timeout_s: float = DEFAULT_TIMEOUT_S, **fields: object
    ) -> None:
        def seen() -> bool:
            self._fail_if_exited(event)
            return self.logged(event, **fields)

        wait_for(seen, f"log event {event} {fields or ''}", timeout_s)

    def wait_ready(self) -> DaemonProcess:
        self.wait_logged("daemon_ready")
        return self

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEFAULT_TIMEOUT_S)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _fail_if_exited(self, waiting_for: str) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"daemon exited {code} while waiting for {waiting_for}:\n"
                + self.log_text()[-4000:]
            )


@contextmanager
def running_daemon(
    config: Path, workdir: Path, env: Mapping[str, str] | None = None
) -> Iterator[DaemonProcess]:
    """A ready daemon, stopped (SIGTERM, then SIGKILL) when the block ends."""
    daemon = DaemonProcess(config, workdir, env).start()
    try:
        yield daemon.wait_ready()
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.signal(signal.SIGTERM)
            try:
                daemon.wait_exit()
            except subprocess.TimeoutExpired:
                daemon.kill()


def request_lines(
    socket_path: Path, payload: bytes, timeout_s: float = 10
) -> list[dict[str, Any]]:
    """Send raw bytes on the control socket; return every JSON line until EOF
    or until one reply per request line arrived."""
    import socket

    expected = max(1, payload.count(b"\n"))
    replies: list[dict[str, Any]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(os.fspath(socket_path))
        sock.sendall(payload)
        buffer = b""
        while len(replies) < expected:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if "event" not in message:
                    replies.append(message)
    return replies
