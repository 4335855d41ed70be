"""The thin control-socket client the CLI uses when a daemon is running.

Deliberately light (DESIGN.md Layout: `cli -> client (tomllib, socket, json
only)`): json, os, socket and conduitd.errors, nothing else; no anyio,
structlog, pydantic or aiosqlite. A CLI call answered by the daemon costs the
interpreter start, click and this module.

The wire format lives here too, so the daemon's server (daemon/control.py)
and this client share one definition: newline-delimited JSON, one request per
line, at most MAX_LINE_BYTES a line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from conduitd.errors import ConduitdError, ConfigError, ConfigProblem

SOCKET_NAME: Final = "conduitd.sock"
PROTOCOL_VERSION: Final = 1
MAX_LINE_BYTES: Final = 1 << 20
METHODS: Final = (
    "status",
    "sync",
    "history",
    "conflicts",
    "resolve",
    "log",
    "reload",
    "stop",
    "pause",
    "resume",
    "trash_list",
    "restore",
    "trash_purge",
)
# AF_UNIX addresses hold about 108 bytes; longer paths go through a directory fd.
_MAX_SUN_PATH: Final = 100
_MAX_REPLY_BYTES: Final = 256 << 20
_CONNECT_TIMEOUT_S: Final = 5.0
_REQUEST_ID: Final = 1

EventCallback = Callable[[dict[str, object]], None]


class DaemonUnavailable(ConduitdError):
    """No daemon answers on the state dir's socket."""

    kind = "no_daemon"
    exit_code = 3


class DaemonDisconnected(ConduitdError):
    """The daemon closed the connection before it replied."""

    kind = "disconnected"
    exit_code = 1


class DaemonReplyError(ConduitdError):
    """An error reply whose kind this client has no class for."""

    exit_code = 1

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def socket_path(state_dir: Path) -> Path:
    """The control socket of a state dir."""
    return state_dir / SOCKET_NAME


def daemon_available(state_dir: Path) -> bool:
    """True when a daemon accepts connections on `state_dir`'s socket."""
    try:
        with _connect(socket_path(state_dir)):
            return True
    except DaemonUnavailable:
        return False


def call(
    state_dir: Path,
    method: str,
    params: Mapping[str, object] | None = None,
    *,
    on_event: EventCallback | None = None,
    timeout_s: float | None = 60.0,
) -> object:
    """Send one request and return the reply's `result`.

    Args:
        on_event: called with each `{"id", "event", ...}` line (progress)
            that arrives before the reply.
        timeout_s: how long to wait for the reply; None waits as long as the
            daemon works (a `sync` of a big tree).

    Raises:
        DaemonUnavailable: no daemon listens on the state dir.
        DaemonDisconnected: the daemon went away before it replied.
        ConduitdError: the daemon's error reply, as the class its `kind`
            names (ConfigError carries the daemon's problems).
    """
    request: dict[str, object] = {
        "v": PROTOCOL_VERSION,
        "id": _REQUEST_ID,
        "method": method,
        "params": dict(params or {}),
    }
    line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
    with _connect(socket_path(state_dir)) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendall(line)
            for message in _MessageReader(sock):
                if message.get("id") != _REQUEST_ID:
                    continue
                if "event" in message:
                    if on_event is not None:
                        on_event(message)
                    continue
                if message.get("ok") is True:
                    return message.get("result")
                raise error_from_reply(message.get("error"))
        except TimeoutError:
            raise DaemonDisconnected(
                f"the daemon did not answer {method!r} within {timeout_s} s"
            ) from None
        except OSError as exc:
            raise DaemonDisconnected(
                f"lost the daemon during {method!r}: {exc}"
            ) from exc
    raise DaemonDisconnected(f"the daemon closed the connection during {method!r}")


class Reply:
    """A daemon's successful answer; `result` is the reply's JSON result."""

    __slots__ = ("result",)

    def __init__(self, result: object) -> None:
        self.result = result


def ask_daemon(
    state_dir: Path,
    method: str,
    params: Mapping[str, object] | None = None,
    *,
    on_event: EventCallback | None = None,
    timeout_s: float | None = 60.0,
) -> Reply | None:
    """`call`, or None when no daemon runs: the CLI's "daemon first" path.

    Usage in a command::

        reply = ask_daemon(state_dir, "history", {"name": name, "limit": limit})
        if reply is None:
            ...  # no daemon: the in-process path
        else:
            document = reply.result

    Raises:
        ConduitdError: the daemon answered with an error (see `call`).
    """
    try:
        return Reply(
            call(state_dir, method, params, on_event=on_event, timeout_s=timeout_s)
        )
    except DaemonUnavailable:
        return None


