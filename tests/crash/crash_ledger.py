"""Counts of the crash suite, per hook (a crash label, `sigkill`, a check)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from crash_world import Violation


@dataclass
class HookTally:
    trials: int = 0
    crashed: int = 0
    not_hit: int = 0
    violations: int = 0
    restarts: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class CrashLedger:
    """Counts per hook; shared by the whole session."""

    hooks: dict[str, HookTally] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def record(
        self,
        hook: str,
        *,
        violations: list[Violation],
        crashed: bool = True,
        restarts: int | None = None,
        trial: str = "",
    ) -> None:
        tally = self.hooks.setdefault(hook, HookTally())
        tally.trials += 1
        tally.crashed += crashed
        tally.not_hit += not crashed
        tally.violations += len(violations)
        if restarts is not None:
            tally.restarts[restarts] += 1
        for violation in violations:
            tally.kinds[violation.kind] += 1
            self.details.append(f"{hook} {trial}: {violation}")
