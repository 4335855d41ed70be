"""sd_notify over NOTIFY_SOCKET: path and abstract sockets, the watchdog."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from conduitd.daemon.notify import SdNotifier, run_watchdog


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = os.fspath(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        yield address, sock


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SdNotifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval_s is None


def test_ready_status_and_stopping_arrive(receiver: tuple[str, socket.socket]) -> None:
    address, sock = receiver
    notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready("2 conduits")
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 conduits"
    assert notifier.status("syncing\nphotos")
    assert sock.recv(4096) == b"STATUS=syncing photos"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_abstract_socket_names_start_with_at() -> None:
    name = f"conduitd-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert SdNotifier(f"@{name}").watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_the_timeout_and_only_for_us() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert SdNotifier.from_environ(env).watchdog_interval_s == 15.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert SdNotifier.from_environ(mine).watchdog_interval_s == 15.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SdNotifier.from_environ(other).watchdog_interval_s is None
    assert (
        SdNotifier.from_environ({**env, "WATCHDOG_USEC": "x"}).watchdog_interval_s
        is None
    )


def test_a_vanished_notify_socket_is_not_fatal(tmp_path: Path) -> None:
    notifier = SdNotifier(os.fspath(tmp_path / "gone.sock"))
    assert not notifier.ready()


async def test_watchdog_pings_until_cancelled(
    receiver: tuple[str, socket.socket],
) -> None:
    address, sock = receiver
    sock.setblocking(False)
    notifier = SdNotifier(address, watchdog_usec=20_000)
    pings = 0
    async with anyio.create_task_group() as tg:
        await tg.start(run_watchdog, notifier)
        with anyio.fail_after(5):
            while pings < 3:
                await anyio.wait_readable(sock)
                assert sock.recv(4096) == b"WATCHDOG=1"
                pings += 1
        tg.cancel_scope.cancel()


async def test_start_and_stop_timeouts_are_extended_while_asked(
    receiver: tuple[str, socket.socket],
) -> None:
    address, sock = receiver
    sock.setblocking(False)
    extending = True
    async with anyio.create_task_group() as tg:
        await tg.start(
            partial(run_watchdog, SdNotifier(address), extending=lambda: extending)
        )
        with anyio.fail_after(5):
            await anyio.wait_readable(sock)
        assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=30000000"
        tg.cancel_scope.cancel()


async def test_without_a_listener_the_watchdog_task_ends_at_once() -> None:
    with anyio.fail_after(5):
        await run_watchdog(SdNotifier(None), extending=lambda: True)
