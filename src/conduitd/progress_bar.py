"""`conduitd sync --progress`: a rich progress bar on stderr.

Imported only when `--progress` is given: rich costs ~45 ms of a process
start, which a plain `sync` never pays (tests/integration/test_cli_basics.py).
The same bar is fed by the one-shot service (`on_run`, on the event loop
thread) and by a daemon's progress events (`on_event`, on the CLI's thread).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Column
from rich.text import Text

if TYPE_CHECKING:
    from conduitd.sync.service import ActiveRun

# Redrawing renders the whole bar while holding the GIL; a few times a second
# is smooth enough and leaves the event loop of a one-shot run alone.
_REFRESH_PER_S = 5


@dataclass(frozen=True, slots=True)
class RunCounts:
    """One progress report of a running generation."""

    generation: int | None
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int

    @classmethod
    def from_event(cls, event: Mapping[str, object]) -> RunCounts:
        """A daemon's `{"event": "progress", ...}` line (docs/daemon.md)."""

        def count(key: str) -> int:
            value = event.get(key)
            return value if isinstance(value, int) else 0

        generation = event.get("generation")
        return cls(
            generation if isinstance(generation, int) else None,
            count("files_done"),
            count("files_total"),
            count("bytes_done"),
            count("bytes_total"),
        )


class _RunBarColumn(BarColumn):
    """The bar follows bytes; by files when the run copies no data."""

    def render(self, task: Task) -> ProgressBar:
        bar = super().render(task)
        files_total = task.fields.get("files_total", 0)
        # Deletes and metadata updates move no bytes: a bytes bar would show
        # them done before they start.
        if task.total == 0 and files_total:
            bar.total, bar.completed = files_total, task.fields.get("files_done", 0)
        return bar


def _cell() -> Column:
    """A counter's cell: one line, never wrapped (a wrapped bar is two)."""
    return Column(no_wrap=True)


class _TimeColumn(TimeRemainingColumn):
    """Time left while bytes move; the time taken before and once done.

    One column, as rsync does: the counters already fill most of 80 columns.
    """

    # rich reuses this column's text for `max_refresh` seconds while nothing
    # is completed, which left an estimate on the final state of an empty run.
    max_refresh = 0.0

    def render(self, task: Task) -> Text:
        if task.finished or task.total is None:
            return _ELAPSED.render(task)
        return Text.assemble("eta ", super().render(task))


_ELAPSED = TimeElapsedColumn()


class SyncProgressBar:
    """One conduit's run as a bar on stderr: files, bytes, rate and time.

    A context manager: the bar stops (and the cursor comes back) on success,
    on an error and on Ctrl-C. On a terminal it redraws in place and log lines
    print above it; elsewhere rich draws nothing live and the bar prints its
    final state once, as one line, when it stops. A bar that never saw a run
    (a config error, a refusal) leaves nothing behind.

    Args:
        console: where to draw; stderr by default (stdout holds the output).
    """

    def __init__(self, name: str, console: Console | None = None) -> None:
        self.name = name
        self._generation: int | None = None
        self._shown_run = False

        def text(template: str) -> TextColumn:
            return TextColumn(template, markup=False, table_column=_cell())

        self._progress = Progress(
            text("{task.description}"),
            # The bar takes what the counters leave of the line.
            _RunBarColumn(bar_width=None, table_column=Column(ratio=1)),
            text("{task.fields[files_done]}/{task.fields[files_total]} files"),
            DownloadColumn(table_column=_cell()),
            TransferSpeedColumn(table_column=_cell()),
            _TimeColumn(table_column=_cell()),
            console=console or Console(stderr=True),
            refresh_per_second=_REFRESH_PER_S,
            expand=True,
            # stdout keeps the command's output; only stderr (the logs, an
            # error message) is printed above the bar.
            redirect_stdout=False,
            redirect_stderr=True,
        )
        # Total None until the first report: rich pulses the bar while the
        # run scans and resolves, or waits for the daemon.
        self._task = self._progress.add_task(
            name, total=None, files_done=0, files_total=0
        )

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Transient: the empty bar disappears when it stops instead of being
        # printed as its final state.
        self._progress.live.transient = not self._shown_run
        self._progress.stop()

    @contextmanager
    def without_thread(self) -> Iterator[None]:
        """Stop the bar's refresh thread meanwhile (erased, then drawn again):
        the one-shot run forks its scan workers only from a process with no
        other thread."""
        live = self._progress.live
        transient = live.transient
        live.transient = True
        # rich's stop() only signals its refresh thread; the fork must wait
        # until it has ended (a private attribute: without it the workers are
        # not forked and the scans run in this process, just slower).
        refresh: threading.Thread | None = getattr(live, "_refresh_thread", None)
        self._progress.stop()
        if refresh is not None:
            refresh.join(timeout=2.0)
        try:
            yield
        finally:
            live.transient = transient
            self._progress.start()

    def on_run(self, conduit: str, active: ActiveRun) -> None:
        """The one-shot service's `report_progress` (on the event loop: cheap)."""
        self.show(
            RunCounts(
                active.generation,
                active.files_done,
                active.files_total,
                active.bytes_done,
                active.bytes_total,
            )
        )

    def on_event(self, event: dict[str, object]) -> None:
        """The client's `on_event`: a daemon's progress line for this `sync`."""
        if event.get("event") == "progress":
            self.show(RunCounts.from_event(event))

    def show(self, counts: RunCounts) -> None:
        """Move the bar to `counts`; a later generation (the retry) starts afresh."""
        self._shown_run = True
        if counts.generation != self._generation:
            if self._generation is not None:
                # A fresh clock, no speed samples, not finished: rich keeps a
                # task finished once it reached its total.
                self._progress.reset(self._task)
            self._generation = counts.generation
            self._progress.update(self._task, description=self._describe())
        self._progress.update(
            self._task,
            total=counts.bytes_total,
            completed=counts.bytes_done,
            files_done=counts.files_done,
            files_total=counts.files_total,
        )

    def finish(self, document: Mapping[str, object]) -> None:
        """The run's generation document arrived: name it, end a bar that pulses."""
        self._shown_run = True
        generation = document.get("generation")
        if isinstance(generation, int):
            self._generation = generation
        task = self._progress.tasks[0]
        # A run with nothing to do reports no progress: show it as done.
        total = 0 if task.total is None else task.total
        self._progress.update(self._task, total=total, description=self._describe())
        # rich's rate needs samples over time, which a run of one batch never
        # gives: the final state shows the generation's average instead.
        task.finished_speed = _average_rate(document)

    def _describe(self) -> str:
        if self._generation is None:
            return self.name
        return f"{self.name} gen {self._generation}"


def _average_rate(document: Mapping[str, object]) -> float | None:
    """Bytes per second over a generation document's start and completion."""
    moved = document.get("bytes_transferred")
    started, completed = document.get("started_at"), document.get("completed_at")
    if not (
        isinstance(moved, int)
        and isinstance(started, str)
        and isinstance(completed, str)
    ):
        return None
    try:
        duration_s = (
            datetime.fromisoformat(completed) - datetime.fromisoformat(started)
        ).total_seconds()
    except ValueError:
        return None
    return moved / duration_s if moved and duration_s > 0 else None
