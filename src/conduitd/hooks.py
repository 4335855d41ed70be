"""The `on_error` hook (issue 9): a command run when a conduit's run fails.

The command is the conduit's `on_error` array, run without a shell, with a
JSON summary on stdin and the summary's key facts in its environment. It runs
when a run is refused (a safety check, the free-space guard; not a pause or a
disabled conduit, which the user chose), when a run fails with an error, and
when a generation ends with per-path errors or failed verification. The hook
never changes the run's outcome: its own failure or a timeout is logged.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Final, TypeVar

import anyio
import structlog

from conduitd.config import ConduitConfig
from conduitd.errors import ConduitdError, SafetyRefusal
from conduitd.timeutil import utc_now_text

logger = structlog.get_logger()

T = TypeVar("T")
HOOK_TIMEOUT_S: Final = 30.0
# Refusals the user asked for: a paused or disabled conduit is not an error.
_CHOSEN_KINDS: Final = frozenset({"paused", "disabled", "busy"})


def failure_of(generation: Mapping[str, object]) -> str | None:
    """Why a finished generation document counts as failed, or None."""
    status = str(generation.get("verification_status", ""))
    errors = generation.get("errors_encountered")
    if isinstance(errors, int) and errors:
        return f"{errors} path(s) failed in generation {generation.get('generation')}"
    if status.startswith("failed:"):
        return f"verification {status} in generation {generation.get('generation')}"
    return None


def summary(
    conduit: str,
    outcome: str,
    error: str | None,
    generation: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The JSON document the hook reads on stdin."""
    return {
        "conduit": conduit,
        "outcome": outcome,
        "error": error,
        "generation": dict(generation) if generation is not None else None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": utc_now_text(),
    }


async def run_hook(command: tuple[str, ...], document: Mapping[str, object]) -> None:
    """Run `command` with `document` on stdin; log, never raise (cancellation aside)."""
    if not command:
        return
    payload = json.dumps(document).encode()
    env = {
        **os.environ,
        "CONDUITD_CONDUIT": str(document.get("conduit", "")),
        "CONDUITD_OUTCOME": str(document.get("outcome", "")),
    }
    log = logger.bind(conduit=document.get("conduit"), command=command[0])
    try:
        with anyio.fail_after(HOOK_TIMEOUT_S):
            returncode, errors = await _run_process(command, payload, env)
    except TimeoutError:
        log.error("on_error_hook_timeout", timeout_s=HOOK_TIMEOUT_S)
        return
    except OSError as exc:
        log.error("on_error_hook_failed", error=str(exc))
        return
    if returncode != 0:
        stderr = errors.decode(errors="replace")[-2000:]
        log.error("on_error_hook_failed", exit_code=returncode, stderr=stderr)
    else:
        log.info("on_error_hook_ran", outcome=document.get("outcome"))


async def _run_process(
    command: tuple[str, ...], payload: bytes, env: Mapping[str, str]
) -> tuple[int, bytes]:
    """`anyio.run_process` with `payload` on stdin, except that a command
    that exits without reading it is no error (run_process raises then, and
    a hook that never reads its input would have changed the run's outcome)."""
    async with await anyio.open_process(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdin is not None
        assert process.stderr is not None
        errors = bytearray()

        async def drain(stream: AsyncIterable[bytes]) -> None:
            async for chunk in stream:
                errors.extend(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, process.stderr)
            with suppress(
                anyio.BrokenResourceError, anyio.ClosedResourceError, OSError
            ):
                await process.stdin.send(payload)
                await process.stdin.aclose()
            returncode = await process.wait()
    return returncode, bytes(errors)


async def with_error_hook(
    conduit: ConduitConfig,
    run: Callable[[], Awaitable[T]],
    describe: Callable[[T], Mapping[str, object] | None],
) -> T:
    """Await `run()`; call the conduit's hook when it fails or is refused.

    Args:
        describe: the generation document of a result (None: nothing ran).
    """
    try:
        result = await run()
    except anyio.get_cancelled_exc_class():
        raise
    except SafetyRefusal as refusal:
        if refusal.kind not in _CHOSEN_KINDS:
            await _notify(conduit, summary(conduit.name, "refused", str(refusal)))
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, ConduitdError) else repr(exc)
        await _notify(conduit, summary(conduit.name, "failed", message))
        raise
    generation = describe(result)
    reason = failure_of(generation) if generation is not None else None
    if reason is not None:
        await _notify(conduit, summary(conduit.name, "failed", reason, generation))
    return result


async def _notify(conduit: ConduitConfig, document: Mapping[str, object]) -> None:
    if conduit.on_error:
        await run_hook(conduit.on_error, document)
