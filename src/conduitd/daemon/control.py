"""The control server on `state_dir/conduitd.sock` (DESIGN.md Interfaces).

Newline-delimited JSON, one request per line and one request in flight per
connection. Every failure a client can cause (bad JSON, an unknown method, a
line over 1 MiB, a vanished peer) ends in an error reply or a closed
connection, never in a crashed daemon. Handlers run in the daemon's task
group, not the connection's, so a client that disconnects does not cancel a
`sync` or a `resolve` it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import anyio
import anyio.abc
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from conduitd.client import (
    MAX_LINE_BYTES,
    METHODS,
    PROTOCOL_VERSION,
    short_socket_address,
    socket_path,
)
from conduitd.errors import ConduitdError, ConfigError

logger = structlog.get_logger()

JsonObject = dict[str, object]
ProgressSink = Callable[[Mapping[str, object]], None]
Handler = Callable[[JsonObject, ProgressSink], Awaitable[object]]

SOCKET_MODE: Final = 0o600
# Progress events queued per request before newer ones are dropped.
_EVENT_BUFFER: Final = 32


class ControlHandlers(Protocol):
    """What the control socket can ask; the supervisor implements it.

    Each method takes the request's `params` and a sink for progress events
    (non-blocking; events are dropped when the client reads slowly) and
    returns the reply's `result`, which must be JSON-serialisable. Raise a
    ConduitdError to reply with its `kind` and message.
    """

    async def status(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def sync(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def history(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def conflicts(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def resolve(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def log(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def reload(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def stop(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def pause(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def resume(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def trash_list(
        self, params: JsonObject, progress: ProgressSink
    ) -> object: ...
    async def restore(self, params: JsonObject, progress: ProgressSink) -> object: ...
    async def trash_purge(
        self, params: JsonObject, progress: ProgressSink
    ) -> object: ...


def handler_table(handlers: ControlHandlers) -> dict[str, Handler]:
    """Method name -> handler: the only names the socket dispatches."""
    table: dict[str, Handler] = {
        "status": handlers.status,
        "sync": handlers.sync,
        "history": handlers.history,
        "conflicts": handlers.conflicts,
        "resolve": handlers.resolve,
        "log": handlers.log,
        "reload": handlers.reload,
        "stop": handlers.stop,
        "pause": handlers.pause,
        "resume": handlers.resume,
        "trash_list": handlers.trash_list,
        "restore": handlers.restore,
        "trash_purge": handlers.trash_purge,
    }
    assert tuple(table) == METHODS  # the client and the server name the same set
    return table


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed request line."""

    id: object
    method: str
    params: JsonObject


