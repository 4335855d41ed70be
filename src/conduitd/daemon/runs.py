"""What a conduit run is: why it happens, what it is given, how it went.

Value types shared by the conduit task, the supervisor and the sync engine's
run function (the seam the lead wires: `RunFunction`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from conduitd.config.enums import ScheduleKind, SyncMode
from conduitd.daemon.dirty import DirtyPaths, Side
from conduitd.errors import ConduitdError

DEFAULT_BACKOFF_INITIAL_S: Final = 1.0
DEFAULT_BACKOFF_MAX_S: Final = 300.0

if TYPE_CHECKING:
    from conduitd.config import ConduitConfig


class RunReason(enum.StrEnum):
    """Why a run happens, most explicit first (the order picks `reason`)."""

    MANUAL = "manual"  # `conduitd sync NAME`
    SIGNAL = "signal"  # SIGUSR1
    STARTUP = "startup"  # daemon start or added by reload: catch up
    RESUME = "resume"  # `conduitd resume`: one catch-up run (issue 9)
    RETRY = "retry"  # after a failed run, with backoff
    SCHEDULE = "schedule"  # interval: or cron:
    CHANGES = "changes"  # instant: index change notifications, debounced

    @property
    def explicit(self) -> bool:
        """Explicit runs always record a generation (DESIGN.md Flow 6)."""
        return self in (RunReason.MANUAL, RunReason.SIGNAL)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What one run is asked to do.

    `reason` is the most explicit of `reasons` (every trigger coalesced into
    this run); `dirty` the paths changed since the last run; `force` is
    `sync --force` (overrides the max-delete brake only).
    """

    reason: RunReason
    reasons: frozenset[RunReason]
    dirty: DirtyPaths
    force: bool = False

    @property
    def explicit(self) -> bool:
        return any(reason.explicit for reason in self.reasons)


class RunFunction(Protocol):
    """The injected run: the sync engine for one conduit.

    Whatever it returns is handed to the callers waiting in `sync_now` (the
    engine returns the generation document). Raising marks the run failed:
    logged, shown as `last_error`, retried with backoff.
    """

    async def __call__(self, request: RunRequest, /) -> object: ...


@dataclass(frozen=True, slots=True)
class RunProgress:
    """The `active` object of `status`."""

    generation: int | None = None
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0

    def document(self) -> dict[str, int | None]:
        return {
            "generation": self.generation,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
        }


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """The parts of a conduit's config that decide when it runs."""

    name: str
    schedule: ScheduleKind
    enabled: bool = True
    mode: SyncMode = SyncMode.MIRROR
    debounce_s: float = 0.05
    max_delay_s: float = 10.0

    @classmethod
    def from_config(cls, conduit: ConduitConfig) -> TaskSettings:
        return cls(
            name=conduit.name,
            schedule=conduit.schedule.kind,
            enabled=conduit.enabled,
            mode=conduit.mode,
            debounce_s=conduit.debounce_s,
            max_delay_s=conduit.max_delay_s,
        )

    @property
    def trigger_sides(self) -> frozenset[Side]:
        """Sides whose changes start an instant run (either, bidirectionally)."""
        if self.mode is SyncMode.BIDIRECTIONAL:
            return frozenset(Side)
        return frozenset({Side.SOURCE})

    @property
    def catches_up_at_start(self) -> bool:
        """Instant and interval conduits first sync what changed unwatched."""
        return self.schedule in (ScheduleKind.INSTANT, ScheduleKind.INTERVAL)


@dataclass(frozen=True, slots=True)
class ConduitRuntime:
    """What the task knows for `status` (the library knows the rest)."""

    running: bool
    pending: bool
    paused: bool
    active: RunProgress | None
    last_error: str | None
    consecutive_failures: int
    retry_in_s: float | None


class RunFailed(ConduitdError):
    """A run failed with an error conduitd did not raise on purpose."""

    kind = "run_failed"
    exit_code = 1


class RunInterrupted(ConduitdError):
    """The conduit task stopped (daemon stopping, conduit removed) mid-wait."""

    kind = "interrupted"
    exit_code = 1


REASON_PRIORITY: Final = tuple(RunReason)


def backoff_delay_s(failures: int, initial_s: float, max_s: float) -> float:
    """initial_s, 2x, 4x, ... per consecutive failure, at most max_s."""
    return float(min(max_s, initial_s * 2 ** min(failures - 1, 62)))
