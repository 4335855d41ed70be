"""Which indexed paths changed, for the daemon's instant triggers and
incremental resolution.

A `ChangeFeed` accumulates changed paths per location until its reader takes
them: the indexer never waits for a reader and nothing is dropped; a slow
reader receives one merged `IndexChange` per location instead of many small
ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

import anyio


@dataclass(frozen=True, slots=True)
class IndexChange:
    """Paths of one location whose rows were added, updated or removed."""

    location_id: int
    paths: frozenset[bytes]


class ChangeFeed:
    """A subscription to index changes; `async for change in feed`.

    Use as a context manager, or call `close()`, to unsubscribe.
    """

    def __init__(self, on_close: Callable[[ChangeFeed], None]) -> None:
        self._pending: dict[int, set[bytes]] = {}
        self._ready = anyio.Event()
        self._closed = False
        self._on_close = on_close

    def publish(self, location_id: int, paths: Iterable[bytes]) -> None:
        """Add changed paths (called by the indexer; never blocks)."""
        if self._closed:
            return
        bucket = self._pending.setdefault(location_id, set())
        bucket.update(paths)
        if not bucket:
            del self._pending[location_id]
            return
        self._ready.set()

    def pending(self) -> bool:
        return bool(self._pending)

    async def receive(self) -> IndexChange:
        """The changes of one location accumulated since the last call.

        Raises:
            anyio.EndOfStream: the feed was closed.
        """
        while not self._pending:
            if self._closed:
                raise anyio.EndOfStream
            await self._ready.wait()
            self._ready = anyio.Event()
        location_id = next(iter(self._pending))
        paths = self._pending.pop(location_id)
        return IndexChange(location_id, frozenset(paths))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ready.set()
            self._on_close(self)

    def __aiter__(self) -> ChangeFeed:
        return self

    async def __anext__(self) -> IndexChange:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
