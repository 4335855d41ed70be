"""The control socket's methods, answered from the running supervisor.

Implements `control.ControlHandlers`. Methods whose machinery lives in other
parts (log, sync --dry-run) reply `not_available` until the lead wires them
here.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING

from conduitd import __version__
from conduitd.daemon.control import JsonObject, ProgressSink
from conduitd.daemon.runs import RunProgress, RunReason
from conduitd.errors import NotAvailableYet, UsageError
from conduitd.reports import conduit_documents, generation_document
from conduitd.storage.conduits import ConduitManager
from conduitd.timeutil import format_utc

if TYPE_CHECKING:
    from conduitd.daemon.supervisor import Supervisor

DEFAULT_HISTORY_LIMIT = 20


class DaemonHandlers:
    """ControlHandlers over a Supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def status(self, params: JsonObject, progress: ProgressSink) -> object:
        """DESIGN.md's `status --json` document, with the daemon's runtime view."""
        supervisor = self._supervisor
        if supervisor.library is None:
            raise NotAvailableYet("the daemon has not opened its library yet")
        documents = await conduit_documents(supervisor.library, supervisor.config)
        for document in documents:
            self._overlay_runtime(document)
        return {"daemon": self.daemon_document(), "conduits": documents}

    def daemon_document(self) -> JsonObject:
        supervisor = self._supervisor
        tm = supervisor.transactions
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": supervisor.started_at,
            "state": supervisor.state.value,
            "leader": tm.leadership.info() if tm is not None else None,
        }

    def _overlay_runtime(self, document: JsonObject) -> None:
        supervisor = self._supervisor
        name = str(document["name"])
        try:
            task = supervisor.conduits.task(name)
        except UsageError:
            return  # configured but not started (the daemon is starting)
        runtime = task.runtime()
        next_run = supervisor.scheduler.next_run(name)
        document["paused"] = runtime.paused
        document["next_run"] = format_utc(next_run) if next_run else None
        if runtime.running:
            document["active"] = (runtime.active or RunProgress()).document()
        errors = [
            e for e in (runtime.last_error, *supervisor.conduits.notes(name)) if e
        ]
        if runtime.last_error is None and document.get("last_error"):
            errors.insert(0, str(document["last_error"]))
        document["last_error"] = "; ".join(errors) if errors else None

    async def sync(self, params: JsonObject, progress: ProgressSink) -> object:
        """Run a conduit now and wait for its generation (coalesced with a running one)."""
        self._supervisor.require_started()
        name = _text(params, "name")
        if _flag(params, "dry_run"):
            raise NotAvailableYet("sync --dry-run through the daemon is not wired yet")
        task = self._supervisor.conduits.task(name)
        return await task.sync_now(
            RunReason.MANUAL, force=_flag(params, "force"), progress=progress
        )

    async def history(self, params: JsonObject, progress: ProgressSink) -> object:
        supervisor = self._supervisor
        supervisor.require_started()
        assert supervisor.library is not None  # started
        name = _text(params, "name")
        limit = _count(params, "limit", DEFAULT_HISTORY_LIMIT)
        manager = ConduitManager(supervisor.library.db)
        record = await manager.get_by_name(name)
        if record is None:
            raise UsageError(f"no conduit named {name!r} has run here")
        return [
            generation_document(name, generation)
            for generation in await manager.generations(record.id, limit)
        ]

    async def reload(self, params: JsonObject, progress: ProgressSink) -> object:
        result = await self._supervisor.reload_config()
        return result.document()

    async def stop(self, params: JsonObject, progress: ProgressSink) -> object:
        supervisor = self._supervisor
        supervisor.request_stop("control socket")
        timeout_s = supervisor.config.daemon.shutdown_timeout_s
        return {"stopping": True, "pid": os.getpid(), "timeout_s": timeout_s}

    async def pause(self, params: JsonObject, progress: ProgressSink) -> object:
        return await self._set_paused(params, paused=True)

    async def resume(self, params: JsonObject, progress: ProgressSink) -> object:
        return await self._set_paused(params, paused=False)

    async def _set_paused(self, params: JsonObject, *, paused: bool) -> object:
        supervisor = self._supervisor
        supervisor.require_started()
        if _flag(params, "all"):
            names = list(supervisor.config.names)
        else:
            names = [_text(params, "name")]
        done = await supervisor.conduits.set_paused(names, paused)
        return {"paused" if paused else "resumed": done}

    async def conflicts(self, params: JsonObject, progress: ProgressSink) -> object:
        """`conflicts [NAME]`: every conflict, oldest first (issue 6)."""
        from conduitd.sync.resolve_conflict import list_conflicts

        supervisor = self._supervisor
        supervisor.require_started()
        assert supervisor.library is not None  # started
        name = _text(params, "name") if params.get("name") is not None else None
        return await list_conflicts(supervisor.library.db, name)

    async def resolve(self, params: JsonObject, progress: ProgressSink) -> object:
        """`resolve ID --keep source|target|both` in a generation of its own."""
        supervisor = self._supervisor
        supervisor.require_started()
        resolver = supervisor.conflict_resolver
        if resolver is None:
            raise NotAvailableYet("this daemon runs without a sync engine")
        conflict_id = _count(params, "id", 0)
        keep = _text(params, "keep")
        if keep not in ("source", "target", "both"):
            raise UsageError("params.keep must be source, target or both")
        return await resolver.resolve_conflict(conflict_id, keep)

    async def log(self, params: JsonObject, progress: ProgressSink) -> object:
        """`log [--since SEQ] [--limit N]`: sync log entries, oldest first."""
        from conduitd.storage.log_view import log_entries

        supervisor = self._supervisor
        supervisor.require_started()
        assert supervisor.library is not None  # started
        since, limit = params.get("since", 0), params.get("limit", 100)
        if (
            not (isinstance(since, int) and isinstance(limit, int))
            or since < 0
            or limit < 1
        ):
            raise UsageError("log takes an integer since >= 0 and limit >= 1")
        return await log_entries(supervisor.library, since, limit)

    async def trash_list(self, params: JsonObject, progress: ProgressSink) -> object:
        """`trash list NAME [PATH]`: the conduit's trashed versions, newest first."""
        from conduitd.sync.restore import trash_list_document
        from conduitd.wire import path_from_user

        supervisor = self._supervisor
        supervisor.require_started()
        assert supervisor.library is not None  # started
        path = params.get("path")
        if path is not None and not isinstance(path, str):
            raise UsageError("params.path must be a string")
        return await trash_list_document(
            supervisor.library,
            supervisor.config,
            _text(params, "name"),
            path_from_user(path) if path else None,
        )

    async def restore(self, params: JsonObject, progress: ProgressSink) -> object:
        """`restore NAME PATH [--generation N] [--to DEST]` in the daemon's process."""
        from pathlib import Path

        from conduitd.sync.restore import restore_version
        from conduitd.wire import path_from_user

        supervisor = self._supervisor
        supervisor.require_started()
        assert supervisor.library is not None  # started
        assert supervisor.transactions is not None  # started
        generation = params.get("generation")
        if generation is not None and (
            isinstance(generation, bool) or not isinstance(generation, int)
        ):
            raise UsageError("params.generation must be a whole number")
        dest = params.get("to")
        if dest is not None and not (isinstance(dest, str) and os.path.isabs(dest)):
            raise UsageError("params.to must be an absolute path")
        name = _text(params, "name")
        async with self._writer_slot(name):
            return await restore_version(
                supervisor.library,
                supervisor.transactions,
                supervisor.config,
                name,
                path_from_user(_text(params, "path")),
                generation=generation,
                dest=Path(dest) if dest else None,
            )

    async def trash_purge(self, params: JsonObject, progress: ProgressSink) -> object:
        """`trash purge NAME [--older-than D]`: prune the conduit's trash now."""
        from conduitd.sync.trash_retention import prune_conduit_trash

        supervisor = self._supervisor
        supervisor.require_started()
        assert supervisor.library is not None  # started
        assert supervisor.transactions is not None  # started
        older_than_s = params.get("older_than_s")
        if older_than_s is not None and (
            isinstance(older_than_s, bool)
            or not isinstance(older_than_s, int | float)
            or older_than_s < 0
        ):
            raise UsageError("params.older_than_s must be a number of seconds >= 0")
        conduit = supervisor.config.conduit(_text(params, "name"))
        async with self._writer_slot(conduit.name):
            summary = await prune_conduit_trash(
                supervisor.library,
                supervisor.transactions,
                conduit,
                older_than_s=None if older_than_s is None else float(older_than_s),
            )
        return summary.document()

    def _writer_slot(self, name: str) -> AbstractAsyncContextManager[None]:
        """Conduit `name`'s writer slot: a restore or a purge waits for a run
        of it to end, and a run waits for them (see ConflictResolving)."""
        engine = self._supervisor.conflict_resolver
        return nullcontext() if engine is None else engine.exclusive(name)


def _text(params: JsonObject, key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"params.{key} must be a non-empty string")
    return value


def _flag(params: JsonObject, key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"params.{key} must be true or false")
    return value


def _count(params: JsonObject, key: str, default: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"params.{key} must be a whole number >= 1")
    return value