class RequestError(ConduitdError):
    """A request line the server cannot act on; `id` is echoed when known."""

    kind = "usage"
    exit_code = 2

    def __init__(self, message: str, request_id: object = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class PeerRefused(ConduitdError):
    kind = "permission"
    exit_code = 2


class ServerBusy(ConduitdError):
    kind = "busy"
    exit_code = 3


class Interrupted(ConduitdError):
    kind = "interrupted"
    exit_code = 1


class InternalError(ConduitdError):
    kind = "internal"
    exit_code = 1


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_request(line: bytes) -> Request:
    """Validate one request line (pure).

    Raises:
        RequestError: not JSON, not an object, wrong version, unknown method,
            params not an object.
    """
    try:
        # JSON only: NaN and Infinity are Python's extensions (issue 8).
        document = json.loads(line, parse_constant=_refuse_constant)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise RequestError(f"request is not valid JSON: {exc}") from None
    except RecursionError:  # nesting deep enough to fit in 1 MiB (issue 8)
        raise RequestError("request is nested too deeply") from None
    if not isinstance(document, dict):
        raise RequestError("request must be a JSON object")
    request_id = document.get("id")
    if document.get("v") != PROTOCOL_VERSION:
        raise RequestError(
            f"unsupported protocol version {document.get('v')!r}; "
            f"allowed: {PROTOCOL_VERSION}",
            request_id,
        )
    method = document.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise RequestError(
            f"unknown method {method!r}; allowed: {', '.join(METHODS)}", request_id
        )
    params = document.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RequestError("params must be a JSON object", request_id)
    return Request(request_id, method, params)


def error_document(error: ConduitdError) -> JsonObject:
    """`{"kind", "message"}`; a ConfigError adds its `problems`."""
    document: JsonObject = {"kind": error.kind, "message": str(error)}
    if isinstance(error, ConfigError):
        document["problems"] = [
            {"file": p.file, "key": p.key, "message": p.message} for p in error.problems
        ]
    return document


def encode(message: Mapping[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def error_reply(request_id: object, error: ConduitdError) -> bytes:
    return encode({"id": request_id, "ok": False, "error": error_document(error)})


def peer_uid(sock: socket.socket) -> int | None:
    """The connected peer's uid, or None where the platform cannot say."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    if sys.platform == "darwin":
        # getpeereid() is LOCAL_PEERCRED underneath: struct xucred, uid second.
        sol_local, local_peercred = 0, 1
        creds = sock.getsockopt(sol_local, local_peercred, 76)
        _version, uid = struct.unpack_from("Ii", creds)
        return int(uid)
    return None


def peer_allowed(uid: int | None) -> bool:
    """Only this daemon's own uid and root may talk to it."""
    # Where the uid is unknown, the socket's mode 0600 in a 0700 dir decides.
    return uid is None or uid in (os.geteuid(), 0)


class ControlServer:
    """Accept connections and dispatch requests to a ControlHandlers table.

    Args:
        max_connections: connections served at once; more get `busy`.
        max_handlers: handlers running at once (they outlive connections).
        idle_timeout_s: a connection with no request for this long is closed.
        write_timeout_s: a peer that does not read its reply for this long
            is dropped (the handler's work goes on).
    """

    def __init__(
        self,
        state_dir: Path,
        handlers: ControlHandlers,
        *,
        max_connections: int = 64,
        max_handlers: int = 64,
        idle_timeout_s: float = 300.0,
        write_timeout_s: float = 10.0,
    ) -> None:
        self.path = socket_path(state_dir)
        self._handlers = handler_table(handlers)
        self._max_connections = max_connections
        self._max_handlers = max_handlers
        self._idle_timeout_s = idle_timeout_s
        self._write_timeout_s = write_timeout_s
        self._connections = 0
        self._running_handlers = 0

    async def serve(
        self,
        handler_group: anyio.abc.TaskGroup,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; handlers are started in `handler_group`."""
        with short_socket_address(self.path) as address:
            # anyio removes a stale socket file first and chmods the new one.
            listener = await anyio.create_unix_listener(address, mode=SOCKET_MODE)
        inode = os.stat(self.path).st_ino
        logger.info("control_socket_listening", path=str(self.path))
        try:
            async with listener, anyio.create_task_group() as connections:
                task_status.started()
                while True:
                    stream = await self._accept(listener)
                    connections.start_soon(self._connection, stream, handler_group)
        finally:
            _unlink_if_ours(self.path, inode)

    async def _accept(
        self, listener: anyio.abc.SocketListener
    ) -> anyio.abc.SocketStream:
        while True:
            try:
                return await listener.accept()
            except OSError as exc:  # EMFILE and friends: wait, do not die
                logger.warning("control_accept_failed", error=str(exc))
                await anyio.sleep(0.1)

    async def _connection(
        self, stream: anyio.abc.SocketStream, handler_group: anyio.abc.TaskGroup
    ) -> None:
        async with stream:
            if self._connections >= self._max_connections:
                await self._send(
                    stream, error_reply(None, ServerBusy("too many clients"))
                )
                return
            self._connections += 1
            try:
                await self._converse(stream, handler_group)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the peer went away; nothing to answer
            except TimeoutError:
                logger.info("control_peer_not_reading")
            finally:
                self._connections -= 1

    async def _converse(
        self, stream: anyio.abc.SocketStream, handler_group: anyio.abc.TaskGroup
    ) -> None:
        uid = peer_uid(stream.extra(anyio.abc.SocketAttribute.raw_socket))
        if not peer_allowed(uid):
            logger.warning("control_peer_refused", uid=uid)
            refusal = PeerRefused(f"uid {uid} may not control this daemon")
            await self._send(stream, error_reply(None, refusal))
            return
        reader = BufferedByteReceiveStream(stream)
        while True:
            try:
                line = await self._read_line(reader)
            except RequestError as too_long:
                await self._send(stream, error_reply(None, too_long))
                return
            if line is None:
                return  # end of stream, or idle too long
            if line.strip():
                await self._answer(stream, line, handler_group)

    async def _read_line(self, reader: BufferedByteReceiveStream) -> bytes | None:
        """The next request line; None at end of stream or after the idle timeout.

        Raises:
            RequestError: the line is longer than MAX_LINE_BYTES.
        """
        too_long = RequestError(f"request line longer than {MAX_LINE_BYTES} bytes")
        with anyio.move_on_after(self._idle_timeout_s):
            try:
                line = await reader.receive_until(b"\n", MAX_LINE_BYTES)
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return None
            except anyio.DelimiterNotFound:
                raise too_long from None
            # receive_until returns a longer line when its delimiter came in
            # the same read: the cap is checked here too.
            if len(line) > MAX_LINE_BYTES:
                raise too_long
            return line
        return None

    async def _answer(
        self,
        stream: anyio.abc.SocketStream,
        line: bytes,
        handler_group: anyio.abc.TaskGroup,
    ) -> None:
        try:
            request = parse_request(line)
        except RequestError as error:
            logger.info("control_bad_request", error=str(error))
            await self._send(stream, error_reply(error.request_id, error))
            return
        if self._running_handlers >= self._max_handlers:
            busy = ServerBusy("too many requests in progress; try again")
            await self._send(stream, error_reply(request.id, busy))
            return
        send, receive = anyio.create_memory_object_stream[bytes](_EVENT_BUFFER)
        self._running_handlers += 1
        handler_group.start_soon(self._run_handler, request, send)
        async with receive:
            async for chunk in receive:
                await self._send(stream, chunk)

    async def _run_handler(
        self, request: Request, out: MemoryObjectSendStream[bytes]
    ) -> None:
        log = logger.bind(method=request.method)

        def progress(event: Mapping[str, object]) -> None:
            message = {"id": request.id, "event": "progress", **event}
            with contextlib.suppress(
                anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
            ):
                out.send_nowait(encode(message))  # progress is best effort

        try:
            async with out:
                reply = await self._call(request, progress, out, log)
                try:
                    await out.send(reply)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    log.info("control_reply_undelivered")
        finally:
            self._running_handlers -= 1

    async def _call(
        self,
        request: Request,
        progress: ProgressSink,
        out: MemoryObjectSendStream[bytes],
        log: structlog.typing.FilteringBoundLogger,
    ) -> bytes:
        handler = self._handlers[request.method]
        try:
            result = await handler(request.params, progress)
            return encode({"id": request.id, "ok": True, "result": result})
        except ConduitdError as error:
            return error_reply(request.id, error)
        except anyio.get_cancelled_exc_class():
            # The daemon is stopping: tell the client, if it can still hear.
            stopping = Interrupted(f"the daemon stopped during {request.method}")
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError):
                out.send_nowait(error_reply(request.id, stopping))
            raise
        except Exception as exc:
            log.exception("control_handler_failed")
            internal = InternalError(f"internal error in {request.method}: {exc}")
            return error_reply(request.id, internal)

    async def _send(self, stream: anyio.abc.SocketStream, data: bytes) -> None:
        with anyio.fail_after(self._write_timeout_s):
            await stream.send(data)


def _unlink_if_ours(path: Path, inode: int) -> None:
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass
