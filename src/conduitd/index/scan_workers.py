"""Whole-tree scans in forked worker processes (one-shot `sync`).

A one-shot run scans both roots at once. In one process the two walks share
the GIL: at 100k files a side they took 0.86 s together where one alone takes
~0.35 s, most of it waiting to get the GIL back after each `lstat` (issue 5
bench). A worker is forked before the event loop or any thread exists, waits
for jobs on a pipe, runs `TreeScanner.collect` with a read-only connection of
its own and sends the `ChangeSet` back; the parent writes it exactly as if it
had computed it.

Workers only read (lstat, file contents, the library through a read-only
connection), so killing one at any moment is harmless. Whatever goes wrong
with a worker (it died, it raised, none is free) makes the caller scan in its
own process: the worst a worker can cost is the time of the failed attempt.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import structlog

from conduitd.index.scanner import ChangeSet, KnownContent, TreeScanner
from conduitd.index.walk import DirTask
from conduitd.storage.entries import EntryReader

logger = structlog.get_logger()

_HEADER: Final = struct.Struct("<Q")
_READ_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class ScanJob:
    """Everything a worker needs to compare one tree with its index rows."""

    root: bytes
    root_dev: int
    start: DirTask
    db_path: Path
    location_id: int
    known: Mapping[bytes, KnownContent]
    threads: int


class WorkerFailed(Exception):
    """The worker could not answer (it died, or its pipe broke)."""


class _Worker:
    def __init__(self, pid: int, jobs: int, results: int) -> None:
        self.pid = pid
        self._jobs = jobs
        self._results = results
        self._killed = False
        self._closed = False

    def call(self, job: ScanJob) -> tuple[str, object]:
        """Send a job and wait for its reply (blocking: a worker thread)."""
        try:
            _send(self._jobs, job)
            reply = _receive(self._results)
        except OSError as exc:
            raise WorkerFailed(str(exc)) from exc
        if not isinstance(reply, tuple) or len(reply) != 2:
            raise WorkerFailed("the worker exited")
        return str(reply[0]), reply[1]

    def kill(self) -> None:
        """Kill and reap the worker (idle or not: it only ever reads). A
        thread still waiting for its reply then reads end of file."""
        if self._killed:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def close(self) -> None:
        """Kill the worker, then close the pipes (after: a thread still
        reading must meet end of file, not a descriptor number reused)."""
        self.kill()
        if not self._closed:
            self._closed = True
            os.close(self._jobs)
            os.close(self._results)


class ScanWorkers:
    """A few forked scanning processes, each running one job at a time."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._idle = list(workers)
        self._all = list(workers)
        self.served = 0  # jobs answered by a worker (the rest ran in-process)

    @classmethod
    def fork(cls, count: int) -> ScanWorkers | None:
        """Fork `count` workers, or None where forking is not safe.

        Only on Linux (macOS frameworks are not fork-safe) and only while this
        process runs a single thread: a lock held by another thread at the
        moment of the fork would stay held forever in the child.
        """
        if sys.platform != "linux" or threading.active_count() != 1:
            return None
        workers: list[_Worker] = []
        inherited: list[int] = []
        pending: list[int] = []  # pipe ends no worker owns yet
        try:
            for _ in range(count):
                job_read, job_write = os.pipe()
                pending += [job_read, job_write]
                result_read, result_write = os.pipe()
                pending += [result_read, result_write]
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child
                    _child(job_read, result_write, [*inherited, job_write, result_read])
                pending.clear()
                os.close(job_read)
                os.close(result_write)
                inherited += [job_write, result_read]
                workers.append(_Worker(pid, job_write, result_read))
        except OSError as exc:
            logger.warning("scan_workers_unavailable", error=str(exc))
            for fd in pending:
                os.close(fd)
            for worker in workers:
                worker.close()
            return None
        return cls(workers)

    async def collect(self, job: ScanJob) -> ChangeSet | None:
        """The job's changes, or None: the caller scans in its own process."""
        if not self._idle:
            return None
        worker = self._idle.pop()
        try:
            status, payload = await anyio.to_thread.run_sync(
                worker.call, job, abandon_on_cancel=True
            )
        except WorkerFailed as exc:
            logger.warning("scan_worker_failed", pid=worker.pid, error=str(exc))
            worker.kill()
            return None
        except BaseException:
            # Cancelled mid-job: the reply would arrive out of turn.
            worker.kill()
            raise
        self._idle.append(worker)
        if status != "ok" or not isinstance(payload, ChangeSet):
            logger.warning("scan_worker_failed", pid=worker.pid, error=str(payload))
            return None
        self.served += 1
        return payload

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self._all]

    def close(self) -> None:
        for worker in self._all:
            worker.close()
        self._idle.clear()


def _child(jobs: int, results: int, foreign: list[int]) -> None:  # pragma: no cover
    """The worker's whole life; never returns."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group: the parent decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for fd in foreign:  # another worker's pipe ends: its EOF must not wait on us
            os.close(fd)
        while isinstance(job := _receive(jobs), ScanJob):
            try:
                reply: tuple[str, object] = ("ok", _run(job))
            except Exception as exc:  # noqa: BLE001 - reported; the parent rescans
                reply = ("error", f"{type(exc).__name__}: {exc}")
            _send(results, reply)
    except BaseException:  # noqa: BLE001 - a worker never unwinds into the CLI
        code = 1
    finally:
        os._exit(code)


def _run(job: ScanJob) -> ChangeSet:
    scanner = TreeScanner(anyio.CapacityLimiter(job.threads))
    if job.known:
        scanner.expect(job.root, job.known)
    changes = ChangeSet()
    reader = EntryReader(job.db_path, job.location_id)
    try:
        anyio.run(scanner.collect, job.root, job.root_dev, job.start, reader, changes)
    finally:
        reader.close()
    return changes


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _receive(fd: int) -> object | None:
    """One message, or None at end of file."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    data = _read_exactly(fd, size)
    if data is None:
        return None
    message: object = pickle.loads(data)
    return message


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts: list[bytes] = []
    left = size
    while left:
        part = os.read(fd, min(left, _READ_CHUNK))
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
