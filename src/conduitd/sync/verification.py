"""The verification state machine of a generation ("Trust Watcher").

`unverified` → `waiting_watcher` (barriers on both endpoints) →
`waiting_library_sync` (the run's outbox rows committed, and drained on the
leader) → the paths the run touched are resolved again → `verified` when nothing
remains, else `failed:work_remains`. A run cut short at any point before that
ends `failed:interrupted`. States are stored as text in
`sync_generation.verification_status`; the caller persists the new state, acts,
then logs `verification_advanced`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from conduitd.errors import ConduitdError

FAILED_PREFIX: Final = "failed:"


class Verification(enum.StrEnum):
    """Where a generation's verification stands (the stored text is the value)."""

    UNVERIFIED = "unverified"
    WAITING_WATCHER = "waiting_watcher"
    WAITING_LIBRARY_SYNC = "waiting_library_sync"
    VERIFIED = "verified"
    FAILED_INTERRUPTED = "failed:interrupted"
    FAILED_WORK_REMAINS = "failed:work_remains"
    FAILED_BARRIER = "failed:barrier"
    FAILED_LIBRARY_SYNC = "failed:library_sync"

    @property
    def is_terminal(self) -> bool:
        """True for `verified` and every failed state: no step leaves them."""
        return self is Verification.VERIFIED or self.is_failed

    @property
    def is_failed(self) -> bool:
        return self.value.startswith(FAILED_PREFIX)

    @property
    def failure_reason(self) -> str | None:
        """`interrupted` for `failed:interrupted`; None unless failed."""
        return self.value.removeprefix(FAILED_PREFIX) if self.is_failed else None


class Step(enum.StrEnum):
    """What happened to a generation since its last state."""

    RUN_FINISHED = "run_finished"  # copies, updates and deletes are done
    BARRIER_PASSED = "barrier_passed"  # both watchers caught up with the run
    BARRIER_FAILED = "barrier_failed"  # a barrier timed out or its root vanished
    LIBRARY_SYNC_FAILED = "library_sync_failed"  # the outbox could not be flushed
    NOTHING_REMAINS = "nothing_remains"  # flushed, and re-resolution found no work
    WORK_REMAINS = "work_remains"  # flushed, re-resolution found work: one retry
    INTERRUPTED = "interrupted"  # shutdown or cancellation cut the run short


class InvalidTransition(ConduitdError):
    """A step that the verification state machine does not allow."""

    kind = "invalid_transition"

    def __init__(self, state: Verification, step: Step) -> None:
        self.state = state
        self.step = step
        super().__init__(
            f"verification cannot take step {step.value!r} from {state.value!r}"
        )


class InvalidStatus(ConduitdError):
    """Stored verification text that names no known state."""

    kind = "invalid_status"


_V = Verification

# No persisted state sits between "library flushed" and the re-resolution's
# verdict (resolving is pure and quick), so the verdict is the step that leaves
# `waiting_library_sync`; a crash in between ends `failed:interrupted` anyway.
_FORWARD: Final[dict[tuple[Verification, Step], Verification]] = {
    (_V.UNVERIFIED, Step.RUN_FINISHED): _V.WAITING_WATCHER,
    (_V.WAITING_WATCHER, Step.BARRIER_PASSED): _V.WAITING_LIBRARY_SYNC,
    (_V.WAITING_WATCHER, Step.BARRIER_FAILED): _V.FAILED_BARRIER,
    (_V.WAITING_LIBRARY_SYNC, Step.LIBRARY_SYNC_FAILED): _V.FAILED_LIBRARY_SYNC,
    (_V.WAITING_LIBRARY_SYNC, Step.NOTHING_REMAINS): _V.VERIFIED,
    (_V.WAITING_LIBRARY_SYNC, Step.WORK_REMAINS): _V.FAILED_WORK_REMAINS,
}

TRANSITIONS: Final[Mapping[tuple[Verification, Step], Verification]] = MappingProxyType(
    _FORWARD
    | {
        (state, Step.INTERRUPTED): _V.FAILED_INTERRUPTED
        for state in Verification
        if not state.is_terminal
    }
)


def advance(state: Verification, step: Step) -> Verification:
    """The state after `step`.

    Raises:
        InvalidTransition: `step` is not allowed from `state` (terminal states
            allow none).
    """
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise InvalidTransition(state, step) from None


def failed(reason: str) -> Verification:
    """The failed state for `reason` (`failed("interrupted")`).

    Raises:
        InvalidStatus: no failed state has that reason.
    """
    return parse_status(FAILED_PREFIX + reason)


def parse_status(text: str) -> Verification:
    """The state stored as `text` in `sync_generation.verification_status`.

    Raises:
        InvalidStatus: `text` names no state.
    """
    try:
        return Verification(text)
    except ValueError:
        allowed = ", ".join(state.value for state in Verification)
        raise InvalidStatus(
            f"unknown verification status {text!r}; allowed: {allowed}"
        ) from None
