"""The control server with stand-in handlers, and the thin client against it."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from conduitd.client import (
    DaemonReplyError,
    DaemonUnavailable,
    ask_daemon,
    call,
    daemon_available,
    error_from_reply,
    socket_path,
)
from conduitd.daemon.control import (
    ControlServer,
    JsonObject,
    ProgressSink,
    RequestError,
    parse_request,
    peer_allowed,
)
from conduitd.errors import ConfigError, ConfigProblem, SafetyRefusal


class Handlers:
    """Every method answers something recognisable; `sync` waits at a gate."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.sync_entered = anyio.Event()
        self.sync_finished = anyio.Event()
        self.sync_cancelled = False

    async def status(self, params: JsonObject, progress: ProgressSink) -> object:
        return {"echo": params}

    async def sync(self, params: JsonObject, progress: ProgressSink) -> object:
        self.sync_entered.set()
        try:
            for done in range(3):
                progress({"files_done": done})
            await self.gate.wait()
        except anyio.get_cancelled_exc_class():
            self.sync_cancelled = True
            raise
        self.sync_finished.set()
        return {"generation": 7}

    async def history(self, params: JsonObject, progress: ProgressSink) -> object:
        raise SafetyRefusal("conduit photos is paused")

    async def conflicts(self, params: JsonObject, progress: ProgressSink) -> object:
        raise RuntimeError("a bug")

    async def resolve(self, params: JsonObject, progress: ProgressSink) -> object:
        return None

    async def log(self, params: JsonObject, progress: ProgressSink) -> object:
        return object()  # not JSON-serialisable: a bug, answered as one

    async def reload(self, params: JsonObject, progress: ProgressSink) -> object:
        raise ConfigError([ConfigProblem("c.toml", "conduit[0].name", "bad")])

    async def stop(self, params: JsonObject, progress: ProgressSink) -> object:
        return {"stopping": True}

    async def pause(self, params: JsonObject, progress: ProgressSink) -> object:
        return None

    async def resume(self, params: JsonObject, progress: ProgressSink) -> object:
        return None

    async def trash_list(self, params: JsonObject, progress: ProgressSink) -> object:
        return []

    async def restore(self, params: JsonObject, progress: ProgressSink) -> object:
        return None

    async def trash_purge(self, params: JsonObject, progress: ProgressSink) -> object:
        return None


@asynccontextmanager
async def serving(state_dir: Path, handlers: Handlers) -> AsyncIterator[Path]:
    os.makedirs(state_dir, exist_ok=True)
    async with anyio.create_task_group() as tg:
        await tg.start(ControlServer(state_dir, handlers).serve, tg)
        yield state_dir
        tg.cancel_scope.cancel()


async def in_thread_call(state_dir: Path, method: str, **params: object) -> object:
    def blocking() -> object:
        return call(state_dir, method, params)

    with anyio.fail_after(5):
        return await anyio.to_thread.run_sync(blocking)


async def test_a_disconnecting_client_does_not_cancel_its_request(
    tmp_path: Path,
) -> None:
    handlers = Handlers()
    async with serving(tmp_path / "state", handlers) as state_dir:
        stream = await anyio.connect_unix(socket_path(state_dir))
        await stream.send(b'{"v": 1, "id": 1, "method": "sync", "params": {}}\n')
        with anyio.fail_after(5):
            await handlers.sync_entered.wait()
        await stream.aclose()
        handlers.gate.set()
        with anyio.fail_after(5):
            await handlers.sync_finished.wait()
        # ... and the server still answers others.
        assert await in_thread_call(state_dir, "status") == {"echo": {}}
    assert not handlers.sync_cancelled


async def test_progress_events_come_before_the_reply(tmp_path: Path) -> None:
    handlers = Handlers()
    handlers.gate.set()
    events: list[dict[str, object]] = []
    async with serving(tmp_path / "state", handlers) as state_dir:

        def blocking() -> object:
            return call(state_dir, "sync", {"name": "x"}, on_event=events.append)

        with anyio.fail_after(5):
            result = await anyio.to_thread.run_sync(blocking)
    assert result == {"generation": 7}
    assert [e["files_done"] for e in events] == [0, 1, 2]
    assert all(e["event"] == "progress" and e["id"] == 1 for e in events)


async def test_error_replies_become_typed_errors(tmp_path: Path) -> None:
    async with serving(tmp_path / "state", Handlers()) as state_dir:
        with pytest.raises(SafetyRefusal, match="paused") as refused:
            await in_thread_call(state_dir, "history", name="photos")
        assert refused.value.exit_code == 3
        with pytest.raises(ConfigError) as invalid:
            await in_thread_call(state_dir, "reload")
        assert invalid.value.problems == (
            ConfigProblem("c.toml", "conduit[0].name", "bad"),
        )
        for method in ("conflicts", "log"):
            with pytest.raises(DaemonReplyError) as internal:
                await in_thread_call(state_dir, method)
            assert internal.value.kind == "internal"
        assert await in_thread_call(state_dir, "status", a=1) == {"echo": {"a": 1}}


async def test_a_long_state_dir_path_still_gets_a_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "state"
    assert len(os.fsencode(socket_path(deep))) > 108
    async with serving(deep, Handlers()) as state_dir:
        assert await anyio.to_thread.run_sync(daemon_available, state_dir)
        assert await in_thread_call(state_dir, "stop") == {"stopping": True}
    assert not socket_path(deep).exists()


def test_no_socket_means_no_daemon(tmp_path: Path) -> None:
    assert not daemon_available(tmp_path)
    assert ask_daemon(tmp_path, "status") is None
    with pytest.raises(DaemonUnavailable, match="no daemon running") as missing:
        call(tmp_path, "status")
    assert missing.value.exit_code == 3


def test_a_stale_socket_file_means_no_daemon(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(os.fspath(socket_path(tmp_path)))  # bound, never listening
    assert not daemon_available(tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"id": 1, "method": "status"}', "protocol version"),
        (b'{"v": 1, "id": 1, "method": 3}', "unknown method"),
        (b'{"v": 1, "id": 1, "method": "__init__"}', "unknown method"),
        (b'{"v": 1, "id": 1, "method": "status", "params": [1]}', "params"),
    ],
)
def test_malformed_requests_are_usage_errors(line: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as error:
        parse_request(line)
    assert error.value.kind == "usage"


def test_a_well_formed_request_parses() -> None:
    request = parse_request(json.dumps({"v": 1, "id": "x", "method": "sync"}).encode())
    assert (request.id, request.method, request.params) == ("x", "sync", {})


def test_only_our_uid_or_root_may_connect() -> None:
    assert peer_allowed(os.geteuid())
    assert peer_allowed(0)
    assert not peer_allowed(os.geteuid() + 12345 if os.geteuid() else 65534)


def test_unknown_error_kinds_keep_their_kind() -> None:
    error = error_from_reply({"kind": "martian", "message": "odd"})
    assert isinstance(error, DaemonReplyError)
    assert (error.kind, str(error)) == ("martian", "odd")
