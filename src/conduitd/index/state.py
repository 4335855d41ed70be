"""The location state machine: transitions are data, `advance` is pure.

States (`LocationState`, persisted in `location.state`):
- `scanning`: a scan the index must wait for is running (first scan, after a
  watcher failure, after the root came back, one-shot `sync`).
- `ready`: the index is current (kept so by a watcher, or just scanned).
- `stale`: the watcher failed; a restart and rescan are pending.
- `unmounted`: the root is missing, its marker vanished, or (read-only roots
  and roots without a marker) its st_dev or inode changed. A scan of an
  unmounted root deletes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from conduitd.storage.locations import LocationState


class IndexStep(enum.StrEnum):
    SCAN_STARTED = "scan_started"
    SCAN_COMPLETED = "scan_completed"
    WATCH_FAILED = "watch_failed"
    ROOT_LOST = "root_lost"


class InvalidTransition(Exception):
    def __init__(self, state: LocationState, step: IndexStep) -> None:
        super().__init__(f"no transition from {state} on {step}")
        self.state = state
        self.step = step


_S = LocationState
_E = IndexStep

TRANSITIONS: Final[Mapping[tuple[LocationState, IndexStep], LocationState]] = {
    (_S.SCANNING, _E.SCAN_STARTED): _S.SCANNING,
    (_S.READY, _E.SCAN_STARTED): _S.SCANNING,
    (_S.STALE, _E.SCAN_STARTED): _S.SCANNING,
    (_S.UNMOUNTED, _E.SCAN_STARTED): _S.SCANNING,
    (_S.SCANNING, _E.SCAN_COMPLETED): _S.READY,
    # A periodic rescan under a healthy watcher keeps the location ready.
    (_S.READY, _E.SCAN_COMPLETED): _S.READY,
    # The watcher failed during the scan: its restart rescans; stay stale.
    (_S.STALE, _E.SCAN_COMPLETED): _S.STALE,
    (_S.SCANNING, _E.WATCH_FAILED): _S.STALE,
    (_S.READY, _E.WATCH_FAILED): _S.STALE,
    (_S.STALE, _E.WATCH_FAILED): _S.STALE,
    (_S.UNMOUNTED, _E.WATCH_FAILED): _S.UNMOUNTED,
    (_S.SCANNING, _E.ROOT_LOST): _S.UNMOUNTED,
    (_S.READY, _E.ROOT_LOST): _S.UNMOUNTED,
    (_S.STALE, _E.ROOT_LOST): _S.UNMOUNTED,
    (_S.UNMOUNTED, _E.ROOT_LOST): _S.UNMOUNTED,
}


def advance(state: LocationState, step: IndexStep) -> LocationState:
    """The state after `step`; raises InvalidTransition for an impossible pair."""
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise InvalidTransition(state, step) from None
