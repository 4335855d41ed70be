from __future__ import annotations

import itertools

import pytest

from conduitd.errors import ConduitdError
from conduitd.sync.verification import (
    TRANSITIONS,
    InvalidStatus,
    InvalidTransition,
    Step,
    Verification,
    advance,
    failed,
    parse_status,
)

V = Verification
NON_TERMINAL = [s for s in Verification if not s.is_terminal]
TERMINAL = [s for s in Verification if s.is_terminal]


def test_a_clean_run_ends_verified() -> None:
    state = V.UNVERIFIED
    for step in (Step.RUN_FINISHED, Step.BARRIER_PASSED, Step.NOTHING_REMAINS):
        state = advance(state, step)
    assert state is V.VERIFIED


@pytest.mark.parametrize(
    ("state", "step", "expected"),
    [
        (V.UNVERIFIED, Step.RUN_FINISHED, V.WAITING_WATCHER),
        (V.WAITING_WATCHER, Step.BARRIER_PASSED, V.WAITING_LIBRARY_SYNC),
        (V.WAITING_WATCHER, Step.BARRIER_FAILED, V.FAILED_BARRIER),
        (V.WAITING_LIBRARY_SYNC, Step.NOTHING_REMAINS, V.VERIFIED),
        (V.WAITING_LIBRARY_SYNC, Step.WORK_REMAINS, V.FAILED_WORK_REMAINS),
        (V.WAITING_LIBRARY_SYNC, Step.LIBRARY_SYNC_FAILED, V.FAILED_LIBRARY_SYNC),
    ],
)
def test_forward_transitions(
    state: Verification, step: Step, expected: Verification
) -> None:
    assert advance(state, step) is expected


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_any_unfinished_state_can_be_interrupted(state: Verification) -> None:
    assert advance(state, Step.INTERRUPTED) is V.FAILED_INTERRUPTED


@pytest.mark.parametrize(
    ("state", "step"),
    [pair for pair in itertools.product(Verification, Step) if pair not in TRANSITIONS],
)
def test_every_other_step_is_an_invalid_transition(
    state: Verification, step: Step
) -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(state, step)
    assert (caught.value.state, caught.value.step) == (state, step)
    assert isinstance(caught.value, ConduitdError)
    assert state.value in str(caught.value)


@pytest.mark.parametrize("state", TERMINAL)
def test_terminal_states_have_no_way_out(state: Verification) -> None:
    assert not [step for (s, step) in TRANSITIONS if s is state]


def test_terminal_and_failed_states() -> None:
    assert {s.value for s in TERMINAL} == {
        "verified",
        "failed:interrupted",
        "failed:work_remains",
        "failed:barrier",
        "failed:library_sync",
    }
    assert V.FAILED_INTERRUPTED.failure_reason == "interrupted"
    assert V.VERIFIED.failure_reason is None
    assert not V.VERIFIED.is_failed


def test_transitions_are_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(V.VERIFIED, Step.RUN_FINISHED)] = V.UNVERIFIED  # type: ignore[index]


@pytest.mark.parametrize("state", list(Verification))
def test_stored_text_round_trips(state: Verification) -> None:
    assert parse_status(state.value) is state
    assert str(state) == state.value


def test_failed_builds_the_state_for_a_reason() -> None:
    assert failed("interrupted") is V.FAILED_INTERRUPTED
    assert failed("work_remains") is V.FAILED_WORK_REMAINS


@pytest.mark.parametrize(
    "text", ["", "failed", "failed:", "failed:disk_on_fire", "VERIFIED"]
)
def test_unknown_stored_text_is_an_invalid_status(text: str) -> None:
    with pytest.raises(InvalidStatus, match="allowed"):
        parse_status(text)


def test_failed_rejects_an_unknown_reason() -> None:
    with pytest.raises(InvalidStatus):
        failed("bogus")