def stop_daemon(state_dir: Path, *, poll_s: float = 0.05) -> int | None:
    """Ask the daemon to stop and wait until its process is gone; return its pid.

    Waits at most the daemon's `shutdown_timeout` plus a margin.

    Raises:
        DaemonUnavailable: no daemon runs (exit 3).
        DaemonDisconnected: the daemon outlived its shutdown timeout.
    """
    try:
        result = call(state_dir, "stop")
    except DaemonDisconnected:
        result = None  # it went away before it could answer: stopping anyway
    reply = result if isinstance(result, dict) else {}
    pid = reply.get("pid")
    timeout = reply.get("timeout_s")
    deadline = (
        time.monotonic() + (timeout if isinstance(timeout, (int, float)) else 30) + 10
    )
    while time.monotonic() < deadline:
        alive = isinstance(pid, int) and process_alive(pid)
        if not alive and not daemon_available(state_dir):
            return pid if isinstance(pid, int) else None
        time.sleep(poll_s)
    raise DaemonDisconnected(f"the daemon (pid {pid}) did not stop in time")


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) S ...": the state follows the last ')'.
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) succeeded


def error_from_reply(error: object) -> ConduitdError:
    """The exception an error reply's `{"kind", "message", ...}` stands for."""
    fields = error if isinstance(error, dict) else {}
    kind = str(fields.get("kind", "error"))
    message = str(fields.get("message", "the daemon reported an error"))
    if kind == ConfigError.kind:
        return ConfigError(_problems(fields.get("problems"), message))
    cls = _error_classes().get(kind)
    if cls is None:
        return DaemonReplyError(kind, message)
    try:
        return cls(message)
    except TypeError:  # a class whose constructor takes more than a message
        return DaemonReplyError(kind, message)


def _problems(raw: object, message: str) -> list[ConfigProblem]:
    items = raw if isinstance(raw, list) else []
    problems = [
        ConfigProblem(
            str(item.get("file", "")),
            str(item.get("key", "")),
            str(item.get("message", "")),
        )
        for item in items
        if isinstance(item, dict)
    ]
    return problems or [ConfigProblem("", "", message)]


def _error_classes() -> dict[str, type[ConduitdError]]:
    found: dict[str, type[ConduitdError]] = {}
    pending: list[type[ConduitdError]] = [ConduitdError]
    while pending:
        cls = pending.pop()
        # Only the shared families: the same reply maps to the same class
        # whether or not daemon modules happen to be imported.
        if cls.__module__ in ("conduitd.errors", __name__):
            found.setdefault(cls.kind, cls)
        pending.extend(cls.__subclasses__())
    found.pop(DaemonReplyError.kind, None)
    return found


class _MessageReader:
    """Iterate the JSON objects the daemon sends, one per line."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def __iter__(self) -> _MessageReader:
        return self

    def __next__(self) -> dict[str, object]:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not ours to judge; the reply comes on its own line
                if isinstance(message, dict):
                    return message
                continue
            if len(self._buffer) > _MAX_REPLY_BYTES:
                raise DaemonDisconnected("the daemon's reply is too large")
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise StopIteration
            self._buffer += chunk


class _Connection:
    """A connected socket, closed on exit."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def __enter__(self) -> socket.socket:
        return self.sock

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()


def _connect(path: Path) -> _Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_CONNECT_TIMEOUT_S)
    try:
        with short_socket_address(path) as address:
            sock.connect(address)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise DaemonUnavailable(f"no daemon running (no socket at {path})") from None
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"no daemon running ({path}: {exc})") from None
    return _Connection(sock)


@contextmanager
def short_socket_address(path: Path) -> Iterator[str]:
    """An address for `path` that fits in sockaddr_un (about 108 bytes).

    A long path is reached through `/proc/self/fd/<dirfd>/<name>` on Linux
    (the directory fd stays open while the address is in use); elsewhere the
    path is used as is, and a too-long one fails with the OS's error.
    """
    text = os.fspath(path)
    if len(os.fsencode(text)) < _MAX_SUN_PATH or not sys.platform.startswith("linux"):
        yield text
        return
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)
