"""sd_notify through `$NOTIFY_SOCKET`: READY, STATUS, WATCHDOG, STOPPING.

No libsystemd: the protocol is one datagram per message on an AF_UNIX socket
whose address systemd passes in `$NOTIFY_SOCKET` (`@name` is an abstract
socket). Without the variable every call is a no-op, so the daemon runs the
same under a terminal, launchd or a test.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import anyio
import anyio.abc
import structlog

logger = structlog.get_logger()

NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"
# While starting or stopping, ask systemd for this much more time, this often.
EXTEND_BY_S: Final = 30.0
EXTEND_EVERY_S: Final = 10.0


class Notifier(Protocol):
    """Where the supervisor reports its lifecycle (systemd, or nowhere)."""

    def notify(self, message: str) -> bool:
        """Send one `KEY=value` message (lines joined by newline)."""
        ...

    @property
    def enabled(self) -> bool:
        """Whether anyone listens (systemd set NOTIFY_SOCKET)."""
        ...

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1, or None when no watchdog is armed."""
        ...


class SdNotifier:
    """sd_notify over a datagram socket; a no-op when `address` is None."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if watchdog_usec else None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (sd_watchdog_enabled)."""
        env = os.environ if environ is None else environ
        return cls(env.get(NOTIFY_SOCKET_ENV) or None, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        # systemd's advice: ping at half the timeout.
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, message: str) -> bool:
        """Send `message`; False (and one warning) when it cannot be delivered.

        Non-blocking: a full receive queue drops the message rather than stall
        the event loop.
        """
        if self._address is None:
            return False
        try:
            # Python sockets are close-on-exec already (PEP 446).
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("sd_notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(_with_status("READY=1", status))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(_with_status("STOPPING=1", status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


async def run_watchdog(
    notifier: Notifier,
    *,
    extending: Callable[[], bool] = lambda: False,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Ping WATCHDOG=1 at the notifier's interval until cancelled.

    While `extending()` is true (starting: the first scans of a big tree can
    outlast systemd's TimeoutStartSec; stopping) it also sends
    EXTEND_TIMEOUT_USEC, so a live daemon is given more time and a hung one
    still is not. A loop that stalls stops both: that is the point.
    """
    interval_s = notifier.watchdog_interval_s
    tick_s = min(interval_s or EXTEND_EVERY_S, EXTEND_EVERY_S)
    task_status.started()
    if not notifier.enabled:
        return
    while True:
        if interval_s is not None:
            notifier.notify("WATCHDOG=1")
        if extending():
            notifier.notify(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY_S * 1_000_000)}")
        await anyio.sleep(tick_s)


def _socket_address(address: str) -> str | bytes:
    if address.startswith("@"):
        # Linux abstract namespace: a leading NUL instead of the `@`.
        return b"\0" + address[1:].encode()
    return address


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    pid = env.get(WATCHDOG_PID_ENV)
    if pid and pid != str(os.getpid()):
        return None  # armed for another process (sd_watchdog_enabled semantics)
    return usec if usec > 0 else None


def _with_status(state: str, status: str | None) -> str:
    return state if status is None else f"{state}\nSTATUS={_one_line(status)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
