"""Gathering finished copies into group-commit batches (files, bytes, age)."""

from __future__ import annotations

import math
from collections import deque
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class CommitQueue(Generic[T]):
    """Items waiting for the group commit; the committer takes them in batches.

    A batch is due when it holds `max_files` items or `max_bytes` bytes, when
    its first item has waited `max_age_s`, or when the queue is closed.
    Producers call `put` (never blocks); one consumer awaits `next_batch`.
    """

    def __init__(self, *, max_files: int, max_bytes: int, max_age_s: float) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._first_at = 0.0
        self._closed = False
        self._wakeup = anyio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size_bytes: int = 0) -> None:
        if self._closed:
            raise RuntimeError("CommitQueue is closed")
        if not self._items:
            self._first_at = anyio.current_time()
            self._wakeup.set()  # the consumer starts the age clock
        self._items.append((item, size_bytes))
        self._bytes += size_bytes
        if self._full():
            self._wakeup.set()

    def close(self) -> None:
        """No more items: the rest is one last batch, then `next_batch` is None."""
        self._closed = True
        self._wakeup.set()

    def _full(self) -> bool:
        return len(self._items) >= self.max_files or self._bytes >= self.max_bytes

    def _age(self) -> float:
        return anyio.current_time() - self._first_at if self._items else 0.0

    async def next_batch(self) -> list[T] | None:
        """The next due batch, or None once closed and drained."""
        while True:
            if self._items and (
                self._closed or self._full() or self._age() >= self.max_age_s
            ):
                return self._take()
            if self._closed:
                return None
            timeout = self.max_age_s - self._age() if self._items else math.inf
            with anyio.move_on_after(timeout):
                await self._wakeup.wait()
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()

    def _take(self) -> list[T]:
        batch: list[T] = []
        size = 0
        while self._items and len(batch) < self.max_files and size < self.max_bytes:
            item, item_bytes = self._items.popleft()
            batch.append(item)
            size += item_bytes
        self._bytes -= size
        if self._items:
            self._first_at = anyio.current_time()
        return batch
