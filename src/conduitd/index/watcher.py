"""watchfiles events of one root, as batches of relative byte paths.

`watch_filter` drops only `.conduitd/tmp` (conduitd's in-flight copies): the
default filter would hide `.git`, `node_modules`, `.venv` and editor swap
files, which are users' files. The change type is not kept: every path is
lstat-ed by the indexer (the type can lie). Events under `.conduitd/` are never
indexed; the only ones kept are a barrier's `marker.<token>.tmp` and the marker
itself.

watchfiles raises on a name that is not valid UTF-8, and silently drops the
kernel's queue-overflow notice (it carries no path): the first makes the
location stale and the watcher restart and rescan; the second is covered by
barrier timeouts and the periodic rescan.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncGenerator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import anyio

from conduitd.index.marker import CONDUITD_DIR, MARKER_NAME, barrier_token
from conduitd.index.walk import is_conduitd_path

if TYPE_CHECKING:
    from watchfiles import Change

# watchfiles' default step: an event is delivered one to two steps after it
# happens (BENCHMARKING.md), and every step wakes a thread and takes the GIL,
# so a short one costs idle CPU per watched root. Barriers do not wait for it
# (`WatchPace`).
DEFAULT_STEP_MS: Final = 50
# RustNotify's own sleep per step: none (a zero sleep makes no syscall), the
# step is spent in `WatchPace.pause`.
_NOTIFY_STEP_MS: Final = 0
_HURRIED_STEP_S: Final = 0.001
DEFAULT_DEBOUNCE_MS: Final = 1_600
# Every idle `timeout_ms` awatch yields an empty set: the first one proves the
# watcher is live, later ones let the loop run its periodic checks.
DEFAULT_TIMEOUT_MS: Final = 500


class WatcherOverflow(Exception):
    """The event source lost events (an overflowed kernel queue)."""


@dataclass(slots=True)
class EventBatch:
    """One awatch batch, translated."""

    paths: set[bytes] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)
    marker_touched: bool = False
    root_touched: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.paths or self.tokens or self.marker_touched or self.root_touched
        )


class ConduitdTmpFilter:
    """Drops events under `<root>/.conduitd/tmp` and nothing else."""

    def __init__(self, root: str) -> None:
        self._tmp = os.path.join(root, os.fsdecode(CONDUITD_DIR), "tmp")
        self._tmp_slash = self._tmp + os.sep

    def __call__(self, change: Change | int, path: str) -> bool:
        return not (path == self._tmp or path.startswith(self._tmp_slash))


def translate(root: bytes, raw: Iterable[tuple[Change | int, str]]) -> EventBatch:
    """Relative byte paths of an awatch batch; `.conduitd/` handled apart."""
    batch = EventBatch()
    prefix = root + b"/"
    for _change, text in raw:
        path = os.fsencode(text)
        if path == root:
            batch.root_touched = True
            continue
        if not path.startswith(prefix):
            continue
        rel = path[len(prefix) :]
        if rel.startswith(CONDUITD_DIR + b"/") or rel == CONDUITD_DIR:
            _note_conduitd(rel, batch)
        elif not is_conduitd_path(rel):
            batch.paths.add(rel)
    return batch


def _note_conduitd(rel: bytes, batch: EventBatch) -> None:
    parts = rel.split(b"/")
    if len(parts) == 1:
        batch.marker_touched = True  # .conduitd itself
    elif len(parts) == 2:
        token = barrier_token(parts[1])
        if token is not None:
            batch.tokens.add(token)
        elif parts[1] == MARKER_NAME:
            batch.marker_touched = True


class WatchPace:
    """How often a watch looks at its event buffer: every `step_ms`, or at
    once while someone waits for it (`hurried`: a barrier).

    RustNotify sleeps its own step, then asks `stop_event.is_set()`, then
    looks at its buffer; a watch call cannot be cut short without losing the
    events it holds. So the call is given no step of its own and the step is
    spent in `is_set` instead (GIL released), where a barrier can end it: the
    barrier's marker event is then delivered in a millisecond or two instead
    of one to two idle steps, while an idle watch still wakes once a step.
    """

    def __init__(self, step_ms: int = DEFAULT_STEP_MS) -> None:
        self.step_s = step_ms / 1000
        self._waiters = 0
        self._hurry = threading.Event()

    @contextmanager
    def hurried(self) -> Iterator[None]:
        """Look at the buffer without pausing until the block ends."""
        self._waiters += 1
        self._hurry.set()
        try:
            yield
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._hurry.clear()

    def nudge(self) -> None:
        """End a pause under way (a stop is then seen at once)."""
        self._hurry.set()
        if not self._waiters:
            self._hurry.clear()

    def pause(self) -> None:
        """Called by the watch thread once per step."""
        if self._hurry.wait(self.step_s):
            time.sleep(_HURRIED_STEP_S)  # looking without pause would hog the GIL


class _PacedStop:
    """The `stop_event` given to RustNotify: pauses one step, then answers."""

    def __init__(self, stop: anyio.Event, pace: WatchPace) -> None:
        self.stop = stop
        self.pace = pace

    def is_set(self) -> bool:
        if not self.stop.is_set():
            self.pace.pause()
        return self.stop.is_set()


class EventSource(Protocol):
    """Where a location's watcher gets its batches (`watch_batches`)."""

    def __call__(
        self, root: bytes, stop_event: anyio.Event, *, pace: WatchPace
    ) -> AsyncGenerator[EventBatch | None, None]: ...


async def watch_batches(
    root: bytes,
    stop_event: anyio.Event,
    *,
    pace: WatchPace | None = None,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> AsyncGenerator[EventBatch | None, None]:
    """Yield translated batches, and None when idle for `timeout_ms`.

    The first item (batch or None) is yielded once the watcher is live.
    Set `stop_event` before cancelling the consumer, or the watch thread
    lingers until its timeout. `pace` sets the step.
    """
    pace = pace or WatchPace()
    paced_stop = _PacedStop(stop_event, pace)
    # watchfiles' RustNotify, as its `awatch` drives it, but built in a worker
    # thread: awatch builds it on the event loop's, and building it adds the
    # recursive watches (0.5 s for a 100k-file tree, during which the daemon
    # answered nothing). Imported here: a one-shot `sync` imports this module
    # but never watches, and watchfiles costs it ~4 ms.
    from watchfiles._rust_notify import RustNotify
    from watchfiles.main import (
        _default_debug,
        _default_force_polling,
        _default_poll_delay_ms,
    )

    text_root = os.fsdecode(root)
    keep = ConduitdTmpFilter(text_root)
    watcher = await anyio.to_thread.run_sync(
        RustNotify,
        [text_root],
        _default_debug(None),
        _default_force_polling(None),
        _default_poll_delay_ms(300),
        True,  # recursive
        # An unreadable subdirectory must not blind the whole root: it is
        # flagged by the scanner and rescanned periodically.
        True,  # ignore_permission_denied
    )
    try:
        while True:
            try:
                raw = await anyio.to_thread.run_sync(
                    watcher.watch, debounce_ms, _NOTIFY_STEP_MS, timeout_ms, paced_stop
                )
            except anyio.get_cancelled_exc_class():
                stop_event.set()
                raise
            if raw == "timeout":
                yield None
            elif raw == "stop":
                return
            elif raw == "signal":
                raise RuntimeError("the watch thread received a signal")
            else:
                kept = {(change, path) for change, path in raw if keep(change, path)}
                if kept:
                    yield translate(root, kept)
    finally:
        watcher.close()
