"""Forked worker processes for the CPU-heavy steps of a run.

A run does its heavy work in threads of one process, and on this project's
machines the threads spent most of their time waiting to get the GIL back
after each system call: the two scans of a 100k-file pair took 0.86 s
together where one alone takes ~0.35 s, and a first mirror of 10k files made
58 futex calls per file (issue 5 bench). So a one-shot `sync` and the
daemon fork two workers, for their whole-tree scans and their copies, before
the event loop or any thread exists; each waits for jobs on a pipe, runs them
one at a time (`WorkerJob.run`) and sends the result back, and the parent
uses it exactly as if it had computed it. A worker that dies is not
replaced: its jobs go back to the parent's threads.

What a job may do is its own business (see `ScanJob`, `CopyBatch`), but no
job may leave the parent's state inconsistent if its worker is killed at any
moment: a killed worker is the answer to cancellation. Whatever goes wrong
with a worker (it died, it raised, none is free) makes the caller do the work
in its own process: the worst a worker can cost is the time of the failed
attempt.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
import threading
from collections import Counter
from typing import ClassVar, Final, TypeVar

import anyio
import structlog

logger = structlog.get_logger()

_HEADER: Final = struct.Struct("<Q")
_READ_CHUNK: Final = 1 << 20

_T = TypeVar("_T")


class WorkerJob:
    """A job a worker runs: picklable, and `run` returns a picklable result."""

    __slots__ = ()
    # Jobs of one kind wait for each other's workers (`ForkedWorkers.run`);
    # None: the class name.
    kind: ClassVar[str | None] = None

    def run(self) -> object:
        raise NotImplementedError


class WorkerFailed(Exception):
    """The worker could not answer (it died, or its pipe broke)."""


class _Worker:
    def __init__(self, pid: int, jobs: int, results: int) -> None:
        self.pid = pid
        self._jobs = jobs
        self._results = results
        self._killed = False
        self._closed = False

    def call(self, job: WorkerJob) -> tuple[str, object]:
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
        """Kill and reap the worker (idle or not: every job may be killed). A
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


class ForkedWorkers:
    """A few forked processes, each running one job at a time."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._idle = list(workers)
        self._all = list(workers)
        self._busy: dict[int, str] = {}  # pid → the kind of the job it runs
        self._freed: anyio.Event | None = None  # set when a worker is free or dead
        # Jobs answered by a worker, by kind (the rest ran in-process).
        self.served: Counter[str] = Counter()

    @classmethod
    def fork(cls, count: int) -> ForkedWorkers | None:
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
            logger.warning("workers_unavailable", error=str(exc))
            for fd in pending:
                os.close(fd)
            for worker in workers:
                worker.close()
            return None
        return cls(workers)

    async def run(
        self,
        job: WorkerJob,
        expect: type[_T],
        *,
        limiter: anyio.CapacityLimiter | None = None,
        wait: bool = False,
    ) -> _T | None:
        """The job's result (an `expect`), or None: the caller does the work.

        None when no worker is free, when the worker died or raised, or when
        its answer is not an `expect`. With `wait`, a job waits for a worker
        that runs a job of its own kind (soon free: copies are batches of
        small files), never behind other kinds (a daemon's scan of a big tree
        takes minutes). Cancelled mid-job, the worker is killed (its reply
        would arrive out of turn): callers whose jobs write must clean up
        after it (see `CopyBatch`).
        """
        kind = job.kind or type(job).__name__
        if not (await self._wait_idle(kind) if wait else self._idle):
            return None
        worker = self._idle.pop()
        self._busy[worker.pid] = kind
        try:
            status, payload = await anyio.to_thread.run_sync(
                worker.call, job, abandon_on_cancel=True, limiter=limiter
            )
        except WorkerFailed as exc:
            logger.warning("worker_failed", pid=worker.pid, error=str(exc))
            await self._bury(worker)
            return None
        except BaseException:
            await self._bury(worker)
            raise
        del self._busy[worker.pid]
        self._idle.append(worker)
        self._wake()
        if status != "ok" or not isinstance(payload, expect):
            logger.warning("worker_failed", pid=worker.pid, error=str(payload))
            return None
        self.served[kind] += 1
        return payload

    async def _wait_idle(self, kind: str) -> bool:
        """Wait for a free worker while one runs a job of `kind`; False when
        none does (all run other kinds, or none is left alive)."""
        while not self._idle:
            if kind not in self._busy.values():
                return False
            if self._freed is None:
                self._freed = anyio.Event()
            await self._freed.wait()
        return True

    async def _bury(self, worker: _Worker) -> None:
        # Reaping waits for the worker to be gone, which a write stuck on a
        # slow disk can delay: not on the event loop's thread, even when the
        # caller is being cancelled.
        del self._busy[worker.pid]
        self._wake()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(worker.kill)

    def _wake(self) -> None:
        if self._freed is not None:
            self._freed.set()
            self._freed = None

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
        # Ctrl-C reaches the whole process group, a service stop the whole
        # cgroup, and the daemon's control signals may be sent to every
        # `conduitd` process: the parent decides, and ends its workers when
        # it exits (a parent that died leaves them end of file on the pipe).
        for signum in (
            signal.SIGINT,
            signal.SIGTERM,
            signal.SIGHUP,
            signal.SIGUSR1,
            signal.SIGUSR2,
        ):
            signal.signal(signum, signal.SIG_IGN)
        for fd in foreign:  # another worker's pipe ends: its EOF must not wait on us
            os.close(fd)
        while isinstance(job := _receive(jobs), WorkerJob):
            try:
                reply: tuple[str, object] = ("ok", job.run())
            except Exception as exc:  # noqa: BLE001 - reported; the parent redoes it
                reply = ("error", f"{type(exc).__name__}: {exc}")
            _send(results, reply)
    except BaseException:  # noqa: BLE001 - a worker never unwinds into the CLI
        code = 1
    finally:
        os._exit(code)


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
