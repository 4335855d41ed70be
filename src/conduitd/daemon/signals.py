"""One task reads the process's signals and turns them into supervisor calls.

SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR1 syncs every enabled conduit,
SIGUSR2 writes a status dump to the log (DESIGN.md Interfaces, Signals).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import anyio
import anyio.abc
import structlog

from conduitd.errors import ConduitdError

logger = structlog.get_logger()

HANDLED_SIGNALS: Final = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class SignalTarget(Protocol):
    """What signals can ask of the supervisor."""

    def request_stop(self, reason: str) -> None:
        """Begin a graceful stop; returns at once."""
        ...

    async def reload_config(self) -> object:
        """Re-read the config; log and keep the old one when it is invalid."""
        ...

    def sync_all(self) -> object:
        """Trigger every enabled, unpaused conduit now."""
        ...

    async def log_status(self) -> None:
        """Write a status dump to the log."""
        ...


async def serve_signals(
    target: SignalTarget,
    actions: anyio.abc.TaskGroup,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Dispatch signals until cancelled.

    Reload and the status dump run in `actions`, so a slow reload never
    delays a SIGTERM behind it (the supervisor serialises reloads itself).
    """
    with anyio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            logger.info("signal_received", signal=name)
            if signum in (signal.SIGTERM, signal.SIGINT):
                target.request_stop(name)
            elif signum == signal.SIGHUP:
                actions.start_soon(_contained, target.reload_config, "reload")
            elif signum == signal.SIGUSR1:
                target.sync_all()
            elif signum == signal.SIGUSR2:
                actions.start_soon(_contained, target.log_status, "status_dump")


async def _contained(action: Callable[[], Awaitable[object]], what: str) -> None:
    """Run a signal's action; its errors are logged, never fatal to the daemon."""
    try:
        await action()
    except ConduitdError as error:
        # A rejected reload was logged problem by problem; the old config stays.
        logger.warning("signal_action_failed", action=what, error=str(error))
